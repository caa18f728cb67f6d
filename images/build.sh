#!/usr/bin/env bash
# Builds the images the tests, the demo and the service presets use, offline: a minimal Debian rootfs from
# debootstrap, packages from Debian and PyPI, then `docker import`. No container registry is needed.
#
#   images/build.sh                    build whichever image is missing or out of date
#   images/build.sh redis rabbitmq     only these (the names of the directories beside this script)
#   images/build.sh --force [NAME...]  rebuild even when up to date
#   images/build.sh --list             each image, its tag and whether it is up to date
#
# Every directory here with a recipe.sh is an image. A recipe sets `tag`, `packages` (Debian packages for
# debootstrap), `changes` (`docker import --change` lines) and optionally `inputs` (anything else the result depends
# on, such as a pinned version) and a function `customize ROOT`, which runs with `dir` set to the recipe's directory.
#
# An image is skipped when its tag exists and carries the label of its recipe's current hash: lib.sh, every file in
# the image's directory and its `inputs`. An edit to one image's directory rebuilds that image and nothing else; an
# edit to lib.sh rebuilds all of them; this script only schedules and is not part of any hash, so whatever changes
# what an image contains belongs in lib.sh or in the image's directory. Images are built MUS_IMAGE_JOBS at a time
# (default: the number of CPUs); most of a build waits on the network, dpkg and Docker, one core each.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

force=0 list=0 names=()
for arg in "$@"; do
    case $arg in
        --force) force=1 ;;
        --list) list=1 ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) log "unknown option $arg"; exit 2 ;;
        *) names+=("$arg") ;;
    esac
done

all=()
for recipe in "$here"/*/recipe.sh; do
    all+=("$(basename "$(dirname "$recipe")")")
done
if [ "${#names[@]}" = 0 ]; then
    names=("${all[@]}")
fi
for name in "${names[@]}"; do
    [ -f "$here/$name/recipe.sh" ] || { log "no image called $name; there are: ${all[*]}"; exit 2; }
done

load_recipe() {  # name  — in the calling (sub)shell: the recipe's settings, `dir` and `hash`
    dir=$here/$1
    tag='' packages=() changes=() inputs=''
    customize() { :; }
    # shellcheck source=/dev/null
    . "$dir/recipe.sh"
    [ -n "$tag" ] || { log "$1/recipe.sh sets no tag"; exit 1; }
    hash=$(
        {
            cat "$here/lib.sh"
            (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | while IFS= read -r -d '' f; do
                printf '\n%s\n' "$f"; cat "$f"
            done)
            printf '\n%s\n%s\n' "$1" "$inputs"
        } | sha256sum | cut -c1-16
    )
}

up_to_date() {  # tag hash
    local have
    have=$(docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null) || return 1
    [ "$have" = "$2" ]
}

build_one() {  # name  — run in a subshell of its own
    load_recipe "$1"
    local started=$SECONDS root old
    log "building $tag"
    old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    root=$(mktemp -d)
    trap 'remove_tree "$root"' EXIT
    base_rootfs "$root" "${packages[@]}"
    customize "$root"
    import_image "$root" "$tag" "$hash" "${changes[@]}"
    log "built $tag in $((SECONDS - started)) s"
    # the image it replaces, unless a container still uses it
    if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$tag")" ]; then
        docker image rm "$old" >/dev/null 2>&1 || true
    fi
}

command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install -y debootstrap"; exit 1; }
docker info >/dev/null 2>&1 || { log "no Docker engine answers"; exit 1; }

todo=()
for name in "${names[@]}"; do
    state=$(
        load_recipe "$name"
        if up_to_date "$tag" "$hash"; then echo "up-to-date $tag"
        elif docker image inspect "$tag" >/dev/null 2>&1; then echo "out-of-date $tag"
        else echo "missing $tag"; fi
    )
    if [ "$list" = 1 ]; then
        printf '%-12s %-44s %s\n' "$name" "${state#* }" "${state%% *}"
    elif [ "$force" = 0 ] && [ "${state%% *}" = up-to-date ]; then
        log "${state#* } is up to date"
    else
        todo+=("$name")
    fi
done
[ "$list" = 0 ] || exit 0

jobs=${MUS_IMAGE_JOBS:-$(nproc)}
[ "$jobs" -ge 1 ] 2>/dev/null || jobs=1
declare -A running=()
failed=()
reap() {  # wait for one build to end
    local pid status=0
    wait -n -p pid "${!running[@]}" || status=$?
    [ "$status" = 0 ] || { failed+=("${running[$pid]}"); log "building ${running[$pid]} failed (exit $status)"; }
    unset "running[$pid]"
}
for name in "${todo[@]}"; do
    while [ "${#running[@]}" -ge "$jobs" ]; do reap; done
    build_one "$name" &
    running[$!]=$name
done
while [ "${#running[@]}" -gt 0 ]; do reap; done
[ "${#failed[@]}" = 0 ] || { log "failed: ${failed[*]}"; exit 1; }

# After a run over every image, the cached trees no recipe asks for any more (an old package set) go.
if [ "${#names[@]}" = "${#all[@]}" ] && [ -d "$CACHE" ]; then
    declare -A wanted=()
    for name in "${all[@]}"; do
        wanted[$(load_recipe "$name" && rootfs_key "${packages[@]}")]=1
    done
    for tarball in "$CACHE"/rootfs-*.tar; do
        [ -e "$tarball" ] || continue
        key=${tarball##*/rootfs-}; key=${key%.tar}
        if [ -z "${wanted[$key]:-}" ]; then
            log "removing the cached tree of a package set no recipe uses: ${tarball##*/}"
            rm -f "$tarball" "$tarball.lock" "$CACHE/debootstrap-$key.log"
        fi
    done
fi
