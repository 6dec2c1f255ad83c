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
# The dependencies, pinned in requirements.txt, and the package go in as one layer on the
# base the way images/python-app.sh says. The archive is cached in
# ~/.cache/pilotboat/images/shop-<tag>.oci.tar; the same inputs give the same digest.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../../hack/node/lib.sh
source "$here/../../hack/node/lib.sh"
# shellcheck source=../../images/python-app.sh
source "$here/../../images/python-app.sh"
image=localhost/pilotboat/shop
alias_tag=local

# By hand: hack/images.sh builds the base, then calls us back.
[ -n "${BASE_ARCHIVE:-}" ] || pyapp_by_hand "$image" "$alias_tag" "$@"

cache="$pb_cache/images"

build() {
  pyapp_build "$ref" "$out" "$here/requirements.txt" "$here" shop \
    --entrypoint '["python3", "-m", "shop"]' --port 8080/tcp --env PORT=8080 \
    --label org.opencontainers.image.title=shop \
    --label org.opencontainers.image.source=pilotboat/examples/shop
}

tag=$(cd "$pb_repo" && pyapp_tag examples/shop/shop examples/shop/requirements.txt \
  examples/shop/build.sh images/python-app.sh)
ref="$image:$tag"
out="$cache/shop-$tag.oci.tar"
case "${1:-build}" in
  build) build ;;
  import) build; pyapp_import "$out" "$ref" "$image:$alias_tag" ;;
  ref) echo "$ref" ;;
  *) echo "usage: $0 [build|import|ref]" >&2; exit 2 ;;
esac
