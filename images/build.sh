#!/usr/bin/env bash
# Builds the two images the tests and the demo use, offline: a minimal Debian rootfs from debootstrap, packages from
# Debian and PyPI, then `docker import`. No container registry is needed.
#
#   images/build.sh            build whichever image is missing or out of date
#   images/build.sh --force    rebuild both
#
# An image is skipped when its tag exists and carries the label of this recipe's current hash, so an edit to this
# script or to an image's files rebuilds that image and nothing else.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
SINGLEUSER_TAG=${MUS_SINGLEUSER_IMAGE:-multiuser-spawner/singleuser:latest}
POSTGRES_TAG=${MUS_POSTGRES_IMAGE:-multiuser-spawner/postgres:15}
SUITE=bookworm
MIRROR=${MUS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
JUPYTERHUB_VERSION=${MUS_JUPYTERHUB_VERSION:-6.1.1}
CACHE=${MUS_IMAGE_CACHE:-/var/cache/multiuser-spawner}
LABEL=org.multiuser-spawner.recipe
force=0
[ "${1:-}" = "--force" ] && force=1

log() { printf '[images] %s\n' "$*" >&2; }

recipe_hash() {  # the recipe of one image: this script plus that image's own files
    { cat "$here/build.sh"; [ -d "$here/$1" ] && find "$here/$1" -type f -print0 | sort -z | xargs -0 cat; echo "$1"; } |
        sha256sum | cut -c1-16
}

up_to_date() {  # tag hash
    [ "$force" = 0 ] || return 1
    local have
    have=$(docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null) || return 1
    [ "$have" = "$2" ]
}

base_rootfs() {  # dest packages...  — a debootstrap tree, cached as a tarball per package set
    local dest=$1; shift
    local key tarball
    key=$(echo "$SUITE $MIRROR $*" | sha256sum | cut -c1-16)
    tarball="$CACHE/rootfs-$key.tar"
    mkdir -p "$CACHE"
    if [ ! -s "$tarball" ]; then
        log "debootstrap $SUITE with: $*"
        local tmp; tmp=$(mktemp -d)
        debootstrap --variant=minbase --include="$(IFS=,; echo "$*")" "$SUITE" "$tmp" "$MIRROR" >"$CACHE/debootstrap-$key.log" 2>&1 ||
            { tail -30 "$CACHE/debootstrap-$key.log" >&2; exit 1; }
        chroot "$tmp" apt-get clean
        rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin
        tar -C "$tmp" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
        rm -rf "$tmp"
    fi
    mkdir -p "$dest"
    tar -C "$dest" -xf "$tarball"
}

import_image() {  # rootfs tag hash changes...
    local rootfs=$1 tag=$2 hash=$3; shift 3
    local args=(--change "LABEL $LABEL=$hash")
    for c in "$@"; do args+=(--change "$c"); done
    tar -C "$rootfs" -c . | docker import "${args[@]}" - "$tag" >/dev/null
    log "built $tag"
}

build_singleuser() {
    local hash; hash=$(recipe_hash singleuser)
    if up_to_date "$SINGLEUSER_TAG" "$hash"; then log "$SINGLEUSER_TAG is up to date"; return; fi
    local root; root=$(mktemp -d)
    base_rootfs "$root" python3 python3-venv postgresql-client-15 ca-certificates procps
    chroot "$root" useradd --create-home --uid 1000 --user-group --shell /bin/bash jovyan
    # pip inside the chroot reaches PyPI only with this machine's CA bundle and name resolution; both are
    # lent for the install and taken away again so the image keeps its own.
    cp /etc/ssl/certs/ca-certificates.crt "$root/tmp/host-ca.crt"
    cp "$root/etc/hosts" "$root/tmp/hosts.orig"; cp /etc/hosts "$root/etc/hosts"
    cp "$root/etc/resolv.conf" "$root/tmp/resolv.orig" 2>/dev/null || true; cp /etc/resolv.conf "$root/etc/resolv.conf"
    chroot "$root" python3 -m venv /opt/venv
    chroot "$root" env -i PATH=/opt/venv/bin:/usr/bin:/bin PIP_CERT=/tmp/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
        /opt/venv/bin/pip install --no-cache-dir -q "jupyterhub==$JUPYTERHUB_VERSION" jupyter_server >&2
    mv "$root/tmp/hosts.orig" "$root/etc/hosts"
    if [ -e "$root/tmp/resolv.orig" ]; then mv "$root/tmp/resolv.orig" "$root/etc/resolv.conf"; else rm -f "$root/etc/resolv.conf"; fi
    rm -f "$root/tmp/host-ca.crt"
    import_image "$root" "$SINGLEUSER_TAG" "$hash" \
        "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        "ENV HOME=/home/jovyan" "ENV SHELL=/bin/bash" "ENV LANG=C.UTF-8" \
        "USER jovyan" "WORKDIR /home/jovyan" "EXPOSE 8888" 'CMD ["jupyterhub-singleuser"]'
    rm -rf "$root"
}

build_postgres() {
    local hash; hash=$(recipe_hash postgres)
    if up_to_date "$POSTGRES_TAG" "$hash"; then log "$POSTGRES_TAG is up to date"; return; fi
    local root; root=$(mktemp -d)
    base_rootfs "$root" postgresql-15
    install -m 0755 "$here/postgres/entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    mkdir -p "$root/var/lib/postgresql/data"
    chroot "$root" chown -R postgres:postgres /var/lib/postgresql
    import_image "$root" "$POSTGRES_TAG" "$hash" \
        "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        "ENV PGDATA=/var/lib/postgresql/data" "ENV LANG=C.UTF-8" "VOLUME /var/lib/postgresql/data" \
        "EXPOSE 5432" 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]'
    rm -rf "$root"
}

command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install -y debootstrap"; exit 1; }
docker info >/dev/null 2>&1 || { log "no Docker engine answers"; exit 1; }
build_singleuser &
su_pid=$!
build_postgres &
pg_pid=$!
status=0
wait "$su_pid" || status=1
wait "$pg_pid" || status=1
exit "$status"
