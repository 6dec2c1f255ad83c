#!/usr/bin/env bash
# Builds the Argo Rollouts controller that `make bench` (bench/argo_rollouts.py) runs beside
# Pilotboat, from the Go module proxy into the cache outside the repository, and copies its
# CRDs from the module there too. Idempotent: returns at once when the binary is cached.
# About 7 CPU minutes on the 2-core machine the first time; not part of `make test`.
#   hack/argo-rollouts/build.sh     prints the directory holding rollouts-controller and crds/
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(cd "$here" && sed -n 's|^require github.com/argoproj/argo-rollouts \(v[^ ]*\)$|\1|p' go.mod)"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
cache="${PILOTBOAT_CACHE:-$HOME/.cache/pilotboat}"
out="$cache/bin/argo-rollouts-$version"
module=github.com/argoproj/argo-rollouts

if [ ! -x "$out/rollouts-controller" ] || [ ! -d "$out/crds" ]; then
  mkdir -p "$out"
  cd "$here"
  if [ ! -x "$out/rollouts-controller" ]; then
    echo "building argo-rollouts $version rollouts-controller into $out" >&2
    pkg="$module/utils/version"
    ldflags="-s -w -X $pkg.version=${version#v} -X $pkg.gitTag=$version"
    ldflags+=" -X $pkg.gitCommit=module-proxy -X $pkg.gitTreeState=clean"
    ldflags+=" -X $pkg.buildDate=2000-01-01T00:00:00Z"  # fixed, so builds are reproducible
    # Build into a temporary name: an interrupted build must not look cached.
    nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$out/rollouts-controller.tmp" \
      "$module/cmd/rollouts-controller"
    mv "$out/rollouts-controller.tmp" "$out/rollouts-controller"
  fi
  src="$(go list -m -f '{{.Dir}}' "$module")"
  rm -rf "$out/crds.tmp"
  mkdir -p "$out/crds.tmp"
  cp "$src"/manifests/crds/*-crd.yaml "$out/crds.tmp/"
  chmod u+w "$out"/crds.tmp/*.yaml  # the module cache is read-only
  rm -rf "$out/crds"
  mv "$out/crds.tmp" "$out/crds"
fi
echo "$out"
