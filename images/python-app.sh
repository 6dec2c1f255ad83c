# Shared by hack/images.sh (imports) and the builders of the Python application images
# (images/operator/build.sh, examples/shop/build.sh): the app's pinned wheels and its
# source, byte-compiled, as one layer on localhost/pilotboat/python-base. Source it after hack/node/lib.sh; it defines
# functions only.
#
# The build container has no network: the dependencies are installed on the host, by
# Debian's python3 (the image's own Python, 3.11) with pip install --target from PyPI's
# manylinux / pure wheels for CPython 3.11 x86_64, pinned in a requirements file (transitive
# ones too, installed --no-deps), byte-compiled with hash-based .pyc (valid whatever the
# files' times, the same bytes on every build) and given SOURCE_DATE_EPOCH as their time.
# shellcheck shell=bash

pyapp_python=/usr/bin/python3  # Debian bookworm's, the image's own: the same .pyc magic

# pyapp_by_hand IMAGE ALIAS [all|build|import|ref]: a builder run by hand, without
# BASE_ARCHIVE: hack/images.sh builds the base and calls the builder back; `ref` prints the
# reference of IMAGE that is not its ALIAS. Never returns.
pyapp_by_hand() {
  local image=$1 alias=$2 refs
  case "${3:-all}" in
    all|build|import) exec "$pb_repo/hack/images.sh" "${3:-all}" ;;
    ref) refs=$("$pb_repo/hack/images.sh" refs)
         grep "^$image:" <<<"$refs" | grep -v ":$alias\$"; exit ;;
    *) echo "usage: $0 [all|build|import|ref]" >&2; exit 2 ;;
  esac
}

# pyapp_tag FILE...: a short hash of the files (paths relative to the current directory),
# the base archive, the build time and the tools' versions: the image's tag.
pyapp_tag() {
  {
    find "$@" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum
    printf '%s\n' "$(basename "$BASE_ARCHIVE")" "$SOURCE_DATE_EPOCH" "$($BUILDAH --version)" \
      "$("$pyapp_python" -m pip --version | cut -d' ' -f1-2)" "$("$pyapp_python" --version)"
  } | sha256sum | cut -c1-16
}

# pyapp_stage APP REQUIREMENTS SRC PACKAGE...: the wheels into APP/lib, the packages' .py
# files (paths relative to SRC) into APP, all compiled for /app.
pyapp_stage() {
  local app=$1 requirements=$2 src=$3; shift 3
  pb_ensure_packages python3-pip
  umask 022
  mkdir -p "$app"
  PIP_CONFIG_FILE=/dev/null PIP_ROOT_USER_ACTION=ignore "$pyapp_python" -m pip install --quiet \
    --disable-pip-version-check --no-warn-script-location --no-compile --no-deps \
    --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 \
    --target "$app/lib" -r "$requirements"
  rm -rf "$app/lib/bin"  # console scripts with the host's interpreter path
  (cd "$src" && find "$@" -name '*.py' ! -path '*/__pycache__/*' -print0 \
    | xargs -0 cp --parents -t "$app")
  "$pyapp_python" -m compileall -q -j 0 --invalidation-mode unchecked-hash -s "$app" -p /app \
    "$app" >/dev/null
  find "$app" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
}

# pyapp_commit APP REF OUT CONFIG...: APP copied to /app on the base, configured with the
# buildah config arguments CONFIG, committed and written to the oci-archive OUT (and its
# digest to OUT.digest). Other archives of the same image name in OUT's folder go.
pyapp_commit() {
  local app=$1 ref=$2 out=$3 ctr; shift 3
  ctr=$($BUILDAH from --quiet "oci-archive:$BASE_ARCHIVE")
  $BUILDAH copy --quiet --chown 0:0 "$ctr" "$app" /app
  $BUILDAH config --cmd '[]' "$ctr"
  $BUILDAH config --os linux --arch amd64 --workingdir /app --user 65534:65534 \
    --env PYTHONPATH=/app:/app/lib \
    --label org.opencontainers.image.version="${ref##*:}" \
    --label org.opencontainers.image.base.name=localhost/pilotboat/python-base "$@" "$ctr"
  $BUILDAH commit --quiet --omit-history --identity-label=false --timestamp "$SOURCE_DATE_EPOCH" \
    "$ctr" "$ref" >/dev/null
  $BUILDAH rm "$ctr" >/dev/null
  $BUILDAH push --quiet --digestfile "$out.digest.new" "$ref" "oci-archive:$out.new:$ref"
  $BUILDAH rmi "$ref" >/dev/null
  mv "$out.new" "$out"
  mv "$out.digest.new" "$out.digest"
  local stem
  stem=$(basename "$out" | sed 's/-[0-9a-f]*\.oci\.tar$//')
  find "$(dirname "$out")" -maxdepth 1 -name "$stem-*.oci.tar*" ! -name "$(basename "$out")*" -delete
}

# pyapp_build REF OUT REQUIREMENTS SRC PACKAGE CONFIG...: the image REF of PACKAGE (a folder
# of SRC) and its pinned wheels, configured with CONFIG, written to OUT, unless OUT exists.
pyapp_build() {
  local ref=$1 out=$2 requirements=$3 src=$4 package=$5; shift 5
  [ -s "$out" ] && [ -s "$out.digest" ] && return 0
  pb_log "building $ref"
  local start=$SECONDS work
  work=$(mktemp -d "$(dirname "$out")/work.XXXXXX")
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" RETURN
  pyapp_stage "$work/app" "$requirements" "$src" "$package"
  pyapp_commit "$work/app" "$ref" "$out" "$@"
  pb_log "built $ref $(cat "$out.digest") in $((SECONDS - start))s ($(du -h "$out" | cut -f1))"
}

# pyapp_import OUT REF [ALIAS]: OUT imported into the node's containerd as REF (skipped when
# it already holds that digest), and tagged ALIAS too when given.
pyapp_import() {
  local out=$1 ref=$2 alias=${3:-} want have c=(ctr -a "$pb_containerd_sock" -n k8s.io)
  want=$(cat "$out.digest")
  have=$("${c[@]}" images ls "name==$ref" 2>/dev/null | awk 'NR > 1 {print $3}')
  if [ "$have" = "$want" ]; then
    pb_log "$ref already imported ($want)"
  else
    pb_log "importing $ref $want"
    "${c[@]}" images import --no-unpack=false --all-platforms=false --index-name="" "$out" >/dev/null
  fi
  [ -n "$alias" ] || return 0
  have=$("${c[@]}" images ls "name==$alias" 2>/dev/null | awk 'NR > 1 {print $3}')
  [ "$have" = "$want" ] || "${c[@]}" images tag --force "$ref" "$alias" >/dev/null
}
