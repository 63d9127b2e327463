#!/usr/bin/env bash
# Smoke test of the static (musl) build that deploy/Dockerfile ships, without
# Docker: build lookout for x86_64-unknown-linux-musl (dev profile, for
# speed; the image uses --release), check that the binary is statically
# linked, then run it the way the image does (deploy/lookout.container.yaml,
# with the database and listen address moved to a temporary directory and a
# free loopback port) and check /healthz, /readyz, `lookout healthcheck` and
# a clean exit on SIGTERM.
#
# Installs Debian's musl-tools (musl-gcc, for the C in ring, SQLite and
# mimalloc) when missing, as root or through sudo, and adds the rustup
# target when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
say() { echo "static-smoke: $*" >&2; }
fail() {
  say "FAILED: $*"
  exit 1
}

if ! command -v musl-gcc >/dev/null 2>&1; then
  say "installing musl-tools"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
fi
if ! rustup target list --installed | grep -qx "$TARGET"; then
  say "adding the rustup target $TARGET"
  rustup target add "$TARGET"
fi

say "building for $TARGET (dev profile)"
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --locked --target "$TARGET" --bin lookout
BIN="$PWD/target/$TARGET/debug/lookout"
[ -x "$BIN" ] || fail "no binary at $BIN"

# Statically linked: no program interpreter, no shared libraries.
file_out=$(file -b "$BIN")
ldd_out=$(ldd "$BIN" 2>&1 || true)
say "file: $file_out"
say "ldd: $ldd_out"
case "$file_out" in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) fail "file does not call $BIN statically linked" ;;
esac
case "$ldd_out" in
  *"not a dynamic executable"* | *"statically linked"*) ;;
  *) fail "ldd lists shared libraries for $BIN" ;;
esac
size=$(stat -c %s "$BIN")
say "binary size: $size bytes ($((size / 1024 / 1024)) MiB, dev profile with debug info)"

version=$("$BIN" --version) || fail "lookout --version"
say "version: $version"
"$BIN" check -c probes/lookout.yaml >/dev/null || fail "lookout check -c probes/lookout.yaml"

TMP=$(mktemp -d)
PID=""
cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -KILL "$PID" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# A loopback port nothing answers on (free when checked).
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=""
for _ in $(seq 1 50); do
  p=$((20000 + RANDOM % 40000))
  if ! port_in_use "$p"; then
    PORT=$p
    break
  fi
done
[ -n "$PORT" ] || fail "no free loopback port found"

# The container configuration, moved to the temporary directory and the
# free port (its own probes target the daemon's port too).
sed -e "s#0\.0\.0\.0:9464#127.0.0.1:$PORT#" \
  -e "s#9464#$PORT#g" \
  -e "s#/var/lib/lookout/lookout.db#$TMP/lookout.db#" \
  deploy/lookout.container.yaml >"$TMP/lookout.yaml"
grep -q "listen: 127.0.0.1:$PORT" "$TMP/lookout.yaml" || fail "listen address not rewritten"
grep -q "sqlite: $TMP/lookout.db" "$TMP/lookout.yaml" || fail "database path not rewritten"
"$BIN" check -c "$TMP/lookout.yaml" >/dev/null || fail "lookout check on the container configuration"

# The status of GET http://127.0.0.1:PORT/PATH, or nothing when there is no
# answer (plain bash: the check does not lean on the binary under test).
http_status() {
  local line=""
  { exec 3<>"/dev/tcp/127.0.0.1/$PORT"; } 2>/dev/null || return 0
  printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$1" "$PORT" >&3
  IFS= read -r -t 2 line <&3 || true
  exec 3<&- 3>&-
  line=${line%$'\r'}
  echo "${line#* }" | cut -d' ' -f1
}

# Waits until PATH answers 200, with a deadline.
wait_for_200() {
  local deadline=$((SECONDS + 30)) status=""
  while [ "$SECONDS" -lt "$deadline" ]; do
    status=$(http_status "$1")
    [ "$status" = "200" ] && return 0
    kill -0 "$PID" 2>/dev/null || fail "lookout run exited early; log:$(printf '\n'; cat "$TMP/run.log")"
    sleep 0.1
  done
  fail "$1 did not answer 200 within 30 s (last: ${status:-no answer}); log:$(printf '\n'; cat "$TMP/run.log")"
}

say "lookout run on 127.0.0.1:$PORT"
NO_COLOR=1 "$BIN" run -c "$TMP/lookout.yaml" >"$TMP/run.log" 2>&1 &
PID=$!
started=$SECONDS
wait_for_200 /healthz
wait_for_200 /readyz
say "/healthz and /readyz answered 200 (within $((SECONDS - started)) s)"

hc=$("$BIN" healthcheck --url "http://127.0.0.1:$PORT/healthz" 2>&1) || fail "lookout healthcheck: $hc"
say "healthcheck: $hc"
if out=$("$BIN" healthcheck --url "http://127.0.0.1:$PORT/no-such-page" 2>&1); then
  fail "lookout healthcheck passed on a 404: $out"
fi
say "healthcheck on a 404 failed as it should: $out"

kill -TERM "$PID"
deadline=$((SECONDS + 15))
while kill -0 "$PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
  sleep 0.1
done
kill -0 "$PID" 2>/dev/null && fail "lookout run still running 15 s after SIGTERM"
rc=0
wait "$PID" || rc=$?
PID=""
[ "$rc" -eq 0 ] || fail "lookout run exited $rc after SIGTERM; log:$(printf '\n'; cat "$TMP/run.log")"
[ -s "$TMP/lookout.db" ] || fail "no database at $TMP/lookout.db"
say "SIGTERM: exited 0; database $(stat -c %s "$TMP/lookout.db") bytes"
say "ok: static $TARGET binary, $size bytes"
