#!/usr/bin/env bash
# Builds the shop's image, localhost/pilotboat/shop:<tag>, <tag> being a hash of its inputs:
# the Python base (python-base), ./requirements.txt, the package ./shop, this script, the
# builder tools' versions and SOURCE_DATE_EPOCH. The same image is also tagged
# localhost/pilotboat/shop:local in the node's containerd, the tag the manifests here use.
# The services' behaviour per version comes from env (INTERFACE.md), never from another image.
#
#   examples/shop/build.sh          build what is missing and import into the node's containerd
#                                   if it runs: the same as hack/images.sh, which builds the
#                                   base images, then calls this script back
#   examples/shop/build.sh ref      print the image reference (localhost/pilotboat/shop:<tag>)
#
# Called by hack/images.sh with BUILDAH, SOURCE_DATE_EPOCH, the buildah storage settings and
# BASE_ARCHIVE (the python-base oci-archive) set, as `build.sh build|import|ref`.
#
# The build container has no network: the dependencies are installed on the host, by
# Debian's python3 (the image's own Python, 3.11) with pip install --target from PyPI's
# manylinux / pure wheels for CPython 3.11 x86_64, pinned in requirements.txt (transitive
# ones too, installed --no-deps), byte-compiled with hash-based .pyc, given SOURCE_DATE_EPOCH
# as their time, and copied in with the package as one layer on the base. The archive is
# cached in ~/.cache/pilotboat/images/shop-<tag>.oci.tar; the same inputs give the same digest.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../../hack/node/lib.sh
source "$here/../../hack/node/lib.sh"
image=localhost/pilotboat/shop
alias_tag=local

if [ -z "${BASE_ARCHIVE:-}" ]; then  # by hand: hack/images.sh builds the base, then calls us
  case "${1:-all}" in
    all|build|import) exec "$pb_repo/hack/images.sh" "${1:-all}" ;;
    ref) "$pb_repo/hack/images.sh" refs | grep -m1 "^$image:" | grep -v ":$alias_tag\$"; exit ;;
    *) echo "usage: $0 [all|build|import|ref]" >&2; exit 2 ;;
  esac
fi

python=/usr/bin/python3  # Debian bookworm's, the image's own: the same .pyc magic
cache="$pb_cache/images"

tag() {
  {
    (cd "$here" && find shop requirements.txt build.sh -type f ! -name '*.pyc' \
      ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    printf '%s\n' "$(basename "$BASE_ARCHIVE")" "$SOURCE_DATE_EPOCH" "$($BUILDAH --version)" \
      "$("$python" -m pip --version | cut -d' ' -f1-2)" "$("$python" --version)"
  } | sha256sum | cut -c1-16
}

build() {
  [ -s "$out" ] && [ -s "$out.digest" ] && return 0
  pb_ensure_packages python3-pip
  pb_log "building $ref"
  local start=$SECONDS work ctr
  work=$(mktemp -d "$cache/work.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'; $BUILDAH rm \"\${ctr:-}\" >/dev/null 2>&1 || true" EXIT
  umask 022
  mkdir -p "$work/app"
  PIP_CONFIG_FILE=/dev/null PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check \
    --no-warn-script-location --no-compile --no-deps --only-binary=:all: \
    --implementation cp --python-version 3.11 --abi cp311 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 \
    --target "$work/app/lib" -r "$here/requirements.txt"
  rm -rf "$work/app/lib/bin"  # console scripts with the host's interpreter path
  (cd "$here" && find shop -name '*.py' ! -path '*/__pycache__/*' -print0 \
    | xargs -0 cp --parents -t "$work/app")
  # hash-based .pyc: valid whatever the files' times, and the same bytes on every build
  "$python" -m compileall -q -j 0 --invalidation-mode unchecked-hash -s "$work/app" -p /app \
    "$work/app" >/dev/null
  find "$work/app" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  ctr=$($BUILDAH from --quiet "oci-archive:$BASE_ARCHIVE")
  $BUILDAH copy --quiet --chown 0:0 "$ctr" "$work/app" /app
  $BUILDAH config --cmd '[]' "$ctr"
  $BUILDAH config --os linux --arch amd64 --workingdir /app --user 65534:65534 --port 8080/tcp \
    --env PORT=8080 --env PYTHONPATH=/app:/app/lib \
    --entrypoint '["python3", "-m", "shop"]' \
    --label org.opencontainers.image.title=shop \
    --label org.opencontainers.image.version="$tag" \
    --label org.opencontainers.image.source=pilotboat/examples/shop \
    --label org.opencontainers.image.base.name=localhost/pilotboat/python-base "$ctr"
  $BUILDAH commit --quiet --omit-history --identity-label=false --timestamp "$SOURCE_DATE_EPOCH" \
    "$ctr" "$ref" >/dev/null
  $BUILDAH push --quiet --digestfile "$work/digest" "$ref" "oci-archive:$work/image.tar:$ref"
  $BUILDAH rmi "$ref" >/dev/null
  mv "$work/image.tar" "$out"
  mv "$work/digest" "$out.digest"
  # One archive: the ones of earlier inputs go (a rebuild makes them again).
  find "$cache" -maxdepth 1 -name "shop-*.oci.tar*" ! -name "$(basename "$out")*" -delete
  pb_log "built $ref $(cat "$out.digest") in $((SECONDS - start))s ($(du -h "$out" | cut -f1))"
}

import_image() {
  local want have c=(ctr -a "$pb_containerd_sock" -n k8s.io)
  want=$(cat "$out.digest")
  have=$("${c[@]}" images ls "name==$ref" 2>/dev/null | awk 'NR > 1 {print $3}')
  if [ "$have" = "$want" ]; then
    pb_log "$ref already imported ($want)"
  else
    pb_log "importing $ref $want"
    "${c[@]}" images import --no-unpack=false --all-platforms=false --index-name="" "$out" >/dev/null
  fi
  have=$("${c[@]}" images ls "name==$image:$alias_tag" 2>/dev/null | awk 'NR > 1 {print $3}')
  [ "$have" = "$want" ] || "${c[@]}" images tag --force "$ref" "$image:$alias_tag" >/dev/null
}

tag=$(tag)
ref="$image:$tag"
out="$cache/shop-$tag.oci.tar"
case "${1:-build}" in
  build) build ;;
  import) build; import_image ;;
  ref) echo "$ref" ;;
  *) echo "usage: $0 [build|import|ref]" >&2; exit 2 ;;
esac
