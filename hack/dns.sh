#!/usr/bin/env bash
# Cluster DNS for the local cluster: CoreDNS (built from the Go module proxy, hack/coredns/)
# on the host, answering cluster.local from the API server with its kubernetes plugin, on
# the pod network's gateway 10.244.0.1:53, the address the real node's kubelet gives pods as
# their nameserver (clusterDNS in hack/node/kubelet-config.yaml.in).
#   hack/dns.sh up       build once (cache: ~/.cache/pilotboat/bin/coredns-VERSION), start,
#                        wait until it answers for kubernetes.default.svc.cluster.local
#   hack/dns.sh down     stop it, one line on stdout; exit 0 when it does not run
#   hack/dns.sh status   exit 0 when it runs and is ready
# It serves the cluster.local zone (and the reverse zones) only and forwards nothing:
# any other name gets REFUSED, so pods resolve Services and nothing outside.
# Needs the cluster (.state/kubeconfig) and the node's bridge pb0 (hack/cluster.sh up).
set -euo pipefail

hack="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$hack/.." && pwd)"
state="${PILOTBOAT_STATE:-$repo/.state}"
dir="$state/dns"
cache="${PILOTBOAT_CACHE:-$HOME/.cache/pilotboat}"
version="$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" {print $3}' "$hack/coredns/go.mod")"
bin="$cache/bin/coredns-$version/coredns"
kubeconfig="${PILOTBOAT_KUBECONFIG:-$state/kubeconfig}"
address=10.244.0.1
ready_port="${PILOTBOAT_DNS_READY_PORT:-18181}"
pidfile="$dir/coredns.pid"

log() { echo "dns: $*" >&2; }
die() { log "$*"; exit 1; }

alive() { [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }
ready() { curl -fsS -m 2 "http://127.0.0.1:$ready_port/ready" >/dev/null 2>&1; }

build() {
  [ -x "$bin" ] && return 0
  log "building CoreDNS $version into $(dirname "$bin") (once; about 2 minutes)"
  mkdir -p "$(dirname "$bin")"
  (cd "$hack/coredns" && GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0 \
    go build -trimpath -ldflags "-s -w" -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
}

render() {
  mkdir -p "$dir"
  cat >"$dir/Corefile.tmp" <<EOF
# Rendered by hack/dns.sh. No forward plugin: names outside these zones are REFUSED.
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $address
    errors
    ready 127.0.0.1:$ready_port
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $kubeconfig
        pods insecure
        ttl 5
    }
    cache 5
}
EOF
  mv "$dir/Corefile.tmp" "$dir/Corefile"
}

wait_gateway() {
  local i
  for ((i = 0; i < 600; i++)); do
    ip -4 addr show dev pb0 2>/dev/null | grep -q "inet $address/" && return 0
    sleep 0.1
  done
  die "$address is not on pb0 after 60s: start the node first (hack/cluster.sh up)"
}

up() {
  [ -s "$kubeconfig" ] || die "no $kubeconfig: start the cluster first (hack/cluster.sh up)"
  build
  render
  if ! alive; then
    wait_gateway
    log "starting CoreDNS $version on $address:53"
    setsid "$bin" -conf "$dir/Corefile" -pidfile "" </dev/null >>"$dir/coredns.log" 2>&1 &
    echo $! >"$pidfile"
  fi
  local i
  for ((i = 0; i < 300; i++)); do
    ready && return 0
    alive || die "CoreDNS exited; see $dir/coredns.log"
    sleep 0.1
  done
  die "CoreDNS not ready after 30s; see $dir/coredns.log"
}

# CoreDNS processes with our Corefile: `down` finds them by command line rather than by pid
# file, so a pid file lost with a deleted .state leaves nothing running, and a reused pid is
# never taken for ours.
ours() {
  local d args
  for d in /proc/[0-9]*; do
    mapfile -d '' args 2>/dev/null <"$d/cmdline" || continue
    [[ "${args[*]} " == *" -conf $dir/Corefile "* ]] && echo "${d#/proc/}"
  done
  return 0
}

down() {
  local pids i
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
  echo "dns: stopped CoreDNS on $address:53 (pid ${pids//$'\n'/ })"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) alive && ready ;;
  build) build ;;
  *) echo "usage: $0 up|down|status|build" >&2; exit 2 ;;
esac
