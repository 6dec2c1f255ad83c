#!/usr/bin/env bash
# metrics-server for the local cluster: built from the Go module proxy, run on the host as the
# API server's aggregated `metrics.k8s.io` API, reading CPU and memory of the real node's pods
# from its kubelet (/metrics/resource), so a HorizontalPodAutoscaler acts on real pod metrics.
#   hack/metrics-server.sh up      build once (cache: ~/.cache/pilotboat/bin/metrics-server-VERSION),
#                                  make its certificates, register its RBAC, Service and
#                                  EndpointSlice, start it, wait until the Service's ClusterIP
#                                  leads to it, then register the APIService and wait until it
#                                  is Available
#   hack/metrics-server.sh down    unregister it (when the API server answers), stop it; one line
#                                  on stdout per thing done ("metrics: ..."); exit 0 when it
#                                  does not run
#   hack/metrics-server.sh status  exit 0 when it runs and the APIService is Available
#   hack/metrics-server.sh build   only build
# hack/cluster.sh up runs `up` after the real node (hack/node.sh up); hack/cluster.sh down runs
# `down` before the node goes. Needs the cluster and the real node: without a kubelet there is
# nothing to read (the kwok nodes have none, so only nodes labelled type=real are scraped).
#
# How the API server reaches it: it listens on the pod network's gateway 10.244.0.1 (pb0, as
# CoreDNS and PostgreSQL do; a Service endpoint may not be a loopback address). A Service
# without selector, kube-system/metrics-server, has one EndpointSlice naming that address; the
# API server dials the Service's ClusterIP, which kube-proxy's rules on the host lead there.
# It serves with a certificate of the cluster CA for metrics-server.kube-system.svc (the
# APIService's caBundle), authenticates the API server's front-proxy client through
# kube-system/extension-apiserver-authentication, and talks to the API server and to the
# kubelet (which checks the cluster CA, then asks the API server: nodes/metrics) as its own
# user system:metrics-server (client certificate of the cluster CA), never as the admin.
# State, certificates and the log: .state/metrics-server/.
set -euo pipefail

hack="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$hack/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$hack/versions.env"
state="${PILOTBOAT_STATE:-$repo/.state}"
dir="$state/metrics-server"
pki="$dir/pki"
cluster_pki="$state/cluster/pki"
cache="${PILOTBOAT_CACHE:-$HOME/.cache/pilotboat}"
version="$METRICS_SERVER_VERSION"
bin="$cache/bin/metrics-server-$version/metrics-server"
k8s_bin="$cache/bin/kubernetes-$KUBERNETES_VERSION"
admin_kubeconfig="$state/kubeconfig"
kubeconfig="$dir/kubeconfig"
address=10.244.0.1
port="${PILOTBOAT_METRICS_SERVER_PORT:-14443}"
# The shortest the metrics-server allows; the kubelet's own stats are ~10 s fresh anyway.
resolution="${PILOTBOAT_METRICS_RESOLUTION:-10s}"
pidfile="$dir/metrics-server.pid"
logfile="$dir/metrics-server.log"

log() { echo "metrics: $*" >&2; }
die() { log "$*"; exit 1; }
kubectl() { "$k8s_bin/kubectl" --kubeconfig "$admin_kubeconfig" --request-timeout=10s "$@"; }

build() {
  [ -x "$bin" ] && return 0
  log "building metrics-server $version into $(dirname "$bin") (once; about 6 CPU minutes)"
  local tmp pkg=k8s.io/client-go/pkg/version ldflags="-s -w"
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitCommit=module-proxy -X $pkg.gitTreeState=clean"
  ldflags+=" -X $pkg.buildDate=2000-01-01T00:00:00Z"  # fixed, so builds are reproducible
  mkdir -p "$(dirname "$bin")"
  # Into a temporary folder first: an interrupted build must not look cached.
  tmp="$(mktemp -d "$(dirname "$bin")/.build.XXXXXX")"
  GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN="$tmp" \
    nice -n 10 go install -trimpath -ldflags "$ldflags" "sigs.k8s.io/metrics-server/cmd/metrics-server@$version"
  mv "$tmp/metrics-server" "$bin"
  rmdir "$tmp"
}

