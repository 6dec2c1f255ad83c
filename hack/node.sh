#!/usr/bin/env bash
# The real node of the local cluster: `pilotboat-real` (label type=real, no taint) beside the
# kwok nodes, running real pods with containerd, runc and the CNI plugins from Debian, and the
# kubelet and kube-proxy built from the same Kubernetes release as the control plane.
#
#   hack/node.sh up        start containerd, import images (hack/images.sh), start kubelet and
#                          kube-proxy, wait until the node is Ready; needs hack/cluster.sh up
#   hack/node.sh runtime   only containerd with the CNI config and the images (no cluster needed)
#   hack/node.sh down      stop everything and leave nothing behind: no process, mount, bridge,
#                          veth, iptables chain, cgroup or sysctl change of ours; deletes the
#                          Node object when the API server answers. Keeps the imported images.
#                          Prints one line per daemon it stopped (stdout); exit 0 when none ran.
#   hack/node.sh purge     down, then also delete .state/node (images, certificates)
#   hack/node.sh status    one line per component; exit 0 only when the node is Ready
#   hack/node.sh leftovers what of the node is still on the host (after down: nothing)
#
# Set up as root on Linux. State and logs: .state/node/ (logs/ for the daemons' output).
# Settings and why: hack/node/*.in and docs/local-cluster.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=node/lib.sh
source "$(dirname "$0")/node/lib.sh"
# shellcheck source=versions.env
source "$pb_repo/hack/versions.env"
# shellcheck source=../images/versions.env
source "$pb_repo/images/versions.env"

node_name=pilotboat-real
pod_cidr=10.244.0.0/24
pod_gateway=10.244.0.1
bridge=pb0
cni_bin=/usr/lib/cni
pause_image="localhost/pilotboat/pause:$PAUSE_VERSION"

S="$pb_node_state"
sock="$pb_containerd_sock"
logs="$S/logs"
pids="$S/pids"
pki="$S/pki"
k8s_bin="$pb_cache/bin/kubernetes-$KUBERNETES_VERSION"
cluster_pki="$pb_state/cluster/pki"
admin_kubeconfig="$pb_state/kubeconfig"
ctr=(ctr -a "$sock" -n k8s.io)

# Kernel settings this script or the kubelet/kube-proxy change; saved at `up`, put back at `down`.
sysctls=(
  net.ipv4.ip_forward                   # pods -> host -> pods through pb0
  net.bridge.bridge-nf-call-iptables    # bridged pod->pod traffic sees kube-proxy's DNAT
  net.bridge.bridge-nf-call-ip6tables
  net.ipv4.conf.all.route_localnet      # kube-proxy: NodePorts on 127.0.0.1
  vm.overcommit_memory                  # the kubelet's kernel tunables
  vm.panic_on_oom
  kernel.panic
  kernel.panic_on_oops
  kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes
)

log() { pb_log "node: $*"; }
die() { pb_die "node: $*"; }
kubectl() { "$k8s_bin/kubectl" --kubeconfig "$admin_kubeconfig" --request-timeout=10s "$@"; }

# --- processes ---------------------------------------------------------------------------

# A process is ours when it is one of our daemons with arguments under $S, or a containerd
# shim serving our containerd's socket; a system containerd is never touched. Any cached
# Kubernetes version: a kubelet started before KUBERNETES_VERSION changed is ours too.
is_ours() {
  local cmd
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline")" || return 1
  case "$cmd" in
    "containerd --config $S/"*) return 0 ;;
    "$pb_cache/bin/kubernetes-"*/kubelet" "*"$S/"* | "$pb_cache/bin/kubernetes-"*/kube-proxy" "*"$S/"*) return 0 ;;
    *containerd-shim*"-address $sock "*) return 0 ;;
    *) return 1 ;;
  esac
}

pid_of() {  # pid_of NAME: the pid of a running daemon, or fails
  local pid
  pid="$(cat "$pids/$1.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && is_ours "$pid" && echo "$pid"
}

start() {  # start NAME COMMAND...: detached, so it outlives make or pytest
  local name=$1
  shift
  pid_of "$name" >/dev/null && return 0
  log "starting $name"
  setsid nohup "$@" >>"$logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$pids/$name.pid"
}

