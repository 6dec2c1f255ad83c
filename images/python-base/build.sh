#!/usr/bin/env bash
# Builds the Python base image: a Debian bookworm minbase rootfs made by mmdebstrap (Debian's
# own tool) with the packages listed in ./packages, without docs, man pages, locales and apt
# lists, as a single layer.
# Called by hack/images.sh with BUILDAH, REF, VERSION, OUT, WORK, SOURCE_DATE_EPOCH and
# APT_SOURCES (one "deb URI SUITE COMPONENTS" line each) set.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
packages=$(sed 's/#.*//' "$here/packages" | xargs | tr ' ' ',')
mapfile -t sources <<<"$APT_SOURCES"
# SOURCE_DATE_EPOCH makes mmdebstrap's output reproducible for the same package versions.
# The merged-usr hook sets /usr up the way debootstrap does (usr-is-merged) instead of
# installing the usrmerge package, which would pull in perl (50 MB).
# shellcheck disable=SC2016  # "$1" in the hook is mmdebstrap's, the chroot's path
mmdebstrap --quiet --mode=root --variant=minbase --include="$packages" \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --dpkgopt='path-exclude=/usr/share/linda/*' \
  --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/* "$1"/var/cache/debconf/*-old "$1"/var/lib/dpkg/*-old "$1"/var/cache/ldconfig/aux-cache' \
  --skip=output/dev,output/mknod \
  bookworm "$WORK/rootfs.tar" "${sources[@]}" >"$WORK/mmdebstrap.log" 2>&1 \
  || { tail -40 "$WORK/mmdebstrap.log" >&2; exit 1; }
ctr=$($BUILDAH from scratch)
trap '$BUILDAH rm "$ctr" >/dev/null 2>&1 || true' EXIT
$BUILDAH add --quiet "$ctr" "$WORK/rootfs.tar" /
$BUILDAH config --os linux --arch amd64 \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 --env PYTHONUNBUFFERED=1 --env PYTHONDONTWRITEBYTECODE=1 \
  --cmd '["python3"]' \
  --label org.opencontainers.image.title=python-base \
  --label org.opencontainers.image.version="$VERSION" \
  --label org.opencontainers.image.base.name=debian:bookworm \
  --label org.opencontainers.image.source=pilotboat/images/python-base "$ctr"
$BUILDAH commit --quiet --omit-history --identity-label=false --timestamp "$SOURCE_DATE_EPOCH" "$ctr" "$REF" >/dev/null
