#!/usr/bin/env bash
# A single-node Kubernetes on this machine, from upstream parts, for the node test tier and the demo.
#
#   bash hack/local-cluster.sh up           # start (or reuse) the cluster; last line: the kubeconfig path
#   bash hack/local-cluster.sh down         # stop exactly what `up` started and remove its traces
#   bash hack/local-cluster.sh kubeconfig   # print the kubeconfig path (fails when the cluster is not up)
#   bash hack/local-cluster.sh status       # which components run
#
# What runs (every process started here, its PID in $DIR/pids/, its log in $DIR/logs/):
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy (iptables mode) and
#   CoreDNS (serving cluster.local only), all built by hack/control-plane.sh from Go modules; kube-router as
#   the NetworkPolicy engine beside the bridge CNI (its firewall only: no BGP router, no service proxy),
#   built by hack/cluster-addons.sh; containerd, runc, the CNI plugins, iptables, ipset and conntrack from
#   Debian's packages (installed here when missing). Images come from hack/images.sh (built here, imported
#   into this containerd; nothing is pulled).
#
# Storage: local-path-provisioner (the provisioner kind ships; hack/cluster-addons.sh builds it, hack/images.sh
#   makes its image and its helper pods' busybox image) runs as a Deployment in namespace local-path-storage
#   and serves the default StorageClass `standard` (WaitForFirstConsumer, reclaim Delete, like kind's). Volumes
#   are directories under $DIR/local-path, so `down` removes them with the rest.
#
# Network: all traffic stays on this machine. The node is a bridge this script creates ($BRIDGE, $NODE_IP on
#   $POD_CIDR); the API server, the kubelet and CoreDNS listen on that address, everything else on 127.0.0.1.
#   Pods get addresses on the bridge (CNI bridge + host-local); Services come from $SERVICE_CIDR, NodePorts
#   only on $NODE_IP. No masquerading towards other interfaces: pods reach the node and each other, nothing
#   else.
#
# Why one per machine: kube-proxy, kubelet and kube-router own machine-wide iptables chains (KUBE-*) and
#   kube-router its ipsets (KUBE-SRC-*, KUBE-DST-*), so a second node on the same machine would fight over
#   them. `up` refuses when another local cluster, any KUBE-/CNI- chain or any such ipset it did not create is
#   present.
#
# Root on Linux only. cgroup v1 or v2 with the cgroupfs driver (no systemd needed).
#
# Environment:
#   POPUP_CLUSTER_DIR       all state (default /var/lib/popup-local-cluster)
#   POPUP_CLUSTER_BRIDGE    bridge name (default popup0)
#   POPUP_CLUSTER_NET       the node's /16, as its first two octets (default 10.87: node 10.87.0.1, pods
#                           10.87.0.0/16, Services 10.88.0.0/16 unless POPUP_CLUSTER_SERVICE_NET says otherwise)
#   POPUP_CLUSTER_SERVICE_NET  the Services' /16, first two octets (default: the node's second octet + 1)
#   POPUP_CACHE             cache of built binaries (default $HOME/.cache/popup-operator)
set -euo pipefail

# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR="${POPUP_CLUSTER_DIR:-/var/lib/popup-local-cluster}"
BRIDGE="${POPUP_CLUSTER_BRIDGE:-popup0}"
NET="${POPUP_CLUSTER_NET:-10.87}"
SVC_NET="${POPUP_CLUSTER_SERVICE_NET:-${NET%%.*}.$(( ${NET##*.} + 1 ))}"
NODE_IP="$NET.0.1"
POD_CIDR="$NET.0.0/16"
SERVICE_CIDR="$SVC_NET.0.0/16"
API_SERVICE_IP="$SVC_NET.0.1"
NODE_NAME="popup-node"
API_PORT=6443
CLUSTER_DOMAIN="cluster.local"
MARKER=/run/popup-local-cluster   # machine-wide: which directory's cluster is up


[[ "$(uname -s)" == Linux ]] || die "Linux only"
[[ "$(id -u)" == 0 ]] || die "run as root: the node needs containerd, a bridge and iptables"

pidfile() { echo "$DIR/pids/$1.pid"; }
running() { local f; f="$(pidfile "$1")"; [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null; }

# Starts a component in its own session (so `down` can stop it and its children by PID), logging to a file.
start() {
  local name=$1; shift
  if running "$name"; then return 0; fi
  setsid "$@" >"$DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$(pidfile "$name")"
}

# Stops a component by the PID `start` recorded: TERM to its process group, KILL after 10 s.
stop() {
  local name=$1 f pid i
  f="$(pidfile "$name")"
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

wait_for() { # what timeout-seconds command...
  local what=$1 timeout=$2 i; shift 2
  for i in $(seq 1 $(( timeout * 5 ))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "timed out after ${timeout}s waiting for $what; last log lines:"
  return 1
}

# ---- packages ---------------------------------------------------------------------------------------
install_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] \
    || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v ipset >/dev/null || missing+=(ipset)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v openssl >/dev/null || missing+=(openssl)
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 \
      || die "could not install ${missing[*]} with apt-get"
  fi
}

# ---- certificates and credentials ---------------------------------------------------------------------
make_pki() {
  local p="$DIR/pki"
  if [[ -f "$p/.done" ]]; then
    # A state directory from before kube-router: its identity is added (a running API server reads it at
    # its next start).
    grep -q ',system:kube-router,' "$p/tokens.csv" \
      || echo "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'),system:kube-router,kube-router" >> "$p/tokens.csv"
    return 0
  fi
  mkdir -p "$p"
  (
    cd "$p"
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.crt -days 3650 -subj "/CN=popup-local-ca" 2>/dev/null
    # cert NAME SUBJECT [SANS]: a key and a certificate signed by the cluster CA.
    cert() {
      openssl req "${ec[@]}" -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      local ext=(); if [[ -n "${3:-}" ]]; then echo "subjectAltName=$3" > "$1.ext"; ext=(-extfile "$1.ext"); fi
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -out "$1.crt" \
        "${ext[@]}" 2>/dev/null
      rm -f "$1.csr"
    }
    cert apiserver "/CN=kube-apiserver" \
      "IP:$NODE_IP,IP:127.0.0.1,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN"
    # The API server's identity towards the kubelet (logs, exec, port-forward).
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
    cert kubelet "/CN=$NODE_NAME" "IP:$NODE_IP,DNS:$NODE_NAME"
    openssl ecparam -name prime256v1 -genkey -noout -out sa.key
    openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
    # One token per identity; each component gets only its own (RBAC's built-in roles do the rest).
    tok() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
    {
      echo "$(tok),admin,admin,system:masters"
      echo "$(tok),system:kube-controller-manager,kcm"
      echo "$(tok),system:kube-scheduler,scheduler"
      echo "$(tok),system:node:$NODE_NAME,node,system:nodes"
      echo "$(tok),system:kube-proxy,proxy"
      echo "$(tok),system:coredns,coredns"
      echo "$(tok),system:kube-router,kube-router"
    } > tokens.csv
    chmod 600 tokens.csv ./*.key
  )
  touch "$p/.done"
}

kubeconfig_for() { # user file
  local user=$1 token
  token="$(awk -F, -v u="$user" '$2 == u { print $1 }' "$DIR/pki/tokens.csv")"
  cat > "$2" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: popup-local
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority: $DIR/pki/ca.crt
users:
- name: $user
  user:
    token: $token
contexts:
- name: popup-local
  context: {cluster: popup-local, user: $user}
current-context: popup-local
EOF
  chmod 600 "$2"
}

# user_with_rules NAME < RULES: a host process's own identity, system:NAME (its token is in
# pki/tokens.csv), granted cluster-wide the ClusterRole rules on stdin (YAML list items) through ClusterRole
# and ClusterRoleBinding popup-local:NAME, and its kubeconfig $DIR/NAME.kubeconfig.
user_with_rules() {
  local name=$1 rules
  rules="$(cat)"
  "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "popup-local:$name"}
rules:
$rules
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "popup-local:$name"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "popup-local:$name"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:$name"}
EOF
  kubeconfig_for "system:$name" "$DIR/$name.kubeconfig"
}

# ---- network ---------------------------------------------------------------------------------------------
# Chains that kubelet, kube-proxy, kube-router and the CNI bridge plugin create.
our_chains() { # table
  { iptables -t "$1" -S 2>/dev/null; ip6tables -t "$1" -S 2>/dev/null; } \
    | awk '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 ~ /^CNI-/) { print $2 }' | sort -u
}

# The ipsets kube-router's firewall makes: KUBE-SRC-/KUBE-DST- + 16 base32 characters per policy, TMP- + 16
# for the moment of an atomic swap, each with an "inet6:" prefix in its IPv6 twin (IPv6 is off here).
KUBE_ROUTER_SETS='^(inet6:)?(KUBE-SRC-|KUBE-DST-|TMP-)[A-Z2-7]{16}$'
kube_router_sets() {
  command -v ipset >/dev/null || return 0
  ipset list -n 2>/dev/null | grep -E "$KUBE_ROUTER_SETS" | sort -u || true
}

setup_network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    echo created > "$DIR/bridge"
  fi
  ip addr replace "$NODE_IP/16" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Pod -> Service -> pod on the same bridge needs routing and bridged traffic seen by iptables.
  if [[ ! -f "$DIR/sysctl.saved" ]]; then
    {
      echo "net.ipv4.ip_forward=$(sysctl -n net.ipv4.ip_forward)"
      if [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
        echo "net.bridge.bridge-nf-call-iptables=$(sysctl -n net.bridge.bridge-nf-call-iptables)"
      fi
    } > "$DIR/sysctl.saved"
  fi
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward=1
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
  mkdir -p "$DIR/cni/net.d" "$DIR/cni/ipam"
  cat > "$DIR/cni/net.d/10-popup.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "popup-local",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$POD_CIDR", "rangeStart": "$NET.1.1", "gateway": "$NODE_IP" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$DIR/cni/ipam"
      }
    }
  ]
}
EOF
}

# ---- components --------------------------------------------------------------------------------------------
start_containerd() {
  mkdir -p "$DIR/containerd"
  # The runc shim keeps its sockets under /run/containerd/s whatever the config says; note whether that
  # directory is ours to remove.
  [[ -e /run/containerd || -f "$DIR/run-containerd" ]] || echo created > "$DIR/run-containerd"
  cat > "$DIR/containerd/config.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
[grpc]
  address = "$DIR/containerd/containerd.sock"
[ttrpc]
  address = "$DIR/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Without it every sandbox fails here: runc may not lower oom_score_adj in this VM.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$DIR/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
EOF
  start containerd containerd --config "$DIR/containerd/config.toml"
  wait_for containerd 30 ctr -a "$DIR/containerd/containerd.sock" version \
    || { tail -20 "$DIR/logs/containerd.log" >&2; die "containerd did not start"; }
}

start_control_plane() {
  local p="$DIR/pki"
  start etcd "$BIN/etcd" --name=popup-local --data-dir="$DIR/etcd" \
    --listen-client-urls=http://127.0.0.1:12379 --advertise-client-urls=http://127.0.0.1:12379 \
    --listen-peer-urls=http://127.0.0.1:12380 --initial-advertise-peer-urls=http://127.0.0.1:12380 \
    --initial-cluster=popup-local=http://127.0.0.1:12380 --log-level=warn
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:12379 \
    --bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port="$API_PORT" \
    --cert-dir="$DIR/apiserver-certs" --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" --token-auth-file="$p/tokens.csv" \
    --kubelet-client-certificate="$p/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$p/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$p/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true --v=1
  kubeconfig_for admin "$DIR/admin.kubeconfig"
  wait_for kube-apiserver 90 "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" get --raw /readyz \
    || { tail -20 "$DIR/logs/kube-apiserver.log" >&2; die "kube-apiserver did not become ready"; }

  kubeconfig_for system:kube-controller-manager "$DIR/kcm.kubeconfig"
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$DIR/kcm.kubeconfig" --authentication-kubeconfig="$DIR/kcm.kubeconfig" \
    --authorization-kubeconfig="$DIR/kcm.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10257 --cert-dir="$DIR/kcm-certs" --leader-elect=false \
    --use-service-account-credentials=true --controllers='*' \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --service-cluster-ip-range="$SERVICE_CIDR" --cluster-cidr="$POD_CIDR" --v=1
  kubeconfig_for system:kube-scheduler "$DIR/scheduler.kubeconfig"
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$DIR/scheduler.kubeconfig" --authentication-kubeconfig="$DIR/scheduler.kubeconfig" \
    --authorization-kubeconfig="$DIR/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=10259 --cert-dir="$DIR/scheduler-certs" --leader-elect=false --v=1
}

start_coredns() {
  # CoreDNS reads Services and EndpointSlices with its own identity and answers cluster.local only.
  user_with_rules coredns <<'EOF'
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
EOF
  cat > "$DIR/Corefile" <<EOF
$CLUSTER_DOMAIN:53 in-addr.arpa:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes $CLUSTER_DOMAIN in-addr.arpa {
        kubeconfig $DIR/coredns.kubeconfig popup-local
        pods insecure
        fallthrough in-addr.arpa
    }
    cache 5
}
.:53 {
    bind $NODE_IP
    # Names outside the cluster are not resolved: pods here have no way out anyway.
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
  start coredns "$BIN/coredns" -conf "$DIR/Corefile"
}

start_node() {
  mkdir -p "$DIR/kubelet" "$DIR/pod-logs"
  kubeconfig_for "system:node:$NODE_NAME" "$DIR/kubelet.kubeconfig"
  # Pods resolve through CoreDNS only; the machine's own resolvers are not handed to them.
  : > "$DIR/resolv.conf"
  cat > "$DIR/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $DIR/pki/kubelet.crt
tlsPrivateKeyFile: $DIR/pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $DIR/pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$DIR/containerd/containerd.sock
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
evictionHard: {}
# The project's images are imported, not pulled: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
clusterDNS: [$NODE_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $DIR/resolv.conf
podLogsDir: $DIR/pod-logs
volumePluginDir: $DIR/kubelet-plugins
serializeImagePulls: false
EOF
  start kubelet "$BIN/kubelet" --config="$DIR/kubelet-config.yaml" --kubeconfig="$DIR/kubelet.kubeconfig" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --root-dir="$DIR/kubelet" --v=1
  kubeconfig_for system:kube-proxy "$DIR/kube-proxy.kubeconfig"
  start kube-proxy "$BIN/kube-proxy" --kubeconfig="$DIR/kube-proxy.kubeconfig" \
    --hostname-override="$NODE_NAME" --proxy-mode=iptables --cluster-cidr="$POD_CIDR" \
    --nodeport-addresses="$NODE_IP/32" --metrics-bind-address=127.0.0.1:10249 \
    --healthz-bind-address=127.0.0.1:10256 --conntrack-max-per-core=0 --v=1
  wait_for "node $NODE_NAME to be Ready" 120 bash -c \
    "'$BIN/kubectl' --kubeconfig '$DIR/admin.kubeconfig' get node '$NODE_NAME' \
       -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True" \
    || { tail -20 "$DIR/logs/kubelet.log" >&2; die "the node did not become Ready"; }
  # Pods are refused until the namespace's ServiceAccount exists; DNS must answer before pods rely on it.
  wait_for "the default ServiceAccount" 60 "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" \
    get serviceaccount default -n default || die "the controller-manager created no default ServiceAccount"
  wait_for CoreDNS 60 curl -fsS http://127.0.0.1:18181/ready \
    || { tail -20 "$DIR/logs/coredns.log" >&2; die "CoreDNS is not ready"; }
}

# kube-router as a host process, its NetworkPolicy firewall only (--run-router=false: no BGP, no routes;
# --run-service-proxy=false: kube-proxy keeps Services). It reads pods, namespaces and policies with its own
# identity and turns them into iptables chains (KUBE-ROUTER-*, KUBE-POD-FW-*, KUBE-NWPLCY-*) and ipsets.
start_kube_router() {
  user_with_rules kube-router <<'EOF'
- apiGroups: [""]
  resources: [pods, namespaces, nodes, services, endpoints]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
EOF
  # What `down` may remove: the kube-router ipsets that were not there before (none, `up` made sure).
  [[ -f "$DIR/ipsets.before" ]] || kube_router_sets > "$DIR/ipsets.before"
  # No health or metrics listener (they would bind every interface); no CNI config or pod egress
  # masquerade (the router's jobs, which stay off).
  start kube-router "$ADDONS/kube-router" --kubeconfig="$DIR/kube-router.kubeconfig" \
    --hostname-override="$NODE_NAME" --run-firewall=true --run-router=false --run-service-proxy=false \
    --enable-cni=false --enable-pod-egress=false --health-port=0 --metrics-port=0 \
    --service-cluster-ip-range="$SERVICE_CIDR" --v=1
  # Its top-level chains exist once the firewall controller has started.
  wait_for "kube-router's firewall chains" 60 bash -c \
    "iptables -t filter -S KUBE-ROUTER-FORWARD && iptables -t filter -S KUBE-NWPLCY-DEFAULT" \
    || { tail -20 "$DIR/logs/kube-router.log" >&2; die "kube-router did not set up its firewall"; }
}

# local-path-provisioner in a pod, the default StorageClass. Its manifest follows upstream's
# deploy/local-path-storage.yaml (namespace, ServiceAccount, RBAC, ConfigMap, Deployment, StorageClass) with
# the local images, the volumes' root under $DIR and kind's class name.
apply_storage() {
  local provisioner busybox
  provisioner="$(sed -n 's/^POPUP_LOCAL_PATH_IMAGE=//p' "$DIR/images.env")"
  busybox="$(sed -n 's/^POPUP_BUSYBOX_IMAGE=//p' "$DIR/images.env")"
  [[ -n "$provisioner" && -n "$busybox" ]] || die "images.env names no POPUP_LOCAL_PATH_IMAGE or POPUP_BUSYBOX_IMAGE"
  mkdir -p "$DIR/local-path"
  "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: local-path-storage}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: local-path-provisioner-service-account, namespace: local-path-storage}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: local-path-provisioner-role, namespace: local-path-storage}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, patch, update, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: local-path-provisioner-role}
rules:
- apiGroups: [""]
  resources: [nodes, persistentvolumeclaims, configmaps, pods, pods/log]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [persistentvolumes]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [storage.k8s.io]
  resources: [storageclasses]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: local-path-provisioner-bind, namespace: local-path-storage}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: local-path-provisioner-role}
subjects:
- {kind: ServiceAccount, name: local-path-provisioner-service-account, namespace: local-path-storage}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: local-path-provisioner-bind}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: local-path-provisioner-role}
subjects:
- {kind: ServiceAccount, name: local-path-provisioner-service-account, namespace: local-path-storage}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: local-path-storage}
data:
  config.json: |-
    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$DIR/local-path"]}]}
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata:
      name: helper-pod
    spec:
      priorityClassName: system-node-critical
      containers:
      - name: helper-pod
        image: $busybox
        imagePullPolicy: Never
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: local-path-provisioner, namespace: local-path-storage}
spec:
  replicas: 1
  selector: {matchLabels: {app: local-path-provisioner}}
  template:
    metadata: {labels: {app: local-path-provisioner}}
    spec:
      serviceAccountName: local-path-provisioner-service-account
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: local-path-provisioner
        image: $provisioner
        imagePullPolicy: Never
        command: [local-path-provisioner, --debug, start, --config, /etc/config/config.json]
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
        volumeMounts:
        - {name: config-volume, mountPath: /etc/config/}
        env:
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        - {name: CONFIG_MOUNT_PATH, value: /etc/config/}
      volumes:
      - name: config-volume
        configMap: {name: local-path-config}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
EOF
}

wait_for_storage() {
  wait_for "the local-path provisioner to be available" 120 "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" \
    -n local-path-storage wait --for=condition=Available --timeout=1s deployment/local-path-provisioner \
    || { "$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig" -n local-path-storage describe pods >&2 || true
         die "the local-path provisioner did not start"; }
}

# ---- commands --------------------------------------------------------------------------------------------
cmd_up() {
  install_packages
  BIN="$(bash "$REPO/hack/control-plane.sh" | tail -n 1)"
  ADDONS="$(bash "$REPO/hack/cluster-addons.sh" | tail -n 1)"
  # A marker whose directory is gone is left from a cluster that was removed by hand.
  if [[ -f "$MARKER" && ! -d "$(cat "$MARKER")" ]]; then rm -f "$MARKER"; fi
  if [[ -f "$MARKER" && "$(cat "$MARKER")" != "$DIR" ]]; then
    die "another local cluster is up (state in $(cat "$MARKER")); stop it first: POPUP_CLUSTER_DIR=$(cat "$MARKER") bash hack/local-cluster.sh down"
  fi
  if [[ ! -f "$MARKER" ]]; then
    local foreign
    foreign="$( { our_chains filter; our_chains nat; our_chains mangle; } | sort -u | tr '\n' ' ')"
    [[ -z "$foreign" ]] || die "iptables already has Kubernetes/CNI chains ($foreign); another node seems to run on this machine"
    foreign="$(kube_router_sets | tr '\n' ' ')"
    [[ -z "$foreign" ]] || die "ipset already has kube-router's sets ($foreign); another node seems to run on this machine"
  fi
  mkdir -p "$DIR/pids" "$DIR/logs"
  # A `down` while this is still starting things (a test killed mid-way) stops this script first.
  echo $$ > "$DIR/pids/up.pid"
  echo "$DIR" > "$MARKER"
  echo "$BIN" > "$DIR/bin"
  make_pki
  setup_network
  # Images are built before containerd starts (its config names the pause image) and imported before the
  # kubelet asks for the first sandbox.
  local images_env
  images_env="$(bash "$REPO/hack/images.sh" build | tail -n 1)"
  cp "$images_env" "$DIR/images.env"
  PAUSE_IMAGE="$(sed -n 's/^POPUP_PAUSE_IMAGE=//p' "$DIR/images.env")"
  [[ -n "$PAUSE_IMAGE" ]] || die "$images_env names no POPUP_PAUSE_IMAGE"
  start_containerd
  bash "$REPO/hack/images.sh" import --address "$DIR/containerd/containerd.sock" >/dev/null
  start_control_plane
  start_coredns
  # Applied before the node is Ready, so that its pod starts as soon as the node can take it.
  apply_storage
  start_node
  start_kube_router
  wait_for_storage
  log "up: node $NODE_NAME Ready at $NODE_IP; kubectl --kubeconfig $DIR/admin.kubeconfig get nodes"
  rm -f "$DIR/pids/up.pid"
  echo "$DIR/admin.kubeconfig"
}

# Stops a process and everything it started, children first.
kill_tree() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
  kill -TERM "$1" 2>/dev/null || true
}

cmd_down() {
  if [[ ! -d "$DIR" ]]; then log "nothing to stop in $DIR"; rm -f "$MARKER"; return 0; fi
  if [[ -f "$DIR/pids/up.pid" ]] && kill -0 "$(cat "$DIR/pids/up.pid")" 2>/dev/null; then
    log "stopping an unfinished 'up' first"
    kill_tree "$(cat "$DIR/pids/up.pid")"
    sleep 1
  fi
  rm -f "$DIR/pids/up.pid"
  BIN="$(cat "$DIR/bin" 2>/dev/null || true)"
  local sock="$DIR/containerd/containerd.sock" k=("$BIN/kubectl" --kubeconfig "$DIR/admin.kubeconfig")
  # Nothing may recreate pods while they go: controllers and scheduler first.
  stop kube-controller-manager
  stop kube-scheduler
  # Let the kubelet tear pods down itself (it stops their sandboxes, which releases their network) ...
  if running kubelet && running kube-apiserver; then
    "${k[@]}" delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    wait_for "the kubelet to stop every pod" 60 \
      bash -c "! ctr -a '$sock' -n k8s.io tasks ls 2>/dev/null | grep -q RUNNING" || true
  fi
  for c in kube-router kube-proxy kubelet coredns kube-apiserver etcd; do stop "$c"; done
  # ... and remove what is left in containerd by hand.
  if running containerd; then
    local t
    for t in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$sock" -n k8s.io tasks kill -s KILL "$t" >/dev/null 2>&1 || true
    done
    sleep 1
    for t in $(ctr -a "$sock" -n k8s.io containers ls -q 2>/dev/null); do
      ctr -a "$sock" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true
      ctr -a "$sock" -n k8s.io containers delete "$t" >/dev/null 2>&1 || true
    done
  fi
  stop containerd
  # Shims started by this containerd outlive it; they are the ones given its socket.
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null || true
  # Network namespaces of sandboxes that were not stopped cleanly (containerd names them cni-<uuid> and
  # records them under its state): unmount only those listed there.
  local ns
  for ns in $(grep -rhoa '/var/run/netns/cni-[0-9a-f-]*' "$DIR/containerd/root" 2>/dev/null | sort -u); do
    [[ -e "$ns" ]] || continue
    umount "$ns" 2>/dev/null || true
    rm -f "$ns"
  done
  # Mounts under the state directory (pod volumes, snapshots, sandbox shm), deepest first.
  local m
  for m in $(awk -v d="$DIR/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  # iptables: kube-proxy's own clean-up, then every KUBE-/CNI- chain kubelet and the CNI plugin left.
  if [[ -x "$BIN/kube-proxy" ]]; then "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  local ipt table chain
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat mangle; do
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 ~ /^CNI-/) { print $2 }'); do
        # Unhook every rule that jumps to it, then flush and delete it.
        { "$ipt" -t "$table" -S 2>/dev/null | grep -E -- "-j $chain( |\$)" || true; } | sed 's/^-A/-D/' \
          | while read -r rule; do eval "$ipt -t $table $rule" 2>/dev/null || true; done
        "$ipt" -t "$table" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt" -t "$table" -S 2>/dev/null | awk '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 ~ /^CNI-/) { print $2 }'); do
        "$ipt" -t "$table" -X "$chain" 2>/dev/null || true
      done
    done
  done
  # kube-router's ipsets, once no rule uses them any more: the ones named like its own that were not there
  # before it started.
  if command -v ipset >/dev/null; then
    local set
    for set in $(kube_router_sets); do
      grep -qxF -- "$set" "$DIR/ipsets.before" 2>/dev/null && continue
      ipset destroy "$set" 2>/dev/null || log "could not destroy ipset $set"
    done
  fi
  if [[ -f "$DIR/run-containerd" ]]; then rm -rf /run/containerd; fi
  if [[ -f "$DIR/bridge" ]]; then ip link del "$BRIDGE" 2>/dev/null || true; rm -f "$DIR/bridge"; fi
  if [[ -f "$DIR/sysctl.saved" ]]; then
    while IFS= read -r line; do sysctl -qw "$line" || true; done < "$DIR/sysctl.saved"
  fi
  [[ -f "$MARKER" && "$(cat "$MARKER")" == "$DIR" ]] && rm -f "$MARKER"
  rm -rf "$DIR"
  log "down: stopped and removed $DIR"
}

cmd_kubeconfig() {
  [[ -f "$DIR/admin.kubeconfig" ]] && running kube-apiserver || die "the local cluster is not up ($DIR)"
  echo "$DIR/admin.kubeconfig"
}

cmd_status() {
  local c
  for c in containerd etcd kube-apiserver kube-controller-manager kube-scheduler coredns kubelet kube-proxy kube-router; do
    if running "$c"; then echo "$c: running (pid $(cat "$(pidfile "$c")"))"; else echo "$c: stopped"; fi
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  kubeconfig) cmd_kubeconfig ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|kubeconfig|status" >&2; exit 2 ;;
esac