# wait_until SECONDS WHAT NAME COMMAND...: retries COMMAND; fails early if daemon NAME died
wait_until() {
  local deadline=$((SECONDS + $1)) what=$2 name=$3
  shift 3
  until "$@"; do
    # Gone, not merely "not ours yet": right after the fork the pid still runs the shell
    # that is about to exec the daemon.
    if ! kill -0 "$(cat "$pids/$name.pid" 2>/dev/null)" 2>/dev/null; then
      tail -n 30 "$logs/$name.log" >&2 || true
      die "$name exited while waiting for $what; log: $logs/$name.log"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "timed out waiting for $what; log: $logs/$name.log"
    sleep 0.5
  done
}

stop() {  # stop NAME [SECONDS]: SIGTERM, SIGKILL after the grace period
  local name=$1 grace=${2:-15} pid deadline
  pid="$(pid_of "$name")" || { rm -f "$pids/$name.pid"; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + grace))
  while is_ours "$pid"; do
    if [ "$SECONDS" -ge "$deadline" ]; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.3; break; fi
    sleep 0.2
  done
  rm -f "$pids/$name.pid"
  echo "node: stopped $name (pid $pid)"
}

our_processes() {
  local dir
  for dir in /proc/[0-9]*; do is_ours "${dir#/proc/}" && echo "${dir#/proc/}"; done
  return 0
}

# --- host ----------------------------------------------------------------------------------

