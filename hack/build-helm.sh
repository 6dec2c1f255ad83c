#!/usr/bin/env bash
# Builds Helm from the Go module proxy into a cache outside the repository, keyed by version,
# so a second run finds it and returns at once. Prints the path of the helm binary.
#   hack/build-helm.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
cache="${PILOTBOAT_CACHE:-$HOME/.cache/pilotboat}"
helm_bin="$cache/bin/helm-$HELM_VERSION"
if [ ! -x "$helm_bin/helm" ]; then
  mkdir -p "$helm_bin"
  echo "building helm $HELM_VERSION into $helm_bin" >&2
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  GOBIN="$helm_bin" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
echo "$helm_bin/helm"
