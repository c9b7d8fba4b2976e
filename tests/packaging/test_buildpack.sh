#!/usr/bin/env bash
# The Heroku buildpack, run the way the platform runs it: pack.sh makes the
# tarball, and its bin/detect, bin/compile and bin/release run against
# temporary BUILD_DIR, CACHE_DIR and ENV_DIR. Also the examples (Procfile,
# app.json) that the buildpack's README points to.
#
#   test_buildpack.sh SOURCE_DIR VERSION
set -euo pipefail

src=${1:?usage: test_buildpack.sh SOURCE_DIR VERSION}
version=${2:?usage: test_buildpack.sh SOURCE_DIR VERSION}
src=$(cd "$src" && pwd -P)

test_name=buildpack
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

# --- the tarball -------------------------------------------------------------
bash "$src/packaging/buildpack/pack.sh" "$tmp/buildpack.tgz" >"$tmp/pack.out" 2>&1 ||
  { show "$tmp/pack.out"; die "pack.sh failed"; }
mkdir "$tmp/bp"
begin
tar -xzf "$tmp/buildpack.tgz" -C "$tmp/bp"
for f in bin/detect bin/compile bin/release; do
  [ -x "$tmp/bp/$f" ] || bad "the tarball has no executable $f at its root"
done
[ -f "$tmp/bp/CMakeLists.txt" ] || bad "the tarball has no CMakeLists.txt at its root"
ok_if_clean "pack.sh wrote a tarball with bin/ and the source tree at its root"

# --- bin/detect --------------------------------------------------------------
app=$tmp/app
mkdir "$app"
cp "$src/packaging/examples/Procfile" "$app/Procfile"
echo "source 'https://rubygems.org'" >"$app/Gemfile"
if out=$("$tmp/bp/bin/detect" "$app" 2>/dev/null) && [ "$out" = scalekiq ]; then
  ok "detect accepts the example Procfile"
else
  bad "detect on an app whose Procfile runs scalekiq: exit non-zero or output '$out' (want 'scalekiq')"
fi
mkdir "$tmp/marker-app"
touch "$tmp/marker-app/.scalekiq-buildpack"
"$tmp/bp/bin/detect" "$tmp/marker-app" >/dev/null 2>&1 &&
  ok "detect accepts a .scalekiq-buildpack file" ||
  bad "detect refused an app with a .scalekiq-buildpack file"
mkdir "$tmp/other-app"
echo "web: bundle exec puma" >"$tmp/other-app/Procfile"
if "$tmp/bp/bin/detect" "$tmp/other-app" >/dev/null 2>&1; then
  bad "detect accepted an app whose Procfile never mentions scalekiq"
else
  ok "detect refuses an app without the marker"
fi
mkdir "$tmp/empty-app"
"$tmp/bp/bin/detect" "$tmp/empty-app" >/dev/null 2>&1 &&
  bad "detect accepted an empty app" || ok "detect refuses an empty app"

# --- missing build dependencies (repository layout) ----------------------------
# pkg-config searching an empty directory stands for an image without the
# -dev packages. This also runs compile from packaging/buildpack/bin, so it
# must find the repository root by walking up.
mkdir "$tmp/no-pc" "$tmp/nodeps-app" "$tmp/nodeps-cache"
if PKG_CONFIG_LIBDIR=$tmp/no-pc PKG_CONFIG_PATH='' \
   bash "$src/packaging/buildpack/bin/compile" "$tmp/nodeps-app" "$tmp/nodeps-cache" "$tmp/no-pc" \
   >"$tmp/nodeps.out" 2>&1; then
  show "$tmp/nodeps.out"
  bad "compile succeeded although pkg-config finds no library"
else
  begin
  grep -qxF "       source: $src" "$tmp/nodeps.out" ||
    { show "$tmp/nodeps.out"; bad "compile from packaging/buildpack/bin did not find the source root $src"; }
  for pkg in libuv1-dev libhiredis-dev libcjson-dev libcurl4-openssl-dev libssl-dev; do
    n=$(grep -c "^ !     missing library: .*(Debian/Ubuntu package $pkg)" "$tmp/nodeps.out" || true)
    [ "$n" = 1 ] || { show "$tmp/nodeps.out"; bad "compile named $pkg on $n lines, not exactly one"; }
  done
  grep -q "Aptfile listing: .*libuv1-dev" "$tmp/nodeps.out" ||
    { show "$tmp/nodeps.out"; bad "compile did not say how to get the missing packages"; }
  [ ! -e "$tmp/nodeps-app/.scalekiq" ] || bad "a failed compile left .scalekiq in BUILD_DIR"
  ok_if_clean "compile fails on missing libraries with one line per package"
