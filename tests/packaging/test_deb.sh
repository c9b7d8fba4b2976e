#!/usr/bin/env bash
# The Debian package: cpack builds it from this build tree into a temporary
# directory; then its control fields, its files, the binary it ships, the
# systemd unit and the example settings file are checked, and apt is asked
# (simulation only) whether it would install.
#
#   test_deb.sh SOURCE_DIR BUILD_DIR VERSION
set -euo pipefail

src=${1:?usage: test_deb.sh SOURCE_DIR BUILD_DIR VERSION}
build=${2:?usage: test_deb.sh SOURCE_DIR BUILD_DIR VERSION}
version=${3:?usage: test_deb.sh SOURCE_DIR BUILD_DIR VERSION}

test_name=deb
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

# --- build it ------------------------------------------------------------------
(cd "$tmp" && cpack -G DEB -B "$tmp/out" --config "$build/CPackConfig.cmake") >"$tmp/cpack.out" 2>&1 ||
  { show "$tmp/cpack.out"; die "cpack -G DEB failed"; }
arch=$(dpkg --print-architecture)
deb=$tmp/out/scalekiq_${version}_${arch}.deb
[ -f "$deb" ] || { ls -l "$tmp/out"; die "cpack made no $(basename "$deb")"; }
ok "cpack made $(basename "$deb")"

# --- control fields ------------------------------------------------------------
field() { dpkg-deb -f "$deb" "$1"; }
depends=$(field Depends)
begin
for dep in libuv1 'libhiredis[0-9.]*' libcjson1 libcurl4 libssl3 libc6; do
  grep -Eq "(^|, )$dep( |,|$)" <<<"$depends" || bad "Depends lacks $dep: '$depends'"
done
ok_if_clean "Depends: $depends"
begin
[ "$(field Package)" = scalekiq ] || bad "Package is '$(field Package)'"
[ "$(field Version)" = "$version" ] || bad "Version is '$(field Version)', want $version"
[ "$(field Section)" = admin ] || bad "Section is '$(field Section)', want admin"
[ "$(field Architecture)" = "$arch" ] || bad "Architecture is '$(field Architecture)'"
for f in Maintainer Homepage Description; do
  [ -n "$(field "$f")" ] || bad "no $f field"
done
ok_if_clean "Package, Version, Section, Maintainer, Homepage and Description are set"

mkdir "$tmp/control"
dpkg-deb -e "$deb" "$tmp/control"
grep -qx /etc/scalekiq/scalekiq.env "$tmp/control/conffiles" 2>/dev/null &&
  ok "/etc/scalekiq/scalekiq.env is a conffile" || bad "/etc/scalekiq/scalekiq.env is not in conffiles"
begin
for s in postinst prerm postrm; do
  [ -x "$tmp/control/$s" ] || bad "maintainer script $s is missing or not executable"
  sh -n "$tmp/control/$s" || bad "maintainer script $s does not parse"
done
ok_if_clean "the maintainer scripts are executable and parse"

# --- files ---------------------------------------------------------------------
dpkg-deb -c "$deb" | awk '{print $1, $2, $6}' >"$tmp/list"
want() { # MODE PATH
  grep -qxF -- "$1 root/root ./$2" "$tmp/list" || { show "$tmp/list"; bad "no $1 root/root entry for /$2"; }
}
begin
want -rwxr-xr-x usr/bin/scalekiq
want -rw-r--r-- lib/systemd/system/scalekiq.service
want -rw-r--r-- usr/share/doc/scalekiq/README.md
want -rw-r----- etc/scalekiq/scalekiq.env
ok_if_clean "the package lists the binary, the unit, the README and the 0640 settings file"

root=$tmp/root
dpkg -x "$deb" "$root"
cmp -s "$root/lib/systemd/system/scalekiq.service" "$src/packaging/systemd/scalekiq.service" ||
  bad "the packaged unit differs from packaging/systemd/scalekiq.service"
cmp -s "$root/etc/scalekiq/scalekiq.env" "$src/packaging/systemd/scalekiq.env" ||
  bad "the packaged settings file differs from packaging/systemd/scalekiq.env"
got=$("$root/usr/bin/scalekiq" --version 2>&1) || true
[ "$got" = "scalekiq $version" ] && ok "the packaged scalekiq --version prints $version" ||
  bad "the packaged scalekiq --version printed '$got', want 'scalekiq $version'"
# Installed in /usr/bin, it must use the system's libraries, not a bundle.
if readelf -d "$root/usr/bin/scalekiq" | grep -Eq '\((RUNPATH|RPATH)\)'; then
  bad "the packaged binary carries an RPATH: $(readelf -d "$root/usr/bin/scalekiq" | grep -E 'RUNPATH|RPATH')"
fi

# --- the settings file names real settings, and all of them ---------------------
env_file=$src/packaging/systemd/scalekiq.env
begin
names=$(sed -n 's/^#\{0,1\}\([A-Z][A-Z0-9_]*\)=.*/\1/p' "$env_file" | sort -u)
for n in $names; do
  grep -rqF "\"$n\"" "$src/lib" || bad "scalekiq.env names $n, which lib/ never reads"
done
for n in $(grep -o '{"SCALEKIQ_[A-Z_]*"' "$src/lib/config.c" | tr -d '{"' | sort -u) HEROKU_API_KEY HEROKU_APP_NAME; do
  grep -qx "$n" <<<"$names" || bad "scalekiq.env does not mention $n"
done
ok_if_clean "scalekiq.env lists the settings lib/config.c reads ($(wc -w <<<"$names") names)"

# --- the unit --------------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
  # verify wants ExecStart's binary to exist: point it at the extracted one.
  mkdir "$tmp/unit"
  sed "s|/usr/bin/scalekiq|$root/usr/bin/scalekiq|g" "$root/lib/systemd/system/scalekiq.service" \
    >"$tmp/unit/scalekiq.service"
  if systemd-analyze verify "$tmp/unit/scalekiq.service" >"$tmp/verify.out" 2>&1 &&
     ! grep -q 'scalekiq' "$tmp/verify.out"; then
    ok "systemd-analyze verify accepts the unit"
  else
    show "$tmp/verify.out"
    bad "systemd-analyze verify reports problems in the unit"
  fi
else
  echo "note: no systemd-analyze here, the unit was not verified"
fi
unit=$src/packaging/systemd/scalekiq.service
begin
for line in 'ExecStart=/usr/bin/scalekiq run' 'EnvironmentFile=/etc/scalekiq/scalekiq.env' \
            'Restart=on-failure' 'RuntimeDirectory=scalekiq' \
            'Environment=SCALEKIQ_SOCKET=/run/scalekiq/scalekiq.sock' 'KillSignal=SIGTERM' \
            'TimeoutStopSec=30' 'NoNewPrivileges=yes' 'ProtectSystem=strict' 'DynamicUser=yes'; do
  grep -qxF "$line" "$unit" || bad "the unit lacks '$line'"
done
ok_if_clean "the unit runs the agent with the env file, a runtime directory and hardening"

# --- apt -------------------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root, apt-get install --simulate skipped"
elif ! command -v apt-get >/dev/null 2>&1; then
  echo "note: no apt-get here, install simulation skipped"
elif (cd "$tmp/out" && apt-get install --simulate "./$(basename "$deb")") >"$tmp/apt.out" 2>&1 &&
     grep -Eq '^Inst scalekiq |^scalekiq is already the newest' "$tmp/apt.out"; then
  ok "apt-get install --simulate would install it"
else
  show "$tmp/apt.out"
  bad "apt-get install --simulate refuses the package"
fi

if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all package checks passed"
