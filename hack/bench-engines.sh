#!/usr/bin/env bash
# Engine throughput benchmark (not a test): how fast each engine decides a queue of orders.
#
#   bash hack/bench-engines.sh [ORDERS]      # default 20000 orders for 10000 units (half sell out)
#
# For each case: a fresh redis-stack-server on a free loopback port, the simulator pre-fills
# queue:customers and queue:orders with no engine running, then the engine starts and the clock runs
# until queue:orders is empty. Prints one line per case; docs/benchmarks.md records the results.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
orders="${1:-20000}"
stock=$((orders / 2))

server="${REDIS_STACK_SERVER:-$(bash hack/install-redis-stack.sh | tail -n 1)}"
bin_dir="$(dirname "$server")"
lib_dir="$(dirname "$bin_dir")/lib"
cargo build --release --locked --quiet
op="${CARGO_TARGET_DIR:-$root/target}/release/popup-operator"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start_redis() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$bin_dir/redis-server" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    --loadmodule "$lib_dir/redistimeseries.so" \
    --loadmodule "$lib_dir/redisgears.so" v8-plugin-path "$lib_dir/libredisgears_v8_plugin.so" \
    >"$work/redis-$port.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do "$bin_dir/redis-cli" -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
  url="redis://127.0.0.1:$port"
}

prefill() {
  "$op" simulate --redis "$url" --reset --stock "$stock" --customers "$orders" --rate 1000000 \
    --max-order-delay-millis 0 >/dev/null 2>&1
}

now() { python3 -c 'import time; print(time.time())'; }

wait_drained() {
  while true; do
    left=$("$bin_dir/redis-cli" -p "$port" xlen queue:orders)
    [ "$left" = "0" ] && break
    sleep 0.02
  done
}

report() {
  local name=$1 start=$2 end=$3
  python3 - "$name" "$start" "$end" "$orders" <<'PY'
import sys
name, start, end, orders = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
secs = end - start
print(f"{name:<22} {orders} orders in {secs:6.2f} s = {orders / secs:8.0f} orders/s")
PY
}

for batch in 3 50; do
  start_redis; prefill
  t0=$(now)
  "$op" process --redis "$url" --batch-size "$batch" --metrics-interval-seconds 5 --consumer bench \
    >"$work/process.log" 2>&1 &
  pids+=($!)
  wait_drained; t1=$(now)
  report "native batch $batch" "$t0" "$t1"
done

start_redis; prefill
t0=$(now)
"$op" load --engine triggers --redis "$url" --batch-size 3 >/dev/null
wait_drained; t1=$(now)
report "triggers" "$t0" "$t1"

start_redis
t0=$(now); prefill; t1=$(now)
report "simulator (customers)" "$t0" "$t1"
