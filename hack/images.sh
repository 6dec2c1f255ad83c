#!/usr/bin/env bash
# Builds the local cluster's OCI images with buildah (no registry, no Docker) and imports them
# into the real node's containerd (namespace k8s.io), where pods use them with
# imagePullPolicy: Never.
#
#   hack/images.sh          build what is missing, then import into the node's containerd if
#                           it runs (hack/node.sh up calls this after starting containerd)
#   hack/images.sh build    build only
#   hack/images.sh import   import only (builds first if an archive is missing)
#   hack/images.sh refs     print the image references, one a line
#
# Images (tags in images/versions.env):
#   localhost/pilotboat/pause        static C binary; containerd's sandbox image
#   localhost/pilotboat/python-base  Debian bookworm minbase (mmdebstrap) + python3, python3-venv,
#                                    openssl
#   localhost/pilotboat/echo         python-base + images/echo/echo.py; also tagged
#                                    echo:v1, echo:v2, echo:v3 (ECHO_ALIASES)
#   localhost/pilotboat/shop         python-base + the shop's services; examples/shop/build.sh
#   localhost/pilotboat/operator     python-base + the operator; images/operator/build.sh (also
#                                    tagged with the chart's appVersion)
#
# Each image is built once into ~/.cache/pilotboat/images/NAME-TAG-HASH.oci.tar, HASH being
# a hash of its inputs: its folder under images/, its base image's hash, the apt sources, the
# builder tools' versions and SOURCE_DATE_EPOCH. Builds are reproducible (fixed timestamps,
# no history), so the same inputs give the same image digest; an import is skipped when
# containerd already holds that digest under that name. A second run takes a second or two.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=node/lib.sh
source "$(dirname "$0")/node/lib.sh"
# shellcheck source=../images/python-app.sh
source "$(dirname "$0")/../images/python-app.sh"
# shellcheck source=../images/versions.env
source "$pb_repo/images/versions.env"
export SOURCE_DATE_EPOCH

cache="$pb_cache/images"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# buildah keeps its own storage in the cache (vfs: works on any filesystem, no fuse/overlay
# needed), apart from any system-wide containers storage.
export STORAGE_DRIVER=vfs
export CONTAINERS_STORAGE_CONF="$cache/storage.conf"
cat >"$CONTAINERS_STORAGE_CONF" <<CONF
[storage]
driver = "vfs"
graphroot = "$cache/buildah/root"
runroot = "$cache/buildah/run"
CONF
export BUILDAH=buildah

declare -A ref hash archive

hash_inputs() {  # hash_inputs DIR EXTRA...: a short hash of DIR's files and the EXTRA strings
  local dir=$1; shift
  {
    (cd "$dir" && find . -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum)
    printf '%s\n' "$@"
  } | sha256sum | cut -c1-16
}

plan() {
  local buildah_v gcc_v libc_v mmdebstrap_v apt_sources
  buildah_v=$(buildah --version)
  gcc_v=$(gcc --version | head -1)
  libc_v=$(dpkg-query -W -f='${Version}' libc6-dev)
  mmdebstrap_v=$(mmdebstrap --version)
  apt_sources=$(pb_apt_sources)
  [ -n "$apt_sources" ] || pb_die "no Debian bookworm apt sources found (set PILOTBOAT_APT_SOURCES)"
  export APT_SOURCES="$apt_sources"

  ref[pause]="localhost/pilotboat/pause:$PAUSE_VERSION"
  hash[pause]=$(hash_inputs "$pb_repo/images/pause" "${ref[pause]}" "$SOURCE_DATE_EPOCH" \
    "$buildah_v" "$gcc_v" "$libc_v")
  ref[python-base]="localhost/pilotboat/python-base:$PYTHON_BASE_VERSION"
  hash[python-base]=$(hash_inputs "$pb_repo/images/python-base" "${ref[python-base]}" \
    "$SOURCE_DATE_EPOCH" "$buildah_v" "$mmdebstrap_v" "$apt_sources")
  ref[echo]="localhost/pilotboat/echo:$ECHO_VERSION"
  hash[echo]=$(hash_inputs "$pb_repo/images/echo" "${ref[echo]}" "$SOURCE_DATE_EPOCH" \
    "$buildah_v" "${hash[python-base]}")
  local name
  for name in pause python-base echo; do
    archive[$name]="$cache/$name-${ref[$name]##*:}-${hash[$name]}.oci.tar"
  done
}

