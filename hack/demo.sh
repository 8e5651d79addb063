#!/usr/bin/env bash
# The product's main job, from nothing: a cluster, the operator, a store, and the sale followed live in the
# terminal until it is sold out.
#
#   bash hack/demo.sh          # run (again): a fresh sale each time
#   bash hack/demo.sh down     # remove everything the demo made (the local cluster too, if it started one)
#
# Which cluster: the one of your kubeconfig (KUBECONFIG or ~/.kube/config) when it answers; otherwise the
# local single-node cluster of hack/local-cluster.sh (root on Linux; built from upstream parts, first run
# ~10 minutes, then seconds). Images: on the local cluster the ones hack/images.sh builds here
# (popup.local/...), since nothing can be pulled; on your cluster the chart's and the store's defaults
# (POPUP_DEMO_OPERATOR_IMAGE overrides the operator's, e.g. after `kind load`; see docs/install.md).
#
# What it does: `helm upgrade --install` the chart into popup-system; replaces the store popup-demo/demo
# (engine native, 1000 units, 50 customers/s) so each run is a new sale, its customers held back
# (spec.simulator.hold); waits until the store is Ready; port-forwards its Redis Service to a free local
# port; opens the view: `popup-operator dashboard` on a terminal (q leaves it), else `popup-operator sale
# --watch` until the sale is over; lets the customers in once the view has connected, so that the first
# customer is on screen; then says how to open Grafana (when it runs) and how to tear everything down.
set -euo pipefail

# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
STATE="$CACHE/demo"
NS=popup-demo
STORE=demo
RELEASE=popup
OPERATOR_NS=popup-system
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
[[ -d /usr/local/go/bin ]] && export PATH="$PATH:/usr/local/go/bin"

# kubectl and helm: the machine's when present, else the ones this repository installs or builds.
find_tools() {
  if command -v kubectl >/dev/null; then KUBECTL=kubectl
  else KUBECTL="$(bash "$REPO/hack/control-plane.sh" | tail -n 1)/kubectl"; fi
  HELM="${HELM:-$(command -v helm || bash "$REPO/hack/install-helm.sh" | tail -n 1)}"
}

k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

choose_cluster() {
  local user_config="${KUBECONFIG:-$HOME/.kube/config}"
  if [[ -f "$STATE/cluster" ]]; then
    # A re-run uses the cluster of the previous run.
    MODE="$(sed -n 1p "$STATE/cluster")"; KUBECONFIG_PATH="$(sed -n 2p "$STATE/cluster")"
    if [[ "$MODE" == local ]]; then KUBECONFIG_PATH="$(bash "$REPO/hack/local-cluster.sh" up | tail -n 1)"; fi
  elif [[ -f "${user_config%%:*}" ]] && timeout 10 "$KUBECTL" --kubeconfig "${user_config%%:*}" get --raw /readyz >/dev/null 2>&1; then
    MODE=existing; KUBECONFIG_PATH="${user_config%%:*}"
    log "using the cluster of $KUBECONFIG_PATH ($("$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" config current-context 2>/dev/null))"
  else
    [[ "$(id -u)" == 0 ]] || die "no cluster answers at ${user_config}, and the local cluster needs root: run 'sudo bash hack/demo.sh', or point KUBECONFIG at a cluster (docs/install.md: kind)"
    log "no cluster answers at $user_config: bringing up the local single-node cluster (hack/local-cluster.sh)"
    MODE=local; KUBECONFIG_PATH="$(bash "$REPO/hack/local-cluster.sh" up | tail -n 1)"
  fi
  mkdir -p "$STATE"
  printf '%s\n%s\n' "$MODE" "$KUBECONFIG_PATH" > "$STATE/cluster"
}

install_operator() {
  local image_args=()
  if [[ "$MODE" == local ]]; then
    # shellcheck disable=SC1090
    source "$(dirname "$KUBECONFIG_PATH")/images.env"
    image_args=(--set "image.repository=${POPUP_OPERATOR_IMAGE%:*}" --set "image.tag=${POPUP_OPERATOR_IMAGE##*:}"
                --set image.pullPolicy=Never)
  elif [[ -n "${POPUP_DEMO_OPERATOR_IMAGE:-}" ]]; then
    image_args=(--set "image.repository=${POPUP_DEMO_OPERATOR_IMAGE%:*}" --set "image.tag=${POPUP_DEMO_OPERATOR_IMAGE##*:}")
  fi
  log "helm upgrade --install $RELEASE into $OPERATOR_NS"
  "$HELM" --kubeconfig "$KUBECONFIG_PATH" upgrade --install "$RELEASE" "$REPO/charts/popup-operator" \
    --namespace "$OPERATOR_NS" --create-namespace "${image_args[@]}" --wait --timeout 5m >/dev/null \
    || die "the operator did not become ready; kubectl -n $OPERATOR_NS describe pods says why"
}