fi

# --- bin/compile, first build --------------------------------------------------
# Config vars as the platform passes them: one file per variable.
envd=$tmp/env
mkdir "$envd"
token=tok-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
printf '%s' "$token" >"$envd/HEROKU_API_KEY"
printf 'redis://:pw@127.0.0.1:6379/0' >"$envd/REDIS_URL"
printf 'RelWithDebInfo' >"$envd/SCALEKIQ_BUILD_TYPE"
cache=$tmp/cache
mkdir "$cache"
begin
"$tmp/bp/bin/compile" "$app" "$cache" "$envd" >"$tmp/compile1.out" 2>&1 ||
  { show "$tmp/compile1.out"; die "the first compile failed"; }
grep -q '^-----> Preparing a fresh build in the cache' "$tmp/compile1.out" ||
  { show "$tmp/compile1.out"; bad "the first compile did not start a fresh build"; }
grep -q -- "$token" "$tmp/compile1.out" && bad "compile printed HEROKU_API_KEY from ENV_DIR"
grep -qx 'CMAKE_BUILD_TYPE:STRING=RelWithDebInfo' "$cache/scalekiq/build/CMakeCache.txt" ||
  bad "SCALEKIQ_BUILD_TYPE from ENV_DIR did not reach cmake"
ok_if_clean "first compile built and installed scalekiq"

# --- what the slug holds -------------------------------------------------------
bin=$app/.scalekiq/bin/scalekiq
[ -x "$bin" ] || die "no executable $bin"
# A dyno's shell: nothing but HOME=/app (here the build dir), then .profile.d.
found=$(env -i HOME="$app" /bin/bash -c '. "$HOME/.profile.d/scalekiq.sh" && command -v scalekiq') || true
[ "$found" = "$bin" ] && ok ".profile.d/scalekiq.sh puts .scalekiq/bin on PATH" ||
  bad "in a clean shell after .profile.d/scalekiq.sh, scalekiq is '$found', not $bin"
got=$(env -i HOME="$app" /bin/bash -c '. "$HOME/.profile.d/scalekiq.sh" && scalekiq --version' 2>&1) || true
[ "$got" = "scalekiq $version" ] && ok "scalekiq --version prints $version from a clean shell" ||
  bad "scalekiq --version in a clean shell printed '$got', want 'scalekiq $version'"

runpath=$(readelf -d "$bin" | sed -n 's/.*(\(RUNPATH\|RPATH\)).*\[\(.*\)\]/\2/p')
[ "$runpath" = '$ORIGIN/../lib' ] && ok "the binary's RUNPATH is \$ORIGIN/../lib" ||
  bad "the binary's RUNPATH/RPATH is '$runpath', want '\$ORIGIN/../lib'"
ldd_out=$(env -i "$(command -v ldd)" "$bin" 2>&1) || true
if grep -q 'not found' <<<"$ldd_out"; then
  bad "unresolved libraries: $(grep 'not found' <<<"$ldd_out" | tr '\n' ' ')"
fi
for lib in libuv libhiredis libcjson; do
  line=$(grep "^[[:space:]]*${lib}[.]so" <<<"$ldd_out" || true)
  case $line in
    *"=> $app/.scalekiq/bin/../lib/$lib"*) ok "$lib resolves from .scalekiq/lib" ;;
    *) bad "$lib does not resolve from .scalekiq/lib: '${line:-absent from ldd}'" ;;
  esac
done

# --- bin/compile again: the cache ---------------------------------------------
# Heroku gives each build a fresh BUILD_DIR and the same CACHE_DIR.
app2=$tmp/app2
mkdir "$app2"
cp "$app/Procfile" "$app/Gemfile" "$app2/"
"$tmp/bp/bin/compile" "$app2" "$cache" "$envd" >"$tmp/compile2.out" 2>&1 ||
  { show "$tmp/compile2.out"; die "the second compile failed"; }
