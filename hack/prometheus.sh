#!/usr/bin/env bash
# Runs the project's own Prometheus (Debian's `prometheus` binary, never its system service)
# as a detached process on 127.0.0.1:${PILOTBOAT_PROMETHEUS_PORT:-19090}, data in
# .state/prometheus/.
#   hack/prometheus.sh up      render the config, start if not running, wait until ready
#   hack/prometheus.sh down    stop it and its pod discovery, one line each on stdout (the
#                              data stays); exit 0 when nothing runs
#   hack/prometheus.sh reload  render the config again and have Prometheus reload it
#   hack/prometheus.sh status  exit 0 when it is up and ready
# Scrape targets: files in .state/prometheus/targets/*.json (file_sd, picked up without a
# reload) and, once .state/kubeconfig exists (run `reload` after the cluster is up), every
# pod annotated prometheus.io/scrape: "true". Debian builds Prometheus without Kubernetes
# discovery, so hack/prometheus/pod_sd.py lists the pods and writes them as file_sd targets
# (see hack/prometheus/kubernetes-pods.yml); `up` and `reload` start it, `down` stops it.
set -euo pipefail

hack="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$hack/.." && pwd)"
state="${PILOTBOAT_STATE:-$repo/.state}"
dir="$state/prometheus"
port="${PILOTBOAT_PROMETHEUS_PORT:-19090}"
url="http://127.0.0.1:$port"
kubeconfig="${PILOTBOAT_KUBECONFIG:-$state/kubeconfig}"
pidfile="$dir/prometheus.pid"
sd_pidfile="$dir/pod_sd.pid"
config="$dir/prometheus.yml"
python="${PILOTBOAT_PYTHON:-$repo/.venv/bin/python}"

log() { echo "prometheus: $*" >&2; }
die() { log "$*"; exit 1; }

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running() { alive "$pidfile"; }
ready() { curl -fsS -m 2 "$url/-/ready" >/dev/null 2>&1; }

render() {
  mkdir -p "$dir/targets" "$dir/data"
  local tmp="$config.tmp"
  cp "$hack/prometheus/prometheus.yml" "$tmp"
  if [ -s "$kubeconfig" ]; then
    local escaped=${kubeconfig//\\/\\\\}
    escaped=${escaped//&/\\&}
    sed "s|@KUBECONFIG@|${escaped//|/\\|}|g" "$hack/prometheus/kubernetes-pods.yml" >>"$tmp"
    mkdir -p "$dir/pods"
  fi
  if command -v promtool >/dev/null; then
    promtool check config --syntax-only "$tmp" >/dev/null || die "invalid config: $tmp"
  fi
  mv "$tmp" "$config"
}

start_pod_sd() {
  [ -s "$kubeconfig" ] || return 0
  alive "$sd_pidfile" && return 0
  [ -x "$python" ] || { log "no $python: pods are not discovered (make venv)"; return 0; }
  setsid "$python" "$hack/prometheus/pod_sd.py" --kubeconfig "$kubeconfig" \
    --out "$dir/pods/kubernetes.json" </dev/null >>"$dir/pod_sd.log" 2>&1 &
  echo $! >"$sd_pidfile"
}

# ours TEXT...: processes whose command line (arguments joined by spaces) holds every TEXT.
# `down` finds its processes this way rather than by pid file, so a pid file lost with a
# deleted .state leaves nothing running, and a reused pid is never taken for ours.
ours() {
  local d args text
  for d in /proc/[0-9]*; do
    mapfile -d '' args 2>/dev/null <"$d/cmdline" || continue
    for text in "$@"; do [[ "${args[*]} " == *"$text"* ]] || continue 2; done
    [ "${d#/proc/}" = "$$" ] || echo "${d#/proc/}"
  done
  return 0
}

# stop_ours WHAT PIDFILE TEXT...: TERM the processes ours TEXT... finds, KILL those left after
# 10s, print "prometheus: stopped WHAT (pid ...)" when there were any
stop_ours() {
  local what=$1 pidfile=$2 pids i
  shift 2
  rm -f "$pidfile"
  pids="$(ours "$@")"
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for ((i = 0; i < 200; i++)); do
    [ -n "$(ours "$@")" ] || break
    sleep 0.05
  done
  if [ -n "$(ours "$@")" ]; then
    log "${pids//$'\n'/ } still running after 10s; killing it"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
  fi
  echo "prometheus: stopped $what (pid ${pids//$'\n'/ })"
}

wait_ready() {
  local i
  for ((i = 0; i < 300; i++)); do
    ready && return 0
    running || die "exited while starting; see $dir/prometheus.log"
    sleep 0.1
  done
  die "not ready after 30s; see $dir/prometheus.log"
}

up() {
  command -v prometheus >/dev/null || "$hack/deps.sh"
  render
  start_pod_sd
  if running; then
    reload
    return
  fi
  log "starting on $url"
  # setsid: not a child of the caller's session, so it outlives the shell that started it.
  setsid prometheus \
    --config.file="$config" \
    --storage.tsdb.path="$dir/data" \
    --storage.tsdb.retention.time=1d \
    --web.listen-address="127.0.0.1:$port" \
    --web.enable-lifecycle \
    --log.level=warn \
    </dev/null >>"$dir/prometheus.log" 2>&1 &
  echo $! >"$pidfile"
  wait_ready
}

down() {
  # Any checkout's pod_sd.py writing into our folder: another checkout's tests may run with
  # PILOTBOAT_STATE pointing here.
  stop_ours "pod discovery, hack/prometheus/pod_sd.py" "$sd_pidfile" \
    "/prometheus/pod_sd.py " " --out $dir/pods/"
  stop_ours "Prometheus on $(listen_address)" "$pidfile" " --config.file=$config "
}

listen_address() {  # the running Prometheus' address (PILOTBOAT_PROMETHEUS_PORT may differ now)
  local pid
  pid="$(ours " --config.file=$config " | head -n1)"
  tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | sed -n 's/^--web.listen-address=//p' | grep . ||
    echo "127.0.0.1:$port"
}

reload() {
  render
  start_pod_sd
  running || die "not running; use: $0 up"
  curl -fsS -m 10 -X POST "$url/-/reload" >/dev/null || die "reload refused; see $dir/prometheus.log"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  reload) reload ;;
  status) running && ready ;;
  *) echo "usage: $0 up|down|reload|status" >&2; exit 2 ;;
esac
