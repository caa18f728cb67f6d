# PostgreSQL 15 from Debian, with the official postgres image's interface (see entrypoint.sh).
# shellcheck shell=bash disable=SC2034,SC2154  # variables for build.sh, which sets dir
tag=${MUS_POSTGRES_IMAGE:-multiuser-spawner/postgres:15}
packages=(postgresql-15)
changes=(
    "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    "ENV PGDATA=/var/lib/postgresql/data" "ENV LANG=C.UTF-8" "VOLUME /var/lib/postgresql/data"
    "EXPOSE 5432" 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]'
)

customize() {  # root
    install -m 0755 "$dir/entrypoint.sh" "$1/usr/local/bin/docker-entrypoint.sh"
    mkdir -p "$1/var/lib/postgresql/data"
    chroot "$1" chown -R postgres:postgres /var/lib/postgresql
}
