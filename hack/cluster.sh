#!/usr/bin/env bash
# Runs the real local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) plus kwok for fake nodes, as detached processes of this machine.
#   hack/cluster.sh up              build if needed, start what is not running, wait ready
#   hack/cluster.sh down [--purge]  stop everything this checkout started (`make cluster-down`,
#                                   `make clean`): the demo and every operator, Prometheus
#                                   and its pod discovery, CoreDNS, PostgreSQL, metrics-server,
#                                   the real node, the control plane; one line per thing
#                                   stopped (stdout).
#                                   Exit 0 when nothing runs any more, also when nothing ran.
#                                   --purge also deletes etcd data and PKI
#   hack/cluster.sh status          one line per component; exit 0 only when all are up
set -euo pipefail

hack="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$hack/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$hack/versions.env"

state="${PILOTBOAT_STATE:-$repo/.state}"
cluster="$state/cluster"
pki="$cluster/pki"
logs="$cluster/logs"
pids="$cluster/pids"
kubeconfig="$state/kubeconfig"

cache="${PILOTBOAT_CACHE:-$HOME/.cache/pilotboat}"
k8s_bin="$cache/bin/kubernetes-$KUBERNETES_VERSION"
etcd_bin="$cache/bin/etcd-$ETCD_VERSION"
kwok_bin="$cache/bin/kwok-$KWOK_VERSION"

apiserver_port="${PILOTBOAT_APISERVER_PORT:-6443}"
# Away from the defaults (2379, 10257, 10259, 10247) so another cluster on the machine,
# or the real node joining later, never collides with these.
etcd_port="${PILOTBOAT_ETCD_PORT:-12379}"
etcd_peer_port="${PILOTBOAT_ETCD_PEER_PORT:-12380}"
kcm_port="${PILOTBOAT_KCM_PORT:-12257}"
scheduler_port="${PILOTBOAT_SCHEDULER_PORT:-12259}"
kwok_port="${PILOTBOAT_KWOK_PORT:-12247}"
fake_nodes="${PILOTBOAT_FAKE_NODES:-3}"

service_cidr="10.96.0.0/16"
service_ip="10.96.0.1"  # first IP of the service range: the `kubernetes` Service
kwok_pod_cidr="10.240.0.1/16"

components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }
kubectl() { "$k8s_bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

# --- PKI -------------------------------------------------------------------------------

new_key() { openssl genrsa -out "$1" 2048 2>/dev/null; chmod 600 "$1"; }

make_ca() {  # make_ca NAME COMMON_NAME: a self-signed CA, NAME.crt and NAME.key
  local name=$1 cn=$2
  [ -s "$pki/$name.crt" ] && [ -s "$pki/$name.key" ] && return 0
  new_key "$pki/$name.key"
  openssl req -x509 -new -sha256 -days 3650 -key "$pki/$name.key" -subj "/CN=$cn" \
    -config <(printf '%s\n' '[req]' 'distinguished_name=dn' '[dn]' '[ext]' \
      'basicConstraints=critical,CA:TRUE' 'keyUsage=critical,digitalSignature,keyCertSign,cRLSign' \
      'subjectKeyIdentifier=hash') \
    -extensions ext -out "$pki/$name.crt"
}

# make_cert CA NAME SUBJECT EXT_KEY_USAGE [SAN]: NAME.key and NAME.crt signed by CA
make_cert() {
  local ca=$1 name=$2 subject=$3 eku=$4 san=${5:-}
  [ -s "$pki/$name.crt" ] && [ -s "$pki/$name.key" ] && return 0
  local ext=("basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment"
    "extendedKeyUsage=$eku" "authorityKeyIdentifier=keyid")
  [ -n "$san" ] && ext+=("subjectAltName=$san")
  new_key "$pki/$name.key"
  openssl req -new -key "$pki/$name.key" -subj "$subject" -out "$pki/$name.csr"
  openssl x509 -req -sha256 -days 3650 -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -extfile <(printf '%s\n' "${ext[@]}") \
    -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr"
}

make_pki() {
  mkdir -p "$pki"
  chmod 700 "$pki"
  make_ca ca pilotboat-ca
  make_cert ca apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:$service_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  # For logs/exec/port-forward through a kubelet; the real node will trust this CA.
  make_cert ca apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  make_cert ca admin "/O=system:masters/CN=kubernetes-admin" clientAuth
  make_cert ca kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  make_cert ca kube-scheduler "/CN=system:kube-scheduler" clientAuth
  # kwok plays many kubelets at once, which the Node authorizer would refuse to one identity.
  make_cert ca kwok "/O=system:masters/CN=kwok-controller" serverAuth,clientAuth "IP:127.0.0.1,DNS:localhost"
  # Lets aggregated APIs (metrics-server and the like) trust the apiserver, and stops
  # controller-manager and scheduler from retrying for a missing requestheader CA.
  make_ca front-proxy-ca pilotboat-front-proxy-ca
  make_cert front-proxy-ca front-proxy-client "/CN=front-proxy-client" clientAuth
  if [ ! -s "$pki/sa.key" ] || [ ! -s "$pki/sa.pub" ]; then
    new_key "$pki/sa.key"
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  fi
}

# write_kubeconfig FILE CERT_NAME: embeds the CA and the client cert NAME.crt/NAME.key
write_kubeconfig() {
  local file=$1 name=$2
  (umask 077 && cat >"$file.tmp") <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pilotboat
  cluster:
    server: https://127.0.0.1:$apiserver_port
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$name.crt")
    client-key-data: $(base64 -w0 <"$pki/$name.key")
contexts:
- name: pilotboat
  context:
    cluster: pilotboat
    user: $name
current-context: pilotboat
EOF
  mv "$file.tmp" "$file"
}

write_kubeconfigs() {
  write_kubeconfig "$kubeconfig" admin
  local name
  for name in kube-controller-manager kube-scheduler kwok; do
    write_kubeconfig "$cluster/$name.kubeconfig" "$name"
  done
}

# --- processes -------------------------------------------------------------------------

# A process is ours when it runs a binary of the cache with arguments under $cluster, so
# a cluster under another PILOTBOAT_STATE is never touched, and one started before a
# version in versions.env changed still is.
is_ours() {
  local pid=$1 cmd
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  case "$cmd" in
    "$cache/bin/"*) [[ "$cmd" == *"$cluster/"* ]] ;;
    *) return 1 ;;
  esac
}

