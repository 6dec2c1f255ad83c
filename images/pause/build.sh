#!/usr/bin/env bash
# Builds the pause image: one static binary, /pause, run as 65535:65535.
# Called by hack/images.sh with BUILDAH, REF, VERSION, OUT, WORK and SOURCE_DATE_EPOCH set.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
gcc -static -Os -s -Wall -Wextra -Werror -ffile-prefix-map="$here"=. \
  -DVERSION="\"$VERSION\"" -o "$WORK/pause" "$here/pause.c"
ctr=$($BUILDAH from scratch)
trap '$BUILDAH rm "$ctr" >/dev/null 2>&1 || true' EXIT
$BUILDAH copy --quiet --chmod 0755 "$ctr" "$WORK/pause" /pause
$BUILDAH config --entrypoint '["/pause"]' --user 65535:65535 --os linux --arch amd64 \
  --label org.opencontainers.image.title=pause \
  --label org.opencontainers.image.version="$VERSION" \
  --label org.opencontainers.image.source=pilotboat/images/pause "$ctr"
$BUILDAH commit --quiet --omit-history --identity-label=false --timestamp "$SOURCE_DATE_EPOCH" "$ctr" "$REF" >/dev/null
