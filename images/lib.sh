# Helpers shared by every image's recipe, sourced by images/build.sh. This file is part of every image's recipe
# hash, so an edit here rebuilds all images; keep what only one image needs in that image's own directory.
# shellcheck shell=bash

SUITE=bookworm
MIRROR=${MUS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${MUS_IMAGE_CACHE:-/var/cache/multiuser-spawner}
LABEL=org.multiuser-spawner.recipe

log() { printf '[images] %s\n' "$*" >&2; }

rootfs_key() {  # packages...  — names the cached tarball of that package set
    echo "$SUITE $MIRROR $*" | sha256sum | cut -c1-16
}

base_rootfs() {  # dest packages...  — a debootstrap tree, cached as a tarball per package set
    local dest=$1; shift
    local key tarball
    key=$(rootfs_key "$@")
    tarball="$CACHE/rootfs-$key.tar"
    mkdir -p "$CACHE"
    (
        # two recipes with the same package set, built at once, bootstrap it once
        flock 8
        if [ ! -s "$tarball" ]; then
            log "debootstrap $SUITE with: $*"
            local tmp; tmp=$(mktemp -d)
            debootstrap --variant=minbase --include="$(IFS=,; echo "$*")" "$SUITE" "$tmp" "$MIRROR" \
                >"$CACHE/debootstrap-$key.log" 2>&1 ||
                { tail -30 "$CACHE/debootstrap-$key.log" >&2; remove_tree "$tmp"; exit 1; }
            chroot "$tmp" apt-get clean
            rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin
            tar -C "$tmp" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
            remove_tree "$tmp"
        fi
    ) 8>"$tarball.lock"
    mkdir -p "$dest"
    tar -C "$dest" -xf "$tarball"
}

remove_tree() {  # dir  — a build tree; whatever a failed debootstrap left mounted in it is unmounted first
    local dir=$1 mnt
    [ -d "$dir" ] || return 0
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mnt; do
        umount -l "$mnt" || true
    done
    rm -rf --one-file-system "$dir"
}

lend_network() {  # root  — this machine's CA bundle and name resolution, for pip inside the chroot
    local root=$1
    cp /etc/ssl/certs/ca-certificates.crt "$root/tmp/host-ca.crt"
    cp "$root/etc/hosts" "$root/tmp/hosts.orig"; cp /etc/hosts "$root/etc/hosts"
    cp "$root/etc/resolv.conf" "$root/tmp/resolv.orig" 2>/dev/null || true; cp /etc/resolv.conf "$root/etc/resolv.conf"
}

return_network() {  # root  — and taken away again, so the image keeps its own
    local root=$1
    mv "$root/tmp/hosts.orig" "$root/etc/hosts"
    if [ -e "$root/tmp/resolv.orig" ]; then mv "$root/tmp/resolv.orig" "$root/etc/resolv.conf"; else rm -f "$root/etc/resolv.conf"; fi
    rm -f "$root/tmp/host-ca.crt"
}

import_image() {  # rootfs tag hash changes...
    local rootfs=$1 tag=$2 hash=$3; shift 3
    local args=(--change "LABEL $LABEL=$hash")
    for c in "$@"; do args+=(--change "$c"); done
    tar -C "$rootfs" -c . | docker import "${args[@]}" - "$tag" >/dev/null
}

slim_rootfs() {  # root  — documentation, manual pages and message translations, which nothing in a container reads
    local root=$1
    find "$root/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/lintian
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
    rm -f "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
    find "$root/var/log" -type f -exec truncate -s 0 {} +
}