pid_of() {  # pid_of NAME: the pid of a running component, or fails
  local pid
  pid="$(cat "$pids/$1.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && is_ours "$pid" && echo "$pid"
}

port_busy() { ss -Hltn "sport = :$1" | grep -q .; }

# start NAME PORT COMMAND...: detached from this shell, so it outlives pytest's or make's
start() {
  local name=$1 port=$2
  shift 2
  pid_of "$name" >/dev/null && return 0
  port_busy "$port" && die "port $port is taken by another process, cannot start $name (see: ss -ltnp 'sport = :$port')"
  log "starting $name"
  # fd 9 is the `up` lock; a daemon must not inherit it, or it would hold the lock forever.
  setsid nohup "$@" >>"$logs/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$pids/$name.pid"
}

healthy() {  # healthy NAME: the component answers its health endpoint
  local tls=(--cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key")
  case "$1" in
    etcd) curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q '"health":"true"' ;;
    kube-apiserver) curl -fsS --max-time 2 "${tls[@]}" "https://127.0.0.1:$apiserver_port/readyz" >/dev/null 2>&1 ;;
    # These serve with self-signed certificates made at start, so there is no CA to check.
    kube-controller-manager) curl -fsSk --max-time 2 "https://127.0.0.1:$kcm_port/healthz" >/dev/null 2>&1 ;;
    kube-scheduler) curl -fsSk --max-time 2 "https://127.0.0.1:$scheduler_port/healthz" >/dev/null 2>&1 ;;
    kwok) curl -fsS --max-time 2 --cacert "$pki/ca.crt" "https://127.0.0.1:$kwok_port/healthz" >/dev/null 2>&1 ;;
  esac
}

up_and_healthy() { pid_of "$1" >/dev/null && healthy "$1"; }

# wait_for SECONDS WHAT COMMAND...: retries COMMAND until it succeeds
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out waiting for $what"
    sleep 0.5
  done
}

wait_healthy() {  # wait_healthy NAME SECONDS: fails early with the log tail if it died
  local name=$1 deadline=$((SECONDS + $2))
  until healthy "$name"; do
    # Gone, not merely "not ours yet": right after the fork the pid still runs the shell
    # that is about to exec the component.
    if ! kill -0 "$(cat "$pids/$name.pid" 2>/dev/null)" 2>/dev/null; then
      tail -n 30 "$logs/$name.log" >&2 || true
      die "$name exited; log: $logs/$name.log"
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "$name not healthy after $2s; log: $logs/$name.log"
    sleep 0.5
  done
}