# make_cert NAME SUBJECT EXT_KEY_USAGE [SAN]: NAME.{key,crt} signed by the cluster CA
make_cert() {
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

make_pki() {  # (re)made when the cluster CA changed
  local stamp
  stamp="$(sha256sum <"$cluster_pki/ca.crt" | cut -c1-64) $address"
  [ "$(cat "$pki/stamp" 2>/dev/null)" = "$stamp" ] && return 0
  rm -rf "$pki"
  mkdir -p "$pki"
  chmod 700 "$pki"
  cp "$cluster_pki/ca.crt" "$pki/ca.crt"
  make_cert serving "/CN=metrics-server.kube-system.svc" serverAuth \
    "DNS:metrics-server.kube-system.svc,DNS:metrics-server.kube-system.svc.cluster.local,IP:$address"
  make_cert client "/CN=system:metrics-server" clientAuth
  local server
  server="$(awk '$1 == "server:" {print $2; exit}' "$admin_kubeconfig")"
  (umask 077 && cat >"$kubeconfig.tmp") <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pilotboat
  cluster:
    server: ${server:-https://127.0.0.1:6443}
    certificate-authority: $pki/ca.crt
users:
- name: system:metrics-server
  user:
    client-certificate: $pki/client.crt
    client-key: $pki/client.key
contexts:
- name: pilotboat
  context: {cluster: pilotboat, user: system:metrics-server}
current-context: pilotboat
EOF
  mv "$kubeconfig.tmp" "$kubeconfig"
  echo "$stamp" >"$pki/stamp"
}

# What upstream's manifests/base installs, for the user system:metrics-server instead of a
# ServiceAccount, and a Service without selector whose one endpoint is this host. The
# APIService comes later (register_apiservice), once the Service's ClusterIP leads here.
register() {
  kubectl apply --server-side --force-conflicts --field-manager=pilotboat-hack -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:aggregated-metrics-reader
  labels:
    rbac.authorization.k8s.io/aggregate-to-view: "true"
    rbac.authorization.k8s.io/aggregate-to-edit: "true"
    rbac.authorization.k8s.io/aggregate-to-admin: "true"
rules:
- apiGroups: [metrics.k8s.io]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:metrics-server
rules:
- apiGroups: [""]
  resources: [nodes/metrics]
  verbs: [get]
- apiGroups: [""]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:metrics-server
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:metrics-server}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: system:metrics-server}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: metrics-server:system:auth-delegator
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:auth-delegator}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: system:metrics-server}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: metrics-server-auth-reader
  namespace: kube-system
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: system:metrics-server}
---
apiVersion: v1
kind: Service
metadata:
  name: metrics-server
  namespace: kube-system
  labels: {app.kubernetes.io/name: metrics-server, app.kubernetes.io/managed-by: pilotboat-hack}
spec:
  ports:
  - {name: https, port: 443, protocol: TCP, targetPort: $port}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server-host
  namespace: kube-system
  labels:
    kubernetes.io/service-name: metrics-server
    endpointslice.kubernetes.io/managed-by: pilotboat-hack
addressType: IPv4
ports:
- {name: https, port: $port, protocol: TCP}
endpoints:
- addresses: ["$address"]
  conditions: {ready: true}
EOF
}

# The API server's availability check dials the ClusterIP without verifying the certificate
# and keeps its connection open. Dialled before kube-proxy's rules lead the ClusterIP here,
# it reaches whatever answers on the default route (in a sandbox: an egress proxy answering
# 404 to everything) and stays there: the APIService is "FailedDiscoveryCheck ... 404" for as
# long as that connection lives. So the APIService is written only after via_cluster_ip has
# seen our own certificate through the ClusterIP.
register_apiservice() {
  kubectl apply --server-side --force-conflicts --field-manager=pilotboat-hack -f - >/dev/null <<EOF
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
  labels: {app.kubernetes.io/name: metrics-server, app.kubernetes.io/managed-by: pilotboat-hack}
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  service: {name: metrics-server, namespace: kube-system, port: 443}
  caBundle: $(base64 -w0 <"$pki/ca.crt")
EOF
}

# via_cluster_ip IP: an HTTPS answer (any status) through the Service's ClusterIP IP, from a
# server whose certificate is of the cluster CA for metrics-server.kube-system.svc; that is,
# kube-proxy leads the ClusterIP to this metrics-server.
via_cluster_ip() {
  local ip=$1 code
  [ -n "$ip" ] || return 1
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 --cacert "$pki/ca.crt" \
    --resolve "metrics-server.kube-system.svc:443:$ip" https://metrics-server.kube-system.svc/livez)"
  [ -n "$code" ] && [ "$code" != 000 ]
}

# An APIService that does not answer breaks discovery: namespaces could not be deleted and
# kubectl would warn on every call. So it goes with the server.
unregister() {
  [ -s "$admin_kubeconfig" ] || return 0
  kubectl get --raw /readyz >/dev/null 2>&1 || return 0
  if kubectl get apiservice v1beta1.metrics.k8s.io >/dev/null 2>&1; then
    kubectl delete apiservice v1beta1.metrics.k8s.io --wait=false >/dev/null 2>&1 &&
      echo "metrics: deleted the APIService v1beta1.metrics.k8s.io"
  fi
  return 0
}