build() {  # build NAME [ENV=VALUE...]
  local name=$1; shift
  local out=${archive[$name]}
  [ -s "$out" ] && [ -s "$out.digest" ] && return 0
  pb_log "building ${ref[$name]} (inputs ${hash[$name]})"
  local start=$SECONDS work
  work=$(mktemp -d "$cache/work.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  env "$@" REF="${ref[$name]}" VERSION="${ref[$name]##*:}" WORK="$work" \
    "$pb_repo/images/$name/build.sh"
  buildah push --quiet --digestfile "$work/digest" "${ref[$name]}" \
    "oci-archive:$work/image.tar:${ref[$name]}"
  buildah rmi "${ref[$name]}" >/dev/null
  mv "$work/image.tar" "$out"
  mv "$work/digest" "$out.digest"
  # One archive per image: the ones of earlier inputs go (a rebuild makes them again).
  find "$cache" -maxdepth 1 -name "$name-*.oci.tar*" ! -name "$(basename "$out")*" -delete
  pb_log "built ${ref[$name]} $(cat "$out.digest") in $((SECONDS - start))s ($(du -h "$out" | cut -f1))"
}

build_all() {
  pb_ensure_packages buildah mmdebstrap gcc libc6-dev
  plan
  build pause
  build python-base
  build echo BASE_ARCHIVE="${archive[python-base]}"
  BASE_ARCHIVE="${archive[python-base]}" "$pb_repo/examples/shop/build.sh" build
  BASE_ARCHIVE="${archive[python-base]}" "$pb_repo/images/operator/build.sh" build
  # Nothing is left in buildah's storage between runs: the archives are the cache.
  buildah rm --all >/dev/null 2>&1 || true
  buildah rmi --all --force >/dev/null 2>&1 || true
}

import_all() {
  local name want have c=(ctr -a "$pb_containerd_sock" -n k8s.io)
  for name in pause python-base echo; do
    pyapp_import "${archive[$name]}" "${ref[$name]}"
  done
  # The same echo image under the tags tests use for versions (echo:v1, echo:v2, ...)
  want=$(cat "${archive[echo]}.digest")
  for name in ${ECHO_ALIASES:-}; do
    have=$("${c[@]}" images ls "name==localhost/pilotboat/echo:$name" 2>/dev/null | awk 'NR > 1 {print $3}')
    [ "$have" = "$want" ] || "${c[@]}" images tag --force "${ref[echo]}" "localhost/pilotboat/echo:$name" >/dev/null
  done
  # The sandbox image must never be garbage-collected: there is no registry to pull it back.
  "${c[@]}" images label "${ref[pause]}" io.cri-containerd.pinned=pinned >/dev/null
  BASE_ARCHIVE="${archive[python-base]}" "$pb_repo/examples/shop/build.sh" import
  BASE_ARCHIVE="${archive[python-base]}" "$pb_repo/images/operator/build.sh" import
}

case "${1:-all}" in
  all)
    build_all
    if pb_containerd_up; then import_all
    else pb_log "the node's containerd is not running ($pb_containerd_sock); import skipped (hack/node.sh up imports)"; fi ;;
  build) build_all ;;
  import)
    build_all
    pb_containerd_up || pb_die "the node's containerd is not running ($pb_containerd_sock)"
    import_all ;;
  refs)
    plan
    printf '%s\n' "${ref[pause]}" "${ref[python-base]}" "${ref[echo]}"
    for name in ${ECHO_ALIASES:-}; do echo "localhost/pilotboat/echo:$name"; done
    BASE_ARCHIVE="${archive[python-base]}" "$pb_repo/examples/shop/build.sh" ref
    echo localhost/pilotboat/shop:local
    BASE_ARCHIVE="${archive[python-base]}" "$pb_repo/images/operator/build.sh" ref
    echo "localhost/pilotboat/operator:$(awk -F'"' '/^appVersion:/ {print $2}' \
      "$pb_repo/charts/pilotboat/Chart.yaml")" ;;
  *) echo "usage: $0 [all|build|import|refs]" >&2; exit 2 ;;
esac