if grep -q '^-----> Using the build cache (0 source files changed' "$tmp/compile2.out" &&
   ! grep -q 'Building C object' "$tmp/compile2.out"; then
  ok "the second compile reuses the cache and compiles nothing"
else
  show "$tmp/compile2.out"
  bad "the second compile did not reuse the cache, or compiled again"
fi
got=$("$app2/.scalekiq/bin/scalekiq" --version 2>&1) || true
[ "$got" = "scalekiq $version" ] || bad "after the cached compile, --version printed '$got'"

# A new buildpack release that changes one file rebuilds that file only.
echo "/* a change */" >>"$tmp/bp/agent/main.c"
app3=$tmp/app3
mkdir "$app3"
cp "$app/Procfile" "$app3/"
"$tmp/bp/bin/compile" "$app3" "$cache" "$envd" >"$tmp/compile3.out" 2>&1 ||
  { show "$tmp/compile3.out"; die "the compile after a source change failed"; }
built=$(grep 'Building C object' "$tmp/compile3.out" || true)
if grep -q '^-----> Using the build cache (1 source files changed' "$tmp/compile3.out" &&
   [ "$(grep -c . <<<"$built")" = 1 ] && grep -q 'agent/main.c' <<<"$built"; then
  ok "a changed source file is the only one rebuilt"
else
  show "$tmp/compile3.out"
  bad "after changing agent/main.c, compile did not rebuild exactly that file"
fi

# --- bin/release ---------------------------------------------------------------
if "$tmp/bp/bin/release" "$app" >"$tmp/release.out" 2>&1; then
  if command -v ruby >/dev/null 2>&1; then
    ruby -ryaml -e 'YAML.safe_load(STDIN.read).is_a?(Hash) or exit 1' <"$tmp/release.out" &&
      ok "release prints a YAML mapping" ||
      { show "$tmp/release.out"; bad "release output is not a YAML mapping"; }
  elif python3 -c 'import yaml' 2>/dev/null; then
    python3 -c 'import sys, yaml; sys.exit(not isinstance(yaml.safe_load(sys.stdin), dict))' \
      <"$tmp/release.out" && ok "release prints a YAML mapping" ||
      { show "$tmp/release.out"; bad "release output is not a YAML mapping"; }
  else
    echo "note: neither ruby nor python3-yaml here, release output not parsed"
  fi
else
  show "$tmp/release.out"
  bad "release exited non-zero"
fi

# --- the examples --------------------------------------------------------------
appjson=$src/packaging/examples/app.json
if python3 -m json.tool "$appjson" >/dev/null 2>"$tmp/json.err"; then
  python3 - "$appjson" <<'PY' && ok "examples/app.json parses and declares what the buildpack needs" || bad "examples/app.json lacks a required part (above)"
import json, sys
app = json.load(open(sys.argv[1]))
problems = []
if not any(b.get("url") == "heroku/ruby" for b in app.get("buildpacks", [])):
    problems.append("no heroku/ruby buildpack")
if len(app.get("buildpacks", [])) < 2:
    problems.append("no scalekiq buildpack beside heroku/ruby")
if app.get("env", {}).get("HEROKU_API_KEY", {}).get("required") is not True:
    problems.append("HEROKU_API_KEY is not required")
if app.get("formation", {}).get("worker", {}).get("quantity") != 1:
    problems.append("formation worker quantity is not 1")
if not any(a.get("plan", "").startswith("heroku-redis") for a in app.get("addons", [])):
    problems.append("no Heroku Key-Value Store (heroku-redis) add-on")
for p in problems:
    print("  app.json: " + p)
sys.exit(1 if problems else 0)
PY
else
  show "$tmp/json.err"
  bad "examples/app.json is not valid JSON"
fi
grep -qx 'worker: scalekiq run -- bundle exec sidekiq -C config/sidekiq.yml' \
  "$src/packaging/examples/Procfile" && ok "examples/Procfile runs Sidekiq under scalekiq" ||
  bad "examples/Procfile has no 'worker: scalekiq run -- bundle exec sidekiq ...' line"

if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all buildpack checks passed"