available() {
  [ "$(kubectl get apiservice v1beta1.metrics.k8s.io \
    -o jsonpath='{.status.conditions[?(@.type=="Available")].status}' 2>/dev/null)" = True ]
}

# metrics-server processes with our certificates: found by command line, not by pid file, so
# a pid file lost with a deleted .state leaves nothing running, and a reused pid is never ours.
ours() {
  local d args
  for d in /proc/[0-9]*; do
    mapfile -d '' args 2>/dev/null <"$d/cmdline" || continue
    [[ "${args[*]} " == *" --tls-cert-file=$pki/serving.crt "* ]] && echo "${d#/proc/}"
  done
  return 0
}

alive() { [ -n "$(ours)" ]; }

# while_alive TENTHS COMMAND...: 0 once COMMAND succeeds, 1 when metrics-server is gone
# first, 2 after TENTHS tenths of a second.
while_alive() {
  local tenths=$1 i
  shift
  for ((i = 0; i < tenths; i++)); do
    "$@" && return 0
    alive || return 1
    sleep 0.1
  done
  return 2
}

wait_gateway() {
  local i
  for ((i = 0; i < 600; i++)); do
    ip -4 addr show dev pb0 2>/dev/null | grep -q "inet $address/" && return 0
    sleep 0.1
  done
  die "$address is not on pb0 after 60s: start the node first (hack/node.sh up)"
}

up() {
  if [ ! -s "$admin_kubeconfig" ] || [ ! -s "$cluster_pki/ca.key" ]; then
    die "no cluster at $admin_kubeconfig: start it first (hack/cluster.sh up)"
  fi
  build
  mkdir -p "$dir"
  make_pki
  # Its RBAC first: metrics-server reads kube-system/extension-apiserver-authentication once
  # at start and exits when it may not, and the API server's authorizer sees a new binding a
  # moment after it is written.
  register
  local i
  for ((i = 0; i < 300; i++)); do
    [ "$(kubectl auth can-i get configmaps/extension-apiserver-authentication -n kube-system \
      --as system:metrics-server 2>/dev/null)" = yes ] && break
    sleep 0.1
  done
  if ! alive; then
    wait_gateway
    log "starting metrics-server $version on $address:$port"
    setsid nohup "$bin" \
      --kubeconfig="$kubeconfig" \
      --authentication-kubeconfig="$kubeconfig" \
      --authorization-kubeconfig="$kubeconfig" \
      --bind-address="$address" \
      --secure-port="$port" \
      --tls-cert-file="$pki/serving.crt" \
      --tls-private-key-file="$pki/serving.key" \
      --kubelet-certificate-authority="$pki/ca.crt" \
      --kubelet-preferred-address-types=InternalIP \
      --node-selector=type=real \
      --metric-resolution="$resolution" \
      --kubelet-request-timeout=5s \
      --profiling=false \
      </dev/null >>"$logfile" 2>&1 9>&- &
    echo $! >"$pidfile"
  fi
  local ip rc=0 why="the Service kube-system/metrics-server does not lead to it after 60s"
  ip="$(kubectl get service metrics-server -n kube-system -o jsonpath='{.spec.clusterIP}' 2>/dev/null)"
  while_alive 600 via_cluster_ip "$ip" || rc=$?
  if [ "$rc" -eq 0 ]; then
    register_apiservice
    why="the APIService v1beta1.metrics.k8s.io is not Available after 90s"
    while_alive 900 available || rc=$?
    [ "$rc" -ne 0 ] || return 0
  fi
  [ "$rc" -ne 1 ] || why="metrics-server exited"
  kubectl get apiservice v1beta1.metrics.k8s.io -o jsonpath='{.status.conditions}{"\n"}' >&2 || true
  tail -n 20 "$logfile" >&2 || true
  # Not left registered without an answer (see unregister); `down` stops what may still run.
  down >&2
  die "$why; log: $logfile"
}

down() {
  local pids i
  unregister
  rm -f "$pidfile"
  pids="$(ours)"
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    [ -n "$(ours)" ] || break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  [ -z "$(ours)" ] || kill -KILL $pids 2>/dev/null || true
  echo "metrics: stopped metrics-server on $address:$port (pid ${pids//$'\n'/ })"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) alive && available ;;
  build) build ;;
  *) echo "usage: $0 up|down|status|build" >&2; exit 2 ;;
esac