# Without CAP_SYS_RESOURCE (this VM's root lacks it) no process can lower its oom_score_adj.
has_cap_sys_resource() {
  local eff
  eff="$(awk '$1 == "CapEff:" {print $2}' /proc/self/status)"
  (( (16#$eff >> 24) & 1 ))
}

systemd_is_init() { [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; }

host_ip() {  # the address of the default route's interface: the node's InternalIP
  ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") {print $(i + 1); exit}}'
}

default_mtu() {
  local dev
  dev="$(ip -4 route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')"
  awk '{print ($1 > 1500 ? 1500 : $1)}' "/sys/class/net/${dev:-lo}/mtu" 2>/dev/null
}

prepare_host() {
  [ "$(id -u)" -eq 0 ] || die "run as root (containerd, kubelet and kube-proxy need it)"
  pb_ensure_packages containerd runc containernetworking-plugins buildah iptables debootstrap \
    mmdebstrap conntrack iproute2 kmod openssl curl gcc libc6-dev
  # br_netfilter: without it bridged pod->Service->pod traffic skips kube-proxy's rules.
  if [ ! -d /proc/sys/net/bridge ]; then
    modprobe br_netfilter 2>/dev/null ||
      log "warning: br_netfilter cannot be loaded; a pod cannot reach a Service backed by a pod on the same bridge"
  fi
  if [ ! -s "$S/sysctl.orig" ]; then
    local key
    for key in "${sysctls[@]}"; do
      [ -e "/proc/sys/${key//.//}" ] && echo "$key=$(sysctl -n "$key")"
    done >"$S/sysctl.orig"
  fi
  sysctl -qw net.ipv4.ip_forward=1
  if [ -d /proc/sys/net/bridge ]; then
    sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
  fi
  # The pod bridge with its gateway address, before any pod: the CNI bridge plugin would make
  # it only with the first pod, and servers on the host that pods reach at the gateway
  # (PostgreSQL, CoreDNS) must be able to listen there as soon as the node is up. The plugin
  # takes the bridge as it finds it; `down` deletes it.
  ip link show "$bridge" >/dev/null 2>&1 ||
    ip link add "$bridge" mtu "$(default_mtu)" type bridge
  ip -4 addr show dev "$bridge" | grep -q "inet $pod_gateway/" ||
    ip addr add "$pod_gateway/${pod_cidr#*/}" dev "$bridge"
  ip link set "$bridge" up
  # Two paths the kubelet uses whatever its --root-dir: /var/log/containers (links to the
  # pod logs) and /var/lib/kubelet/device-plugins (the device plugin socket). `down` removes
  # them again when they were not there before.
  [ -d /var/log/containers ] || touch "$S/created-var-log-containers"
  [ -d /var/lib/kubelet ] || touch "$S/created-var-lib-kubelet"
}

render() {  # render TEMPLATE OUT: replaces @NAME@ placeholders
  local cgroup_driver=cgroupfs systemd_cgroup=false apparmor=true restrict_oom=false
  has_cap_sys_resource || restrict_oom=true
  if systemd_is_init; then cgroup_driver=systemd systemd_cgroup=true; fi
  [ -d /sys/kernel/security/apparmor ] && apparmor=false
  sed -e "s|@STATE@|$S|g" -e "s|@CONTAINERD@|$S/containerd|g" -e "s|@SOCK@|$sock|g" \
    -e "s|@PAUSE_IMAGE@|$pause_image|g" -e "s|@CNI_BIN@|$cni_bin|g" \
    -e "s|@SYSTEMD_CGROUP@|$systemd_cgroup|g" -e "s|@CGROUP_DRIVER@|$cgroup_driver|g" \
    -e "s|@DISABLE_APPARMOR@|$apparmor|g" -e "s|@RESTRICT_OOM_SCORE_ADJ@|$restrict_oom|g" \
    -e "s|@OOM_SCORE_ADJ@|$(has_cap_sys_resource && echo -999 || echo 0)|g" -e "s|@POD_CIDR@|$pod_cidr|g" \
    -e "s|@POD_GATEWAY@|$pod_gateway|g" -e "s|@MTU@|$(default_mtu)|g" \
    "$pb_repo/hack/node/$1" >"$2.tmp"
  mv "$2.tmp" "$2"
}

# --- containerd and images -------------------------------------------------------------------

start_runtime() {
  mkdir -p "$S/containerd" "$S/cni/net.d" "$S/cni/ipam"
  render containerd.toml.in "$S/containerd/config.toml"
  render cni.conflist.in "$S/cni/net.d/10-pilotboat.conflist"
  if ! pid_of containerd >/dev/null && pb_containerd_up; then
    die "a containerd this script did not start serves $sock; stop it first"
  fi
  start containerd containerd --config "$S/containerd/config.toml" --log-level warn
  wait_until 30 "containerd" containerd pb_containerd_up
  PILOTBOAT_CONTAINERD_ADDRESS="$sock" "$pb_repo/hack/images.sh" import
}

# --- certificates and kubeconfigs ------------------------------------------------------------

make_cert() {  # make_cert NAME SUBJECT EXT_KEY_USAGE [SAN]: NAME.{key,crt} signed by the cluster CA
  local name=$1 subject=$2 eku=$3 san=${4:-}
  local ext=("basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment"
    "extendedKeyUsage=$eku" "authorityKeyIdentifier=keyid")
  [ -n "$san" ] && ext+=("subjectAltName=$san")
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/$name.key" 2>/dev/null)
  openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr"
  openssl x509 -req -sha256 -days 3650 -in "$pki/$name.csr" \
    -CA "$cluster_pki/ca.crt" -CAkey "$cluster_pki/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -extfile <(printf '%s\n' "${ext[@]}") -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr"
}

make_pki() {  # (re)made when the cluster CA or the node's address changed
  local ip=$1 stamp
  stamp="$(sha256sum <"$cluster_pki/ca.crt" | cut -c1-64) $ip"
  [ "$(cat "$pki/stamp" 2>/dev/null)" = "$stamp" ] && return 0
  log "making the node's certificates (cluster CA, $ip)"
  rm -rf "$pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  cp "$cluster_pki/ca.crt" "$pki/ca.crt"
  # The Node authorizer and NodeRestriction know a kubelet by this name and group.
  make_cert kubelet "/O=system:nodes/CN=system:node:$node_name" clientAuth
  make_cert kubelet-serving "/O=system:nodes/CN=system:node:$node_name" serverAuth \
    "DNS:$node_name,IP:$ip,IP:127.0.0.1"
  # Bound to the system:node-proxier ClusterRole by a default binding.
  make_cert kube-proxy "/CN=system:kube-proxy" clientAuth
  echo "$stamp" >"$pki/stamp"
}

write_kubeconfig() {  # write_kubeconfig FILE CERT_NAME
  local server
  server="$(awk '$1 == "server:" {print $2; exit}' "$admin_kubeconfig")"
  (umask 077 && cat >"$1.tmp") <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pilotboat
  cluster:
    server: ${server:-https://127.0.0.1:6443}
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: pilotboat
  context: {cluster: pilotboat, user: $2}
current-context: pilotboat
EOF
  mv "$1.tmp" "$1"
}

# --- kubelet and kube-proxy ------------------------------------------------------------------

node_ready() {
  [ "$(kubectl get node "$node_name" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

healthz() { curl -fsS --max-time 2 "$1" >/dev/null 2>&1; }

start_kubelet() {
  local ip=$1
  mkdir -p "$S/kubelet" "$S/pod-logs" "$S/volume-plugins"
  render kubelet-config.yaml.in "$S/kubelet-config.yaml.new"
  # A running kubelet keeps the config it started with: restart it when the config changed
  # (its pods keep running).
  if ! cmp -s "$S/kubelet-config.yaml.new" "$S/kubelet-config.yaml"; then stop kubelet; fi
  mv "$S/kubelet-config.yaml.new" "$S/kubelet-config.yaml"
  write_kubeconfig "$S/kubelet.kubeconfig" kubelet
  start kubelet "$k8s_bin/kubelet" \
    --config="$S/kubelet-config.yaml" \
    --kubeconfig="$S/kubelet.kubeconfig" \
    --root-dir="$S/kubelet" \
    --hostname-override="$node_name" \
    --node-ip="$ip" \
    --node-labels=type=real \
    --v=1
  wait_until 60 "the kubelet's healthz" kubelet healthz http://127.0.0.1:10248/healthz
  wait_until 120 "node $node_name to be Ready" kubelet node_ready
}

start_kube_proxy() {
  render kube-proxy-config.yaml.in "$S/kube-proxy-config.yaml"
  write_kubeconfig "$S/kube-proxy.kubeconfig" kube-proxy
  start kube-proxy "$k8s_bin/kube-proxy" --config="$S/kube-proxy-config.yaml" --v=1
  # healthz answers 200 once the first full sync of the rules is done
  wait_until 60 "kube-proxy's first sync" kube-proxy healthz http://127.0.0.1:10256/healthz
}

cluster_up() {
  [ -s "$admin_kubeconfig" ] && [ -s "$cluster_pki/ca.key" ] && kubectl get --raw /readyz >/dev/null 2>&1
}

# --- commands --------------------------------------------------------------------------------

cmd_runtime() {
  # A unix socket path has at most 107 bytes; containerd adds ".ttrpc" to this one.
  [ ${#sock} -le 100 ] || die "containerd socket path too long (${#sock} > 100): $sock; use a shorter PILOTBOAT_STATE"
  mkdir -p "$S" "$logs" "$pids"
  exec 9>"$S/.lock"
  flock 9
  prepare_host
  start_runtime
}

cmd_up() {
  local start_time=$SECONDS ip
  cmd_runtime
  cluster_up || die "the cluster is not up (no answer from the API server with $admin_kubeconfig); run hack/cluster.sh up"
  "$pb_repo/hack/build-k8s.sh" node
  ip="$(host_ip)"
  [ -n "$ip" ] || ip=127.0.0.1
  make_pki "$ip"
  start_kubelet "$ip"
  start_kube_proxy
  log "node $node_name is Ready ($ip, pods $pod_cidr on $bridge) after $((SECONDS - start_time))s; logs: $logs/"
}

kill_pods() {  # every container of our containerd, sandboxes included
  pb_containerd_up || return 0
  local ids id deadline=$((SECONDS + 15))
  ids="$("${ctr[@]}" tasks ls -q 2>/dev/null)" || true
  for id in $ids; do "${ctr[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  # containerd's CRI plugin deletes a sandbox's task itself when it sees it exit; delete
  # whatever is left until none is.
  while ids="$("${ctr[@]}" tasks ls -q 2>/dev/null)" && [ -n "$ids" ] && [ "$SECONDS" -lt "$deadline" ]; do
    for id in $ids; do "${ctr[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true; done
    sleep 0.2
  done
  ids="$("${ctr[@]}" containers ls -q 2>/dev/null)" || true
  # shellcheck disable=SC2086
  [ -z "$ids" ] || "${ctr[@]}" containers delete $ids >/dev/null 2>&1 || true
  [ -z "$ids" ] || echo "node: stopped and removed the pods' containers ($(wc -w <<<"$ids"))"
}

pod_cgroups() {  # the kubelet's pod cgroup trees, in every hierarchy
  find /sys/fs/cgroup -maxdepth 2 -type d \( -name kubepods -o -name kubepods.slice \) 2>/dev/null
}

kill_leftovers() {  # processes still in pod cgroups, and our daemons or shims not yet gone
  local left _
  for _ in 1 2 3; do
    left="$( (our_processes; pod_cgroups | while read -r d; do
      find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null; done) | sort -u)"
    [ -z "$left" ] && return 0
    echo "node: killed leftover processes of the node and its pods (pid ${left//$'\n'/ })"
    # shellcheck disable=SC2086
    kill -KILL $left 2>/dev/null || true
    sleep 0.5
  done
}

unmount_all() {  # everything mounted under $S, deepest first
  local m _
  for _ in 1 2 3; do
    m="$(awk -v p="$S/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r)"
    [ -z "$m" ] && return 0
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done <<<"$m"
  done
}

cleanup_network() {
  local link
  for link in $(ip -o link show master "$bridge" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    ip link delete "$link" 2>/dev/null || true
  done
  ip link delete "$bridge" 2>/dev/null || true
}

# cleanup_iptables: the rules of kube-proxy, the kubelet and the CNI plugins. All their chains
# are named KUBE-* or CNI-*: drop the rules that jump to them, then flush and delete them.
cleanup_iptables() {
  local cmd table rules rule chains chain
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for table in filter nat mangle raw; do
      rules="$("$cmd" -w 5 -t "$table" -S 2>/dev/null)" || continue
      while read -r rule; do
        [ -n "$rule" ] || continue
        eval "\"$cmd\" -w 5 -t $table -D ${rule#-A }" 2>/dev/null || true
      done < <(grep -E '^-A ' <<<"$rules" | grep -vE '^-A (KUBE-|CNI-)' | grep -E -- '-j (KUBE-|CNI-)' || true)
      chains="$(awk '$1 == "-N" && $2 ~ /^(KUBE-|CNI-)/ {print $2}' <<<"$rules")"
      for chain in $chains; do "$cmd" -w 5 -t "$table" -F "$chain" 2>/dev/null || true; done
      for chain in $chains; do "$cmd" -w 5 -t "$table" -X "$chain" 2>/dev/null || true; done
    done
  done
}

restore_sysctls() {
  [ -s "$S/sysctl.orig" ] || return 0
  local line
  while read -r line; do sysctl -qw "$line" 2>/dev/null || true; done <"$S/sysctl.orig"
  rm -f "$S/sysctl.orig"
}

remove_cgroups() {
  local d
  for d in $(pod_cgroups); do find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; done
}

remove_state() {
  local f
  for f in /var/log/containers/*; do
    [ -L "$f" ] && [[ "$(readlink "$f")" == "$S/"* ]] && rm -f "$f"
  done
  if [ -e "$S/created-var-log-containers" ]; then
    rmdir /var/log/containers 2>/dev/null || true
    rm -f "$S/created-var-log-containers"
  fi
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  if [ -e "$S/created-var-lib-kubelet" ]; then
    rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
    rm -f "$S/created-var-lib-kubelet"
  fi
  # containerd 1.6 puts shim sockets under /run/containerd/s whatever its state dir; the
  # shims remove theirs, the directories go when empty.
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true
  # Only what belongs to the pods of this run: images (containerd/root) and certificates stay.
  rm -rf --one-file-system "$S/kubelet" "$S/containerd/state" "$S/containerd/runc" "$sock" "$sock.ttrpc" \
    "$S/cni/ipam" "$S/pod-logs" "$S/volume-plugins" "$pids"
}

cmd_down() {
  mkdir -p "$S" "$pids" "$logs"
  exec 9>"$S/.lock"
  flock 9
  stop kube-proxy
  stop kubelet 20
  kill_pods
  stop containerd
  kill_leftovers
  unmount_all
  cleanup_network
  # kube-proxy's own cleanup (iptables, ipvs, nftables), then ours for whatever is left
  if [ -x "$k8s_bin/kube-proxy" ]; then
    "$k8s_bin/kube-proxy" --cleanup >>"$logs/kube-proxy.log" 2>&1 || true
  fi
  cleanup_iptables
  restore_sysctls
  remove_cgroups
  remove_state
  # The Node object would stay NotReady with its pods stuck; the next `up` registers anew.
  if [ -s "$admin_kubeconfig" ] && kubectl get node "$node_name" >/dev/null 2>&1; then
    if kubectl delete node "$node_name" --wait=false >/dev/null 2>&1; then
      echo "node: deleted the Node object $node_name"
    fi
  fi
  local left
  left="$(our_processes)"
  [ -z "$left" ] || die "still running: ${left//$'\n'/ }"
}

cmd_leftovers() {  # prints what of the node is still on the host; exit 0 only when nothing
  local out=() p cmd table
  p="$(our_processes)"; [ -z "$p" ] || out+=("processes: ${p//$'\n'/ }")
  p="$(pgrep -f 'containerd-shim-runc-v2 .*-address '"$sock" || true)"; [ -z "$p" ] || out+=("shims: ${p//$'\n'/ }")
  p="$(awk -v p="$S/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo)"
  [ -z "$p" ] || out+=("mounts: ${p//$'\n'/ }")
  p="$(ip -o link show 2>/dev/null | awk -F': ' '$2 == "'$bridge'" || $2 ~ /^veth/ {print $2}')"
  [ -z "$p" ] || out+=("links: ${p//$'\n'/ }")
  for cmd in iptables ip6tables; do
    for table in filter nat mangle raw; do
      p="$("$cmd" -w 5 -t "$table" -S 2>/dev/null | grep -E -- '(KUBE-|CNI-)' || true)"
      [ -z "$p" ] || out+=("$cmd -t $table: $(wc -l <<<"$p") rules/chains")
    done
  done
  p="$(pod_cgroups)"; [ -z "$p" ] || out+=("cgroups: ${p//$'\n'/ }")
  p="$(find /var/log/containers -maxdepth 1 -lname "$S/*" 2>/dev/null || true)"; [ -z "$p" ] || out+=("log links: $(wc -l <<<"$p")")
  [ ! -e /var/lib/kubelet/device-plugins/kubelet.sock ] || out+=("/var/lib/kubelet/device-plugins/kubelet.sock")
  [ ! -s "$S/sysctl.orig" ] || out+=("sysctls not restored: $S/sysctl.orig")
  [ ${#out[@]} -eq 0 ] && { echo "nothing of the node is left"; return 0; }
  printf '%s\n' "${out[@]}"
  return 1
}

cmd_status() {
  local name pid ok=0
  for name in containerd kubelet kube-proxy; do
    if pid="$(pid_of "$name")"; then
      printf '%-12s running (pid %s)\n' "$name" "$pid"
    else
      printf '%-12s stopped\n' "$name"
      ok=1
    fi
  done
  if node_ready; then
    printf '%-12s %s Ready\n' node "$node_name"
  else
    printf '%-12s %s not Ready\n' node "$node_name"
    ok=1
  fi
  return "$ok"
}

case "${1:-}" in
  up) cmd_up ;;
  runtime) cmd_runtime ;;
  down) cmd_down ;;
  purge) cmd_down; rm -rf --one-file-system "$S"; log "purged $S" ;;
  status) cmd_status ;;
  leftovers) cmd_leftovers ;;
  *) echo "usage: $0 up | runtime | down | purge | status | leftovers" >&2; exit 2 ;;
esac
