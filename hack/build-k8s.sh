#!/usr/bin/env bash
# Builds the local cluster's binaries from the Go module proxy into a cache outside the
# repository, keyed by version, so a second run finds them and returns at once.
#   hack/build-k8s.sh control-plane   etcd, kube-apiserver, kube-controller-manager,
#                                     kube-scheduler, kubectl, kwok
#   hack/build-k8s.sh node            kubelet, kube-proxy
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
cache="${PILOTBOAT_CACHE:-$HOME/.cache/pilotboat}"
k8s_bin="$cache/bin/kubernetes-$KUBERNETES_VERSION"
etcd_bin="$cache/bin/etcd-$ETCD_VERSION"
kwok_bin="$cache/bin/kwok-$KWOK_VERSION"
mkdir -p "$k8s_bin" "$etcd_bin" "$kwok_bin"

major="${KUBERNETES_VERSION#v}"; major="${major%%.*}"
minor="${KUBERNETES_VERSION#v*.}"; minor="${minor%%.*}"
build_date="2000-01-01T00:00:00Z"  # fixed, so builds are reproducible
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date -X $pkg.gitCommit=module-proxy"
done

build_k8s() {  # build_k8s NAME...: the named k8s.io/kubernetes commands that are missing
  local missing=() name
  for name in "$@"; do [ -x "$k8s_bin/$name" ] || missing+=("k8s.io/kubernetes/cmd/$name"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "building ${missing[*]} ($KUBERNETES_VERSION) into $k8s_bin" >&2
  (cd "$here/k8s" && go build -trimpath -ldflags "$k8s_ldflags" -o "$k8s_bin/" "${missing[@]}")
}

build_etcd() {
  [ -x "$etcd_bin/etcd" ] && return 0
  echo "building etcd $ETCD_VERSION into $etcd_bin" >&2
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$etcd_bin/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() {
  [ -x "$kwok_bin/kwok" ] && return 0
  echo "building kwok $KWOK_VERSION into $kwok_bin" >&2
  GOBIN="$kwok_bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
}

case "${1:-control-plane}" in
  control-plane)
    build_etcd
    build_k8s kube-apiserver kube-controller-manager kube-scheduler kubectl
    build_kwok ;;
  node) build_k8s kubelet kube-proxy ;;
  *) echo "usage: $0 [control-plane|node]" >&2; exit 2 ;;
esac
