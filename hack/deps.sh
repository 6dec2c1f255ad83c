#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, only those missing, so a fresh
# machine needs no step by hand and a warm one spends a second here.
set -euo pipefail
# chromium: the dashboard test looks at the page in a real browser (headless).
packages=(openssl ca-certificates curl postgresql prometheus lua5.4 iproute2 chromium "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged servers; the project runs its own on loopback instead.
for svc in prometheus postgresql; do
  if command -v systemctl >/dev/null && systemctl is-active -q "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
