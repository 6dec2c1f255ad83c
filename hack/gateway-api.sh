#!/usr/bin/env bash
# Installs the standard-channel Gateway API CRDs (GatewayClass, Gateway, HTTPRoute,
# GRPCRoute, ReferenceGrant, BackendTLSPolicy) into the local cluster, from the YAML that
# the sigs.k8s.io/gateway-api Go module ships (config/crd/standard/), fetched through the
# Go module proxy into the module cache. No Gateway controller is installed: the operator
# only writes HTTPRoute weights, which the API server stores and validates as it would for
# any implementation.
#   hack/gateway-api.sh          install (a no-op when this version is already installed)
# Environment: PILOTBOAT_GATEWAY_API_VERSION (default below), PILOTBOAT_KUBECONFIG.
set -euo pipefail

hack="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$hack/.." && pwd)"
state="${PILOTBOAT_STATE:-$repo/.state}"
kubeconfig="${PILOTBOAT_KUBECONFIG:-$state/kubeconfig}"
# v1.4.1 builds with the Go this project pins; v1.7 needs a newer toolchain.
version="${PILOTBOAT_GATEWAY_API_VERSION:-v1.4.1}"

log() { echo "gateway-api: $*" >&2; }
die() { log "$*"; exit 1; }

kubectl_bin="$state/bin/kubectl"
[ -x "$kubectl_bin" ] || kubectl_bin="$(command -v kubectl)" || die "no kubectl (run hack/cluster.sh up)"
kubectl() { "$kubectl_bin" --kubeconfig "$kubeconfig" "$@"; }
[ -s "$kubeconfig" ] || die "no kubeconfig at $kubeconfig (run hack/cluster.sh up)"

# `go mod download` needs no go.mod for module@version; run it away from any module so
# the project's own go.mod files (if any) play no part.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
dir="$(cd "$scratch" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$version" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
if [ -z "$dir" ] || [ ! -d "$dir/config/crd/standard" ]; then
  die "sigs.k8s.io/gateway-api@$version has no config/crd/standard in the module cache"
fi

crds=("$dir"/config/crd/standard/*.yaml)
names=()
for file in "${crds[@]}"; do
  names+=("$(sed -n 's/^  name: \(.*\)$/\1/p' "$file" | head -n1)")
done

installed() {  # every CRD exists, labelled with this bundle version
  local name got
  for name in "${names[@]}"; do
    got="$(kubectl get crd "$name" --ignore-not-found \
      -o jsonpath='{.metadata.annotations.gateway\.networking\.k8s\.io/bundle-version}')"
    [ "$got" = "$version" ] || return 1
  done
}

if installed; then
  log "Gateway API $version already installed"
  exit 0
fi
log "installing Gateway API $version (standard channel): ${names[*]}"
for file in "${crds[@]}"; do
  kubectl apply --server-side --force-conflicts --field-manager=pilotboat-gateway-api \
    -f "$file" >/dev/null
done
kubectl wait --for condition=Established --timeout=60s "${names[@]/#/crd/}" >/dev/null
log "Gateway API $version installed"