start_etcd() {
  start etcd "$etcd_port" "$etcd_bin/etcd" \
    --name=pilotboat \
    --data-dir="$cluster/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster="pilotboat=http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster-state=new \
    --listen-metrics-urls="" \
    --log-level=warn
}

start_apiserver() {
  start kube-apiserver "$apiserver_port" "$k8s_bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address="${PILOTBOAT_APISERVER_BIND:-0.0.0.0}" \
    --kubelet-preferred-address-types=InternalIP,Hostname,ExternalIP \
    --secure-port="$apiserver_port" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range="$service_cidr" \
    --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" \
    --proxy-client-key-file="$pki/front-proxy-client.key" \
    --authorization-mode=Node,RBAC \
    --allow-privileged=true \
    --profiling=false
}

start_controller_manager() {
  local kc="$cluster/kube-controller-manager.kubeconfig"
  # No leader election: there is one instance, and after a restart it would wait out the
  # previous holder's lease first.
  start kube-controller-manager "$kcm_port" "$k8s_bin/kube-controller-manager" \
    --kubeconfig="$kc" \
    --authentication-kubeconfig="$kc" \
    --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 \
    --secure-port="$kcm_port" \
    --leader-elect=false \
    --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" \
    --cluster-signing-key-file="$pki/ca.key" \
    --service-cluster-ip-range="$service_cidr" \
    --profiling=false
}

start_scheduler() {
  local kc="$cluster/kube-scheduler.kubeconfig"
  start kube-scheduler "$scheduler_port" "$k8s_bin/kube-scheduler" \
    --kubeconfig="$kc" \
    --authentication-kubeconfig="$kc" \
    --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 \
    --secure-port="$scheduler_port" \
    --leader-elect=false \
    --profiling=false
}

start_kwok() {
  # kwok also reads ~/.kwok/kwok.yaml when it exists; a private HOME keeps a developer's
  # own kwok configuration out, so kwok runs its built-in stages (pods become Ready).
  mkdir -p "$cluster/kwok-home"
  start kwok "$kwok_port" env HOME="$cluster/kwok-home" "$kwok_bin/kwok" \
    --kubeconfig="$cluster/kwok.kubeconfig" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 \
    --cidr="$kwok_pod_cidr" \
    --node-ip=127.0.0.1 \
    --node-port="$kwok_port" \
    --server-address="127.0.0.1:$kwok_port" \
    --tls-cert-file="$pki/kwok.crt" \
    --tls-private-key-file="$pki/kwok.key"
}

# --- fake nodes ------------------------------------------------------------------------

fake_node_names() { local i; for ((i = 0; i < fake_nodes; i++)); do echo "kwok-node-$i"; done; }

fake_node_yaml() {
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $1
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: $1
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
spec:
  taints:
  - key: kwok.x-k8s.io/node
    value: fake
    effect: NoSchedule
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
EOF
}

ensure_fake_nodes() {
  local name wanted existing missing=""
  wanted="$(fake_node_names)"
  existing="$(kubectl get nodes -l type=kwok -o name | sed 's|^node/||')"
  for name in $wanted; do
    grep -qx "$name" <<<"$existing" || missing+="$(fake_node_yaml "$name")"$'\n'
  done
  # Created with their status (taken only on create), which kwok's node-initialize keeps.
  [ -z "$missing" ] || kubectl create -f - <<<"$missing" >/dev/null
  # Fewer fake nodes asked for than last time: drop the extra ones.
  for name in $existing; do
    grep -qx "$name" <<<"$wanted" || kubectl delete node "$name" --wait=false >/dev/null
  done
}

fake_nodes_ready() {  # exactly the wanted fake nodes exist, and all are Ready
  local nodes
  nodes="$(kubectl get nodes -l type=kwok -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')" ||
    return 1
  [ "$(sort <<<"$nodes" | sed '/^$/d')" = "$(fake_node_names | sed 's/$/ True/' | sort)" ]
}

default_sa_exists() { kubectl -n default get serviceaccount default >/dev/null 2>&1; }

# --- commands --------------------------------------------------------------------------

all_up() {
  local name
  for name in "${components[@]}"; do up_and_healthy "$name" || return 1; done
}

print_usage() {
  mkdir -p "$state/bin"
  ln -sfn "$k8s_bin/kubectl" "$state/bin/kubectl"
  cat <<EOF
cluster is up: https://127.0.0.1:$apiserver_port (Kubernetes $KUBERNETES_VERSION, $fake_nodes kwok nodes)
  export KUBECONFIG=$kubeconfig
  $k8s_bin/kubectl get nodes      (also: $state/bin/kubectl)
logs: $logs/   stop (with PostgreSQL, DNS, Prometheus, the demo): make cluster-down
EOF
}

