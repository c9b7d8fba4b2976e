# Shared by the packaging tests: a temporary folder removed on exit, and
# checks that report each failure and count them.
tmp=$(mktemp -d "/tmp/scalekiq-${test_name:?}-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

failures=0
ok() { echo "ok: $*"; }
bad() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
# For a failed step that later checks depend on.
die() {
  echo "FAIL: $*"
  exit 1
}
show() { sed 's/^/    | /' "$1"; }
# ok for a group of checks only when none of them failed since mark.
mark=0
begin() { mark=$failures; }
ok_if_clean() { [ "$failures" -eq "$mark" ] && ok "$@" || true; }
