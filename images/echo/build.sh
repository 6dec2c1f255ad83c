#!/usr/bin/env bash
# Builds the echo image: the Python base plus /app/echo.py, run as nobody on port 8080.
# VERSION is not baked in: the same image is imported under several tags (ECHO_ALIASES in
# ../versions.env) and each pod says which version it is (VERSION or SERVICE_VERSION env).
# Called by hack/images.sh with BUILDAH, REF, VERSION, OUT, WORK, SOURCE_DATE_EPOCH and
# BASE_ARCHIVE (the python-base oci-archive) set.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ctr=$($BUILDAH from --quiet "oci-archive:$BASE_ARCHIVE")
trap '$BUILDAH rm "$ctr" >/dev/null 2>&1 || true' EXIT
$BUILDAH copy --quiet --chmod 0644 "$ctr" "$here/echo.py" /app/echo.py
$BUILDAH config --cmd '[]' "$ctr"  # the base's cmd, cleared before the entrypoint is set
$BUILDAH config --os linux --arch amd64 --workingdir /app --user 65534:65534 --port 8080/tcp \
  --env PORT=8080 \
  --entrypoint '["python3", "/app/echo.py"]' \
  --label org.opencontainers.image.title=echo \
  --label org.opencontainers.image.version="$VERSION" \
  --label org.opencontainers.image.source=pilotboat/images/echo \
  --label org.opencontainers.image.base.name=localhost/pilotboat/python-base "$ctr"
$BUILDAH commit --quiet --omit-history --identity-label=false --timestamp "$SOURCE_DATE_EPOCH" "$ctr" "$REF" >/dev/null
