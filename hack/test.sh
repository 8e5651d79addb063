#!/usr/bin/env bash
# The project's test command (the README's, and what CI runs): installs the real components the tests
# use when they are missing (cached under ${POPUP_CACHE:-~/.cache/popup-operator}), then runs every test.
#
#   bash hack/test.sh              # everything
#   bash hack/test.sh --test helm  # extra arguments go to `cargo test`
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

HELM="${HELM:-$(bash hack/install-helm.sh | tail -n 1)}"
REDIS_STACK_SERVER="${REDIS_STACK_SERVER:-$(bash hack/install-redis-stack.sh | tail -n 1)}"
# etcd, kube-apiserver and kube-controller-manager for the end-to-end tests (built once, then cached).
POPUP_CONTROL_PLANE_BIN="${POPUP_CONTROL_PLANE_BIN:-$(bash hack/control-plane.sh | tail -n 1)}"
export HELM REDIS_STACK_SERVER POPUP_CONTROL_PLANE_BIN

cargo test --locked "$@"
