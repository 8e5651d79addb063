#!/usr/bin/env bash
# The project's test command (the README's, and what CI runs): installs the real components the tests
# use when they are missing (cached under ${POPUP_CACHE:-~/.cache/popup-operator}), then runs every test.
#
#   bash hack/test.sh              # everything
#   bash hack/test.sh --test helm  # extra arguments go to `cargo test`
set -euo pipefail
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO"

HELM="${HELM:-$(bash hack/install-helm.sh | tail -n 1)}"
REDIS_STACK_SERVER="${REDIS_STACK_SERVER:-$(bash hack/install-redis-stack.sh | tail -n 1)}"
# etcd, kube-apiserver and kube-controller-manager for the end-to-end tests (built once, then cached).
POPUP_CONTROL_PLANE_BIN="${POPUP_CONTROL_PLANE_BIN:-$(bash hack/control-plane.sh | tail -n 1)}"
export HELM REDIS_STACK_SERVER POPUP_CONTROL_PLANE_BIN

# Prebuilt real runtimes (test fixtures beside the repository, never in it): RedisGears 1 for the gears
# engine's tiers. Without it those tiers run on the CPython emulation only, and say so here.
shared="$(cd "$REPO/.." && pwd)/shared"
if [ -z "${POPUP_REDISGEARS1:-}" ] && [ -f "$shared/redisgears1/redisgears1.tar.xz" ]; then
  export POPUP_REDISGEARS1="$shared/redisgears1"
fi
runtimes() {
  if [ -n "${POPUP_REDISGEARS1:-}" ]; then
    echo "real RedisGears 1: $POPUP_REDISGEARS1"
  else
    echo "WARNING: no real RedisGears 1 (POPUP_REDISGEARS1 unset, no $shared/redisgears1): the gears engine was tested on the CPython emulation only"
  fi
}
runtimes
status=0
cargo test --locked "$@" || status=$?
runtimes
exit $status