cmd_up() {
  mkdir -p "$cluster" "$logs" "$pids"
  # Tests and make may call `up` at the same time; one of them does the work.
  exec 9>"$cluster/.lock"
  flock 9
  "$hack/build-k8s.sh" control-plane
  if all_up && fake_nodes_ready; then
    real_node_up
    print_usage
    return 0
  fi
  make_pki
  write_kubeconfigs
  start_etcd
  wait_healthy etcd 30
  start_apiserver
  wait_healthy kube-apiserver 90
  start_controller_manager
  start_scheduler
  start_kwok
  wait_healthy kube-controller-manager 60
  wait_healthy kube-scheduler 60
  wait_healthy kwok 60
  ensure_fake_nodes
  wait_for 90 "the default ServiceAccount" default_sa_exists
  wait_for 90 "$fake_nodes fake nodes to be Ready" fake_nodes_ready
  real_node_up
  print_usage
}

# The real node (kubelet, kube-proxy, containerd) beside the KWOK nodes, and metrics-server
# reading its kubelet (the metrics.k8s.io API a HorizontalPodAutoscaler acts on);
# PILOTBOAT_REAL_NODE=0 leaves both out, for machines that cannot run containers.
real_node_up() {
  [ "${PILOTBOAT_REAL_NODE:-1}" = 0 ] && return 0
  "$hack/node.sh" up
  "$hack/metrics-server.sh" up
}

