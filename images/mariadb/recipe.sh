# MariaDB 10.11 from Debian, with the official mariadb image's interface (see entrypoint.sh): MARIADB_USER,
# MARIADB_PASSWORD, MARIADB_DATABASE, MARIADB_ROOT_PASSWORD or MARIADB_RANDOM_ROOT_PASSWORD (or the MYSQL_*
# spellings), data in /var/lib/mysql, port 3306, scripts in /docker-entrypoint-initdb.d.
# shellcheck shell=bash disable=SC2034,SC2154  # variables for build.sh, which sets dir
tag=${MUS_MARIADB_IMAGE:-multiuser-spawner/mariadb:10}
packages=(mariadb-server xz-utils zstd)
changes=(
    "ENV LANG=C.UTF-8" "VOLUME /var/lib/mysql" "EXPOSE 3306"
    'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' 'CMD ["mariadbd"]'
)

customize() {  # root
    local root=$1
    install -m 0755 "$dir/entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    install -m 0644 "$dir/05-docker.cnf" "$root/etc/mysql/mariadb.conf.d/05-docker.cnf"
    # listen on every address, like the official image (Debian's config binds to 127.0.0.1)
    sed -Ei 's/^(bind-address)/#&/' "$root/etc/mysql/mariadb.conf.d/50-server.cnf"
    grep -rqs '^bind-address' "$root/etc/mysql" && { log "mariadb: a bind-address is left in /etc/mysql"; return 1; }
    # an empty data directory, so a new volume starts empty and the entrypoint initialises it
    rm -rf "$root/var/lib/mysql"
    mkdir -p "$root/var/lib/mysql" "$root/run/mysqld" "$root/docker-entrypoint-initdb.d"
    chroot "$root" chown mysql:mysql /var/lib/mysql /run/mysqld
    # the socket's directory is writable by any user the container is started as (--user)
    chmod 1777 "$root/run/mysqld"
    slim_rootfs "$root"
}
