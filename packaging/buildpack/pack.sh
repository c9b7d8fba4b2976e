#!/usr/bin/env bash
# Makes the buildpack tarball Heroku fetches: bin/{detect,compile,release}
# at its root, beside the source tree compile builds (the parts listed in
# bin/compile's SOURCE_PARTS).
#
#   packaging/buildpack/pack.sh [OUT.tgz]   default: ./scalekiq-buildpack-VERSION.tgz
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd -P)
root=$(cd "$here/../.." && pwd -P)
version=$(sed -n 's/^project(scalekiq VERSION \([0-9][0-9.]*\).*/\1/p' "$root/CMakeLists.txt")
[ -n "$version" ] || { echo "pack.sh: no project(scalekiq VERSION ...) in $root/CMakeLists.txt" >&2; exit 1; }
out=${1:-$PWD/scalekiq-buildpack-$version.tgz}
case $out in /*) ;; *) out=$PWD/$out ;; esac

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 755 "$stage"
mkdir "$stage/bin"
cp "$here"/bin/detect "$here"/bin/compile "$here"/bin/release "$stage/bin/"
# Heroku runs them directly, whatever mode a checkout gave them.
chmod 755 "$stage"/bin/*
# Only what the build uses: no build directories, no bench output.
(cd "$root" && tar -cf - CMakeLists.txt README.md lib agent packaging) | (cd "$stage" && tar -xf -)
tar -czf "$out" -C "$stage" --owner=0 --group=0 .
echo "$out"