# stop NAME...: SIGTERM, then SIGKILL whatever is left after a grace period; one line each
stop() {
  local name pid victims=() stopped=()
  for name in "$@"; do
    if pid="$(pid_of "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      victims+=("$pid")
      stopped+=("cluster: stopped $name (pid $pid)")
    fi
    rm -f "$pids/$name.pid"
  done
  kill_after 20 "${victims[@]}"
  [ ${#stopped[@]} -eq 0 ] || printf '%s\n' "${stopped[@]}"
}

kill_after() {  # kill_after SECONDS PID...: SIGKILL those of PID... still alive then
  local deadline=$((SECONDS + $1)) pid alive
  shift
  while :; do
    alive=()
    for pid in "$@"; do is_ours "$pid" && alive+=("$pid"); done
    [ ${#alive[@]} -eq 0 ] && return 0
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "killing ${alive[*]}"
      kill -KILL "${alive[@]}" 2>/dev/null || true
      sleep 0.5
      return 0
    fi
    sleep 0.2
  done
}

stragglers() {  # our processes whose pid files were lost
  local dir
  for dir in /proc/[0-9]*; do
    is_ours "${dir#/proc/}" && echo "${dir#/proc/}"
  done
  return 0
}

# programs KIND: pids of the project's Python programs of KIND, `demo` (hack/demo.sh, python -m
# examples.shop.demo) or `operator` (`pilotboat run`, whoever started it: the demo, a test
# session, a person), that run with this state dir or use its cluster (a kubeconfig in it).
programs() {
  local kind=$1 d pid args cmd
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    mapfile -d '' args 2>/dev/null <"$d/cmdline" || continue
    cmd="${args[*]} "
    case "$kind:$cmd" in
      "demo:"*" -m examples.shop.demo "* | "operator:"*"pilotboat run "*) ;;
      *) continue ;;
    esac
    [ "$pid" != "$$" ] || continue
    if [ "$(state_of "$pid" "${args[0]}")" = "$state" ] || [[ "$cmd" == *"$state/"* ]] ||
      tr '\0' '\n' 2>/dev/null <"$d/environ" | grep -qF "KUBECONFIG=$state/"; then
      echo "$pid"
    fi
  done
  return 0
}

# state_of PID PROGRAM: the state dir a program runs with: its PILOTBOAT_STATE, else the
# .state of the checkout whose .venv runs it, else of its working directory
state_of() {
  local s
  s="$(tr '\0' '\n' 2>/dev/null <"/proc/$1/environ" | sed -n 's/^PILOTBOAT_STATE=//p')"
  if [ -z "$s" ]; then
    case "$2" in
      /*/.venv/bin/*) s="${2%%/.venv/bin/*}/.state" ;;
      *) s="$(readlink "/proc/$1/cwd" 2>/dev/null)/.state" ;;
    esac
  fi
  echo "$s"
}

# stop_programs KIND: the demo unwinds on SIGTERM (its operator and customers stop with it);
# an operator whose cluster is gone would only retry 127.0.0.1:$apiserver_port, where the
# next checkout's cluster may answer.
stop_programs() {
  local kind=$1 pids pid i left
  pids="$(programs "$kind")"
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    [ -n "$(programs "$kind")" ] || break
    sleep 0.2
  done
  left="$(programs "$kind")"
  # shellcheck disable=SC2086
  [ -z "$left" ] || kill -KILL $left 2>/dev/null || true
  for pid in $pids; do
    case "$kind" in
      demo) echo "demo: stopped the demo, python -m examples.shop.demo (pid $pid)" ;;
      operator) echo "operator: stopped pilotboat run (pid $pid)" ;;
    esac
  done
}

stop_control_plane() {
  local left
  # Clients first, etcd last, so the apiserver shuts down against a live store. Then any
  # process of ours without a pid file (.state deleted under a running cluster).
  stop kwok kube-scheduler kube-controller-manager
  stop kube-apiserver
  stop etcd
  left="$(stragglers)"
  if [ -n "$left" ]; then
    # shellcheck disable=SC2086
    kill -TERM $left 2>/dev/null || true
    # shellcheck disable=SC2086
    kill_after 20 $left
    echo "cluster: stopped leftover processes of the control plane (pid ${left//$'\n'/ })"
  fi
  left="$(stragglers)"
  [ -z "$left" ] || die "still running: ${left//$'\n'/ }"
}

ancestors() {  # this shell and the processes that started it: never stragglers
  local pid=$$
  while [ "$pid" -gt 1 ] 2>/dev/null; do
    echo "$pid"
    pid="$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f2)"
  done
}

# Processes still naming the state dir after every step: not something these scripts started
# (a `tail -f` of a log, say), so they are named, not killed.
warn_state_users() {
  local d pid args cmd mine
  mine=" $(ancestors | tr '\n' ' ') "
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    [[ "$mine" == *" $pid "* ]] && continue
    mapfile -d '' args 2>/dev/null <"$d/cmdline" || continue
    cmd="${args[*]}"
    [[ "$cmd" == *"$state/"* ]] && log "still running and using $state: pid $pid: ${cmd:0:160}"
  done
  return 0
}

down_step() {  # down_step STEP: stops what STEP names; prints one line per thing stopped
  case "$1" in
    demo | operator) stop_programs "$1" ;;
    prometheus | dns | postgres | metrics-server | node) "$hack/$1.sh" down ;;
    control-plane) stop_control_plane ;;
  esac
}

# Everything this checkout starts, in this order: what uses the cluster and the servers
# first; PostgreSQL, CoreDNS and metrics-server before the node takes their address 10.244.0.1
# away (a server bound to it would keep listening); the node before the control plane, which
# deletes its Node object. A step that fails does not keep the next ones from running.
cmd_down() {
  local purge=false out step failed=() any=false
  local steps=(demo operator prometheus dns postgres metrics-server)
  case "${1:-}" in
    --purge) purge=true ;;
    "") ;;
    *) die "usage: $0 down [--purge]" ;;
  esac
  [ ! -d "$state/node" ] || steps+=(node)
  steps+=(control-plane)
  for step in "${steps[@]}"; do
    out="$(down_step "$step")" || failed+=("$step")
    [ -z "$out" ] || { echo "$out"; any=true; }
  done
  $any || echo "cluster: nothing of this checkout was running ($state)"
  warn_state_users
  [ ${#failed[@]} -eq 0 ] || die "could not stop everything; failed: ${failed[*]}"
  if $purge; then
    rm -rf "$cluster"
    log "purged $cluster"
  fi
}

cmd_status() {
  local name pid ok=0
  for name in "${components[@]}"; do
    if pid="$(pid_of "$name")"; then
      if healthy "$name"; then
        printf '%-24s running (pid %s)\n' "$name" "$pid"
      else
        printf '%-24s running (pid %s) but not healthy\n' "$name" "$pid"
        ok=1
      fi
    else
      printf '%-24s stopped\n' "$name"
      ok=1
    fi
  done
  if [ "$ok" -eq 0 ]; then
    if fake_nodes_ready; then
      printf '%-24s %s Ready\n' "fake nodes" "$fake_nodes"
    else
      printf '%-24s not the %s wanted, all Ready (kubectl get nodes -l type=kwok)\n' "fake nodes" "$fake_nodes"
      ok=1
    fi
  fi
  return "$ok"
}

case "${1:-}" in
  up) cmd_up ;;
  down) shift; cmd_down "$@" ;;
  status) cmd_status ;;
  *) echo "usage: $0 up | down [--purge] | status" >&2; exit 2 ;;
esac
