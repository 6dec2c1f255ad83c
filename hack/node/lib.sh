# Shared by hack/images.sh and hack/node.sh. Source it; it defines paths and helpers only.
# shellcheck shell=bash disable=SC2034  # the paths are for the scripts that source this

pb_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
pb_cache="${PILOTBOAT_CACHE:-$HOME/.cache/pilotboat}"
pb_state="${PILOTBOAT_STATE:-$pb_repo/.state}"  # as hack/cluster.sh
pb_node_state="$pb_state/node"
# The node's own containerd (hack/node.sh); never the system one at /run/containerd.
pb_containerd_sock="${PILOTBOAT_CONTAINERD_ADDRESS:-$pb_node_state/containerd/containerd.sock}"

pb_log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
pb_die() { pb_log "error: $*"; exit 1; }

# pb_ensure_packages PKG...: installs the Debian packages that are missing (CI starts fresh).
pb_ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || pb_die "missing Debian packages ${missing[*]}; install them as root"
  pb_log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
    apt-get update >/dev/null
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# pb_apt_sources: the Debian bookworm repositories this machine's apt uses, as one-line-style
# "deb URI SUITE main" lines (the mirror the images are built from).
pb_apt_sources() {
  if [ -n "${PILOTBOAT_APT_SOURCES:-}" ]; then printf '%s\n' "$PILOTBOAT_APT_SOURCES"; return; fi
  # shellcheck disable=SC2016  # apt's own $(FIELD) syntax
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Created-By: Packages' \
    | awk '$2 ~ /^bookworm(-updates|-security)?$/ && $3 == "main" {print "deb " $1 " " $2 " main"}' \
    | sort -u
}

pb_containerd_up() { [ -S "$pb_containerd_sock" ] && ctr -a "$pb_containerd_sock" version >/dev/null 2>&1; }
