#!/usr/bin/env bash
# Builds the operator's image, localhost/pilotboat/operator:<tag>, <tag> being a hash of its
# inputs (the package operator/pilotboat, ./requirements.txt, this script, the shared
# images/python-app.sh, the Python base and the tools' versions). The same image is also
# tagged with the chart's appVersion (localhost/pilotboat/operator:0.1.0) in the node's
# containerd: the image the chart's default values name.
#
# python-base (Debian bookworm minbase + python3 + openssl, which makes the webhook server's
# self-signed certificate) + the pinned wheels + the package, as one layer; runs as
# 65534:65534 and writes nothing outside /tmp, so it runs with a read-only root filesystem.
#
#   images/operator/build.sh        build what is missing and import into the node's
#                                   containerd if it runs (the same as hack/images.sh)
#   images/operator/build.sh ref    print the image reference
#
# Called by hack/images.sh with BUILDAH, SOURCE_DATE_EPOCH, the buildah storage settings and
# BASE_ARCHIVE (the python-base oci-archive) set, as `build.sh build|import|ref`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=../../hack/node/lib.sh
source "$here/../../hack/node/lib.sh"
# shellcheck source=../python-app.sh
source "$here/../python-app.sh"
image=localhost/pilotboat/operator
alias_tag=$(awk -F'"' '/^appVersion:/ {print $2}' "$pb_repo/charts/pilotboat/Chart.yaml")

# By hand: hack/images.sh builds the base, then calls us back.
[ -n "${BASE_ARCHIVE:-}" ] || pyapp_by_hand "$image" "$alias_tag" "$@"

cache="$pb_cache/images"
tag=$(cd "$pb_repo" && pyapp_tag operator/pilotboat images/operator images/python-app.sh)
ref="$image:$tag"
out="$cache/operator-$tag.oci.tar"

build() {
  pyapp_build "$ref" "$out" "$here/requirements.txt" "$pb_repo/operator" pilotboat \
    --entrypoint '["python3", "-m", "pilotboat"]' --cmd '["run"]' \
    --port 8080/tcp --port 9090/tcp --port 9443/tcp \
    --label org.opencontainers.image.title=pilotboat-operator \
    --label org.opencontainers.image.source=pilotboat/images/operator
}

case "${1:-build}" in
  build) build ;;
  import) build; pyapp_import "$out" "$ref" "$image:$alias_tag" ;;
  ref) echo "$ref" ;;
  *) echo "usage: $0 [build|import|ref]" >&2; exit 2 ;;
esac