apply_store() {
  local redis_image="" grafana=managed
  if [[ "$MODE" == local ]]; then
    redis_image="image: $POPUP_REDIS_IMAGE"
    grafana=none   # no Grafana image can be obtained on a machine without pulls
  fi
  k create namespace "$NS" --dry-run=client -o yaml | k apply -f - >/dev/null
  if k -n "$NS" get popupstore "$STORE" >/dev/null 2>&1; then
    log "replacing the previous store $NS/$STORE (a fresh sale)"
    k -n "$NS" delete popupstore "$STORE" --wait=true --timeout=2m >/dev/null
    k -n "$NS" wait --for=delete pod -l app.kubernetes.io/instance="$STORE" --timeout=2m >/dev/null 2>&1 || true
  fi
  k -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: popup.dev/v1alpha1
kind: PopUpStore
metadata:
  name: $STORE
spec:
  engine: native
  stock: 1000
  redis:
    ${redis_image:-{\}}
  grafana:
    mode: $grafana
  simulator:
    ratePerSecond: 50
    hold: true   # released once the view is up (release_when_watched)
EOF
  log "store $NS/$STORE applied; waiting until it is Ready"
  local i last=""
  for i in $(seq 1 300); do
    local line
    line="$(k -n "$NS" get popupstore "$STORE" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {end}' 2>/dev/null || true)"
    [[ "$line" != "$last" && -n "$line" ]] && log "  $line" && last="$line"
    [[ " $line" == *" Ready=True "* ]] && return 0
    sleep 1
  done
  k -n "$NS" describe popupstore "$STORE" >&2 || true
  die "the store did not become Ready in 5 minutes (its conditions are above)"
}

popup_binary() {
  local musl="$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/popup-operator"
  if [[ "$MODE" == local && -x "$musl" ]]; then echo "$musl"; return; fi
  (cd "$REPO" && cargo build --release --locked --bin popup-operator >&2)
  echo "$CARGO_TARGET_DIR/release/popup-operator"
}

# Lets the held customers in once the view has opened its Redis connection (the port-forward logs each
# connection): the view is on screen before the simulator Job's pod even starts.
release_when_watched() {
  local i
  for i in $(seq 1 600); do
    grep -q "Handling connection" "$STATE/port-forward.log" 2>/dev/null && break
    sleep 0.1
  done
  k -n "$NS" patch popupstore "$STORE" --type merge -p '{"spec":{"simulator":{"hold":false}}}'
}

watch_sale() {
  local bin port password user=""
  bin="$(popup_binary)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  k -n "$NS" port-forward "svc/$STORE-redis" "$port:6379" --address 127.0.0.1 >"$STATE/port-forward.log" 2>&1 &
  PF=$!
  trap 'kill "$PF" 2>/dev/null || true' EXIT
  local i
  for i in $(seq 1 100); do
    grep -q "Forwarding from" "$STATE/port-forward.log" 2>/dev/null && break
    kill -0 "$PF" 2>/dev/null || { cat "$STATE/port-forward.log" >&2; die "kubectl port-forward failed"; }
    sleep 0.1
  done
  release_when_watched >"$STATE/release.log" 2>&1 &
  if [[ -t 1 ]]; then
    # The dashboard only reads: the store's read-only Grafana user when the store has one.
    if k -n "$NS" get secret "$STORE-redis-grafana" >/dev/null 2>&1; then
      user="popup-grafana@"
      password="$(k -n "$NS" get secret "$STORE-redis-grafana" -o jsonpath='{.data.password}' | base64 -d)"
    else
      password="$(k -n "$NS" get secret "$STORE-redis" -o jsonpath='{.data.password}' | base64 -d)"
    fi
    log "opening the dashboard; the customers come in once it is up (q leaves it; the sale goes on)"
    # A one-minute window: the demo sale (1000 units at 50 customers/s) lasts about 20 s.
    REDIS_PASSWORD="$password" "$bin" dashboard --window 1m --redis "redis://${user}127.0.0.1:$port"
  else
    password="$(k -n "$NS" get secret "$STORE-redis" -o jsonpath='{.data.password}' | base64 -d)"
    log "the sale, live (not a terminal: line by line; Ctrl-C stops watching, the sale goes on):"
    REDIS_PASSWORD="$password" "$bin" sale --watch --engine native --redis "redis://127.0.0.1:$port"
  fi
  wait "$!" 2>/dev/null || log "could not let the customers in: $(cat "$STATE/release.log")"
}

goodbye() {
  echo
  k get popupstores -n "$NS"
  echo
  if [[ "$MODE" == local ]]; then
    echo "Grafana: not deployed here (no Grafana image can be pulled on this machine; on a cluster with"
    echo "  image pulls the store runs one: see docs/install.md)."
  else
    echo "Grafana: $(k -n "$NS" get popupstore "$STORE" -o jsonpath='{.status.endpoints.grafanaPortForward}')"
    echo "  then open http://localhost:3000"
  fi
  echo "Again: bash hack/demo.sh      Everything away: bash hack/demo.sh down"
}

cmd_down() {
  find_tools
  if [[ ! -f "$STATE/cluster" ]]; then log "no demo to remove"; return 0; fi
  MODE="$(sed -n 1p "$STATE/cluster")"; KUBECONFIG_PATH="$(sed -n 2p "$STATE/cluster")"
  if [[ "$MODE" == local ]]; then
    bash "$REPO/hack/local-cluster.sh" down
  else
    k delete namespace "$NS" --ignore-not-found --wait=true --timeout=3m >/dev/null || true
    "$HELM" --kubeconfig "$KUBECONFIG_PATH" uninstall "$RELEASE" --namespace "$OPERATOR_NS" --wait >/dev/null 2>&1 || true
    k delete namespace "$OPERATOR_NS" --ignore-not-found --wait=false >/dev/null || true
    log "removed the store and the operator; the CRD stays (helm never deletes CRDs):"
    log "  kubectl delete crd popupstores.popup.dev"
  fi
  rm -rf "$STATE"
}

case "${1:-up}" in
  up)
    find_tools
    choose_cluster
    install_operator
    apply_store
    watch_sale
    goodbye
    ;;
  down) cmd_down ;;
  *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac
