#!/usr/bin/env bash
# cluster.sh — a real single-node Kubernetes cluster for kubectl-tp's end-to-end tests.
#
#   tests/cluster/cluster.sh up       install, build (cached), start; reuse a healthy running cluster
#   tests/cluster/cluster.sh down     stop everything we started and remove our state, mounts, links, rules
#   tests/cluster/cluster.sh status   say what runs; exit 0 only when the cluster is healthy
#   tests/cluster/cluster.sh images   (re)build and load the podshim and test-app images only
#   tests/cluster/cluster.sh env      print E2E_KUBECONFIG=… for the running cluster
#
# It runs as root on a Debian machine and uses only Debian packages and the Go module proxy:
# etcd, containerd and runc from Debian; kube-* and CoreDNS built from source into a cache keyed by
# version ($KTP_CACHE, default /var/cache/kubectl-tp); images are OCI layouts of our own static binaries.
#
# Bring your own cluster: when E2E_KUBECONFIG names a kubeconfig that is not ours, `up` starts nothing;
# it only loads the images with $E2E_IMAGE_LOADER (a command run once per image tarball, e.g.
# 'kind load image-archive'), and `down` does nothing.
#
# What it leaves out: multi-node clusters, a cloud provider, anything but IPv4, and any traffic off the
# machine (CoreDNS has no forward plugin; the Service CIDR is routed to an empty bridge).
set -euo pipefail

K8S_VERSION=v1.34.4
COREDNS_VERSION=v1.14.7
ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${KTP_CACHE:-/var/cache/kubectl-tp}
STATE=${KTP_STATE:-/var/lib/kubectl-tp-e2e}
RUN=/run/kubectl-tp-e2e
PKI=$STATE/pki
LOGS=$STATE/logs
KBIN=$CACHE/k8s-$K8S_VERSION
CBIN=$CACHE/coredns-$COREDNS_VERSION
CTR_SOCK=$RUN/containerd.sock
ADMIN_KUBECONFIG=$STATE/admin.kubeconfig
NODE_NAME=tp-node
POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/16
DNS_IP=10.96.0.10
# Idle streams (port-forward, exec) are cut after this long by the kubelet and containerd, as on a
# cluster hardened per the CIS benchmark; TestIdleStreamsSurvive proves sessions do not depend on more.
STREAM_IDLE_TIMEOUT=30s
SINK_BRIDGE=tp-sink
CNI_BRIDGE=cni0
CNI_CONF_DIR=$STATE/cni/net.d
export PATH=$KBIN:$CBIN:/usr/sbin:/sbin:$PATH

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

byo() { [[ -n ${E2E_KUBECONFIG:-} && $E2E_KUBECONFIG != "$ADMIN_KUBECONFIG" ]]; }

node_ip() {
  local dev ip
  dev=$(ip -4 route show default 2>/dev/null | awk '{for(i=1;i<=NF;i++) if($i=="dev"){print $(i+1); exit}}')
  if [[ -n $dev ]]; then ip=$(ip -4 -o addr show dev "$dev" scope global | awk '{print $4}' | cut -d/ -f1 | head -n1); fi
  [[ -n ${ip:-} ]] || ip=$(ip -4 -o addr show scope global | awk '{print $4}' | cut -d/ -f1 | head -n1)
  [[ -n ${ip:-} ]] || die "no global IPv4 address on this machine: the node needs one (ip -4 addr)"
  echo "$ip"
}

# ---------------------------------------------------------------------------------------- install
install_packages() {
  local need=()
  command -v containerd >/dev/null || need+=(containerd)
  command -v runc >/dev/null || need+=(runc)
  command -v etcd >/dev/null || need+=(etcd-server)
  [[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
  command -v iptables >/dev/null || need+=(iptables)
  command -v conntrack >/dev/null || need+=(conntrack)
  command -v ip >/dev/null || need+=(iproute2)
  command -v openssl >/dev/null || need+=(openssl)
  command -v jq >/dev/null || need+=(jq)
  command -v dig >/dev/null || need+=(dnsutils)
  command -v curl >/dev/null || need+=(curl)
  command -v mount.nfs >/dev/null || true
  command -v socat >/dev/null || need+=(socat)
  command -v nsenter >/dev/null || need+=(util-linux)
  if ((${#need[@]})); then
    log "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d keeps Debian from starting its own etcd/containerd: we run ours.
    local policy=/usr/sbin/policy-rc.d had_policy=0
    [[ -e $policy ]] && had_policy=1
    ((had_policy)) || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; }
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    ((had_policy)) || rm -f "$policy"
  fi
}

# ------------------------------------------------------------------------------------------ build
KUBE_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34 -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=34"
KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

build_binaries() {
  local missing=0 c
  for c in "${KUBE_CMDS[@]}"; do [[ -x $KBIN/$c ]] || missing=1; done
  if ((missing)); then
    log "building Kubernetes $K8S_VERSION into $KBIN (cold: about 10 minutes on 2 cores)"
    mkdir -p "$KBIN.tmp"
    (cd "$ROOT_DIR/tests/cluster/kubebuild" &&
      CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$KUBE_LDFLAGS" -o "$KBIN.tmp/" \
        $(printf 'k8s.io/kubernetes/cmd/%s ' "${KUBE_CMDS[@]}"))
    mkdir -p "$KBIN" && mv "$KBIN.tmp"/* "$KBIN/" && rmdir "$KBIN.tmp"
  fi
  if [[ ! -x $CBIN/coredns ]]; then
    log "building CoreDNS $COREDNS_VERSION into $CBIN (cold: about 5 minutes)"
    mkdir -p "$CBIN"
    CGO_ENABLED=0 GOBIN=$CBIN go install -trimpath -ldflags '-s -w' "github.com/coredns/coredns@$COREDNS_VERSION"
  fi
  # Our own small binaries are cheap to rebuild and follow the working tree.
  mkdir -p "$STATE/bin"
  (cd "$ROOT_DIR" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$STATE/bin/" \
    ./tests/cluster/pause ./tests/testapp ./cmd/ociimage)
}

# ----------------------------------------------------------------------------------------- images
ctr_() { ctr --address "$CTR_SOCK" -n k8s.io "$@"; }

build_images() {
  local out=$STATE/images
  mkdir -p "$out"
  "$STATE/bin/ociimage" -ref registry.k8s.io/pause:3.6 -out "$out/pause.tar" -user 65535:65535 \
    -entrypoint /pause "$STATE/bin/pause:/pause" >/dev/null
  "$STATE/bin/ociimage" -ref "kubectl-tp.local/coredns:$COREDNS_VERSION" -out "$out/coredns.tar" -user 0:0 \
    -entrypoint /coredns "$CBIN/coredns:/coredns" >/dev/null
  "$STATE/bin/ociimage" -ref kubectl-tp.local/testapp:e2e -out "$out/testapp.tar" \
    -entrypoint /testapp "$STATE/bin/testapp:/testapp" >/dev/null
  (cd "$ROOT_DIR" && make -s image >/dev/null)
  cp "$ROOT_DIR/bin/podshim-image.tar" "$out/podshim.tar"
}

load_images() {
  local f
  for f in "$STATE"/images/*.tar; do
    if byo; then
      [[ $(basename "$f") == pause.tar || $(basename "$f") == coredns.tar ]] && continue
      [[ -n ${E2E_IMAGE_LOADER:-} ]] || die "E2E_KUBECONFIG points at your own cluster: set E2E_IMAGE_LOADER (e.g. 'kind load image-archive') so the images can be loaded"
      $E2E_IMAGE_LOADER "$f" >/dev/null
    else
      ctr_ images import --no-unpack=false "$f" >/dev/null 2>&1 || ctr_ images import "$f" >/dev/null
    fi
  done
}

# -------------------------------------------------------------------------------------------- pki
gen_pki() {
  [[ -f $PKI/.done ]] && return 0
  local ip=$1
  log "generating PKI in $PKI"
  rm -rf "$PKI" && mkdir -p "$PKI" && chmod 700 "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=kubectl-tp-e2e-ca" 2>/dev/null
    cat >apiserver.ext <<EOF
subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:10.96.0.1,IP:$ip
extendedKeyUsage=serverAuth
keyUsage=digitalSignature,keyEncipherment
EOF
    cert() { # name subject extfile
      openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$1.crt" -days 3650 -extfile "$3" 2>/dev/null
      rm -f "$1.csr"
    }
    printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' >client.ext
    cert apiserver "/CN=kube-apiserver" apiserver.ext
    cert admin "/O=system:masters/CN=kubectl-tp-e2e-admin" client.ext
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    touch .done
  )
}

write_kubeconfig() { # file server
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubectl-tp-e2e
  cluster:
    server: $2
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/admin.crt")
    client-key-data: $(base64 -w0 <"$PKI/admin.key")
contexts:
- name: kubectl-tp-e2e
  context: {cluster: kubectl-tp-e2e, user: admin, namespace: default}
current-context: kubectl-tp-e2e
EOF
  chmod 600 "$1"
}

# ------------------------------------------------------------------------------------- processes
pidfile() { echo "$RUN/$1.pid"; }
running() { local p; p=$(cat "$(pidfile "$1")" 2>/dev/null) && [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }

start() { # name cmd...
  local name=$1; shift
  running "$name" && return 0
  mkdir -p "$LOGS" "$RUN"
  # setsid: the daemon outlives this script; its own process group, so a Ctrl-C here does not stop it.
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$(pidfile "$name")"
}

stop() { # name: SIGTERM, then SIGKILL after 10 s, by the PID we recorded
  local name=$1 p i
  p=$(cat "$(pidfile "$name")" 2>/dev/null) || return 0
  if [[ -n $p ]] && kill -0 "$p" 2>/dev/null; then
    kill "$p" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  fi
  rm -f "$(pidfile "$name")"
}

wait_for() { # seconds description cmd...
  local secs=$1 what=$2 i; shift 2
  for ((i = 0; i < secs * 4; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  die "timed out after ${secs}s waiting for $what (logs: $LOGS)"
}

kc() { kubectl --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

# ------------------------------------------------------------------------------------------ start
write_configs() {
  local ip=$1
  mkdir -p "$STATE"/{containerd,kubelet,etcd} "$CNI_CONF_DIR" "$RUN"
  cat >"$STATE/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd"
[grpc]
  address = "$CTR_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  # Hardened like a CIS-benchmark cluster: idle port-forward/exec streams are cut after 30 s
  # (the default is 4 h, which would let a session that depends on it pass every test).
  stream_idle_timeout = "$STREAM_IDLE_TIMEOUT"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CNI_CONF_DIR"
EOF
  cat >"$CNI_CONF_DIR/10-kubectl-tp.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kubectl-tp-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$STATE/cni/ipam"}},
    {"type": "loopback"}
  ]
}
EOF
  cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupsPerQOS: true
enforceNodeAllocatable: []
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
containerRuntimeEndpoint: unix://$CTR_SOCK
podCIDR: $POD_CIDR
readOnlyPort: 0
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
resolvConf: /etc/resolv.conf
syncFrequency: 5s
fileCheckFrequency: 5s
streamingConnectionIdleTimeout: $STREAM_IDLE_TIMEOUT
EOF
  cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $ADMIN_KUBECONFIG}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

setup_network() {
  modprobe br_netfilter 2>/dev/null || true
  modprobe overlay 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward=1
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # Service traffic that kube-proxy does not rewrite goes to an empty bridge, never off the machine.
  ip link show "$SINK_BRIDGE" >/dev/null 2>&1 || ip link add "$SINK_BRIDGE" type bridge
  ip link set "$SINK_BRIDGE" up
  ip route replace "$SVC_CIDR" dev "$SINK_BRIDGE"
}

# config_fingerprint identifies what this script starts and how (the config writer, the start
# sequence and the settings they use): a running cluster started from another fingerprint is
# restarted, so a change such as a new kubelet setting takes effect on the next cluster-up.
config_fingerprint() {
  { declare -f write_configs cmd_up; echo "$STREAM_IDLE_TIMEOUT $POD_CIDR $SVC_CIDR $DNS_IP"; } | sha256sum | cut -c1-16
}

healthy() {
  [[ -f $ADMIN_KUBECONFIG ]] || return 1
  [[ $(cat "$STATE/config-fingerprint" 2>/dev/null) == "$(config_fingerprint)" ]] || return 1
  local c
  for c in containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do running "$c" || return 1; done
  kc get --raw /readyz >/dev/null 2>&1 || return 1
  [[ $(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]] || return 1
  dns_answers
}

dns_answers() { [[ $(dig +short +time=1 +tries=1 @"$DNS_IP" kubernetes.default.svc.cluster.local A 2>/dev/null) == 10.96.0.1 ]]; }

cmd_up() {
  if byo; then
    log "E2E_KUBECONFIG=$E2E_KUBECONFIG is your own cluster: starting nothing, loading images"
    kubectl --kubeconfig "$E2E_KUBECONFIG" get --raw /readyz >/dev/null || die "the cluster in E2E_KUBECONFIG=$E2E_KUBECONFIG does not answer /readyz"
    install_packages; build_binaries; build_images; load_images
    return 0
  fi
  [[ $(id -u) == 0 ]] || die "cluster-up needs root (it starts containerd, kubelet and changes iptables); run it with sudo"
  install_packages
  build_binaries
  if healthy; then
    log "cluster already running and healthy: reusing it"
    build_images; load_images
    echo "E2E_KUBECONFIG=$ADMIN_KUBECONFIG"
    return 0
  fi
  log "no healthy cluster with this configuration: clearing leftovers of an earlier run"
  cmd_down quiet
  local ip; ip=$(node_ip)
  gen_pki "$ip"
  write_kubeconfig "$ADMIN_KUBECONFIG" "https://127.0.0.1:6443"
  write_configs "$ip"
  setup_network

  log "starting containerd, etcd, kube-apiserver (node IP $ip)"
  start containerd containerd --config "$STATE/containerd.toml"
  start etcd etcd --name tp --data-dir "$STATE/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster tp=http://127.0.0.1:2380
  wait_for 30 etcd curl -sf http://127.0.0.1:2379/health
  start kube-apiserver kube-apiserver --etcd-servers=http://127.0.0.1:2379 \
    --advertise-address="$ip" --bind-address=0.0.0.0 --secure-port=6443 \
    --service-cluster-ip-range="$SVC_CIDR" --allow-privileged=true \
    --authorization-mode=Node,RBAC --client-ca-file="$PKI/ca.crt" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/admin.crt" --kubelet-client-key="$PKI/admin.key" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --profiling=false
  wait_for 90 kube-apiserver kc get --raw /readyz
  wait_for 30 containerd ctr_ version

  log "loading images, starting controller-manager, scheduler, kubelet, kube-proxy"
  build_images
  load_images
  start kube-controller-manager kube-controller-manager --kubeconfig="$ADMIN_KUBECONFIG" \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --leader-elect=false --use-service-account-credentials=true --profiling=false
  start kube-scheduler kube-scheduler --kubeconfig="$ADMIN_KUBECONFIG" --leader-elect=false --profiling=false
  start kubelet kubelet --config="$STATE/kubelet.yaml" --kubeconfig="$ADMIN_KUBECONFIG" \
    --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" --node-ip="$ip" \
    --hostname-override="$NODE_NAME"
  start kube-proxy kube-proxy --config="$STATE/kube-proxy.yaml"
  wait_for 90 "node $NODE_NAME Ready" node_ready

  log "deploying CoreDNS"
  sed "s|@IMAGE@|kubectl-tp.local/coredns:$COREDNS_VERSION|; s|@DNS_IP@|$DNS_IP|" \
    "$ROOT_DIR/tests/cluster/coredns.yaml" | kc apply -f - >/dev/null
  wait_for 120 "CoreDNS answering at $DNS_IP" dns_answers
  config_fingerprint >"$STATE/config-fingerprint"
  log "cluster ready"
  echo "E2E_KUBECONFIG=$ADMIN_KUBECONFIG"
}

node_ready() { [[ $(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]; }

# ------------------------------------------------------------------------------------------- down
our_netns() { # network namespaces of our pod sandboxes, from containerd's own records
  [[ -S $CTR_SOCK ]] || return 0
  local id
  for id in $(ctr_ containers ls -q 2>/dev/null); do
    ctr_ containers info "$id" 2>/dev/null | jq -r '.Spec.linux.namespaces[]? | select(.type=="network") | .path // empty' 2>/dev/null
  done | sort -u
}

cmd_down() {
  local quiet=${1:-}
  if byo; then log "E2E_KUBECONFIG is your own cluster: nothing to tear down"; return 0; fi
  [[ $(id -u) == 0 ]] || die "cluster-down needs root; run it with sudo"
  [[ -n $quiet ]] || log "stopping the cluster"
  local netns=() c
  mapfile -t netns < <(our_netns)
  for c in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$c"; done
  if [[ -S $CTR_SOCK ]] && running containerd; then
    local id
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    sleep 0.5
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  # Shims that outlived their tasks: they name our containerd socket on their command line.
  local p
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "-address $CTR_SOCK"; then kill -9 "${p#/proc/}" 2>/dev/null || true; fi
  done
  stop containerd
  # Mounts below our directories, deepest first.
  local m
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(awk -v s="$STATE" -v r="$RUN" '$2 ~ "^"s || $2 ~ "^"r {print $2}' /proc/mounts | sort -r)
  for m in "${netns[@]}"; do
    [[ -n $m ]] || continue
    umount -l "$m" 2>/dev/null || true
    rm -f "$m"
  done
  # Network: our bridge, our sink route, kube-proxy's and the CNI plugin's iptables rules.
  ip link del "$CNI_BRIDGE" 2>/dev/null || true
  ip route del "$SVC_CIDR" dev "$SINK_BRIDGE" 2>/dev/null || true
  ip link del "$SINK_BRIDGE" 2>/dev/null || true
  [[ -x $KBIN/kube-proxy ]] && "$KBIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  cleanup_cni_iptables
  # cgroups kubelet made (cgroupfs driver): kubepods trees, deepest first.
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$RUN" "$STATE/etcd" "$STATE/kubelet" "$STATE/containerd" "$STATE/cni" "$STATE/pki" "$ADMIN_KUBECONFIG"
  [[ -n $quiet ]] || log "cluster down: no process, mount, netns, interface or rule of ours left"
}

cleanup_cni_iptables() {
  # Rules that jump to the chains of kubelet/kube-proxy (KUBE-*) and of our CNI network (CNI-*,
  # tagged with our network name), then those chains. `iptables -S` prints shell-quoted words.
  local table rule chain
  for table in filter nat mangle; do
    while read -r rule; do
      [[ -n $rule ]] && eval "iptables -w -t $table ${rule/-A /-D }" 2>/dev/null || true
    done < <(iptables -w -t "$table" -S 2>/dev/null | grep -E -- '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j (KUBE-|CNI-)' |
      grep -E -- '-j KUBE-|kubectl-tp-e2e' || true)
    for chain in $(iptables -w -t "$table" -S 2>/dev/null | awk '$1=="-N" && ($2 ~ /^KUBE-/ || $2 ~ /^CNI-/) {print $2}'); do
      iptables -w -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -w -t "$table" -S 2>/dev/null | awk '$1=="-N" && ($2 ~ /^KUBE-/ || $2 ~ /^CNI-/) {print $2}'); do
      iptables -w -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
}

cmd_status() {
  if byo; then
    kubectl --kubeconfig "$E2E_KUBECONFIG" get --raw /readyz >/dev/null && { echo "your own cluster ($E2E_KUBECONFIG): ready"; return 0; }
    echo "your own cluster ($E2E_KUBECONFIG): not answering"; return 1
  fi
  local c ok=0
  for c in containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
    if running "$c"; then printf '%-24s running (pid %s)\n' "$c" "$(cat "$(pidfile "$c")")"; else printf '%-24s stopped\n' "$c"; ok=1; fi
  done
  if healthy; then echo "cluster: healthy (node $NODE_NAME Ready, DNS answers)"; echo "E2E_KUBECONFIG=$ADMIN_KUBECONFIG"; else echo "cluster: not healthy"; ok=1; fi
  return $ok
}

case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  images) build_binaries; build_images; load_images ;;
  env) echo "E2E_KUBECONFIG=${E2E_KUBECONFIG:-$ADMIN_KUBECONFIG}" ;;
  *) die "usage: $0 up|down|status|images|env" ;;
esac
