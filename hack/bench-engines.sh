#!/usr/bin/env bash
# Engine benchmark (not a test): one command, one run, one Redis.
#
#   bash hack/bench-engines.sh [ORDERS]      # default 1,000,000 orders per engine case
#
# Runs tests/bench_engines.rs (an ignored test, release build) against one redis-stack-server
# without persistence: the pipelined XADD ceiling; triggers, native batch 3, native batch 50 and
# native batch 3 with two workers, each deciding ORDERS pre-queued orders (half sell out), timed
# until every order is completed or rejected, with the memory Redis keeps beyond the contract's
# streams; then `popup-operator simulate --json` at full speed and at a set rate. Prints a table of
# orders/s with ratios to triggers and to the ceiling; docs/benchmarks.md records a run. More
# settings: POPUP_BENCH_SIM_CUSTOMERS, POPUP_BENCH_RATE, POPUP_BENCH_RATE_SECONDS (see the test).
# Numbers on a busy machine mean little: check the load average it prints first.
set -euo pipefail
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"
if [ -n "${1:-}" ]; then
  export POPUP_BENCH_ORDERS="$1"
fi
export REDIS_STACK_SERVER="${REDIS_STACK_SERVER:-$(bash hack/install-redis-stack.sh | tail -n 1)}"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
exec cargo test --release --locked --test bench_engines -- --ignored --nocapture
