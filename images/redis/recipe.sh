# Redis 7 from Debian, with the official redis image's interface (see entrypoint.sh): data in /data, port 6379,
# the command `redis-server [config file] [options]`.
# shellcheck shell=bash disable=SC2034,SC2154  # variables for build.sh, which sets dir
tag=${MUS_REDIS_IMAGE:-multiuser-spawner/redis:7}
packages=(redis-server)
changes=(
    "ENV LANG=C.UTF-8" "VOLUME /data" "WORKDIR /data" "EXPOSE 6379"
    'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' 'CMD ["redis-server"]'
)

customize() {  # root
    local root=$1
    install -m 0755 "$dir/entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    # like the official image, no config file: Debian's binds to 127.0.0.1 and would only confuse
    rm -rf "$root/etc/redis"
    mkdir -p "$root/data"
    chroot "$root" chown redis:redis /data
    slim_rootfs "$root"
}
