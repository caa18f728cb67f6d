#!/bin/bash
# Entrypoint with the interface of the official mariadb image. The command is mariadbd (or mysqld) and its options
# (a first argument that is an option means mariadbd). On the first start, when the data directory (/var/lib/mysql)
# holds no database, it is initialised from these variables, each also read from a file named by *_FILE, and each
# also accepted in its MYSQL_* spelling:
#
#   MARIADB_ROOT_PASSWORD, MARIADB_ROOT_PASSWORD_HASH, MARIADB_RANDOM_ROOT_PASSWORD or
#   MARIADB_ALLOW_EMPTY_ROOT_PASSWORD   one of them is required; a random password is printed to the log
#   MARIADB_ROOT_HOST                   where root may connect from besides localhost (default %)
#   MARIADB_DATABASE                    a database to create
#   MARIADB_USER, MARIADB_PASSWORD (or MARIADB_PASSWORD_HASH)
#                                       a user to create ('user'@'%'), with all privileges on MARIADB_DATABASE
#   MARIADB_INITDB_SKIP_TZINFO          leave the time zone tables empty
#
# then /docker-entrypoint-initdb.d/* run in order (*.sh, *.sql, *.sql.gz, *.sql.xz, *.sql.zst). All of this happens
# on a server that listens on no TCP port (skip-networking), so an open port 3306 means the database is ready.
# Later starts use the data as it is. Started as root, it gives the data directory to the mysql user and runs the
# server as that user; started as another user (--user), it runs as that user.
set -eo pipefail
shopt -s nullglob

note() { printf '%s [Note] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$*"; }
warn() { printf '%s [Warn] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$*" >&2; }
die() { printf '%s [ERROR] [Entrypoint]: %s\n' "$(date --rfc-3339=seconds)" "$*" >&2; exit 1; }

# from_file VAR: VAR, or the contents of the file VAR_FILE names (not both)
from_file() {
    local var=$1 file_var=${1}_FILE
    if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
        die "both $var and $file_var are set (but are exclusive)"
    fi
    if [ -n "${!file_var:-}" ]; then
        export "$var"="$(<"${!file_var}")"
    fi
    unset "$file_var"
}

# setting NAME [DEFAULT]: MARIADB_NAME, else MYSQL_NAME, else DEFAULT; both spellings end up with the value
setting() {
    local maria=MARIADB_$1 mysql=MYSQL_$1
    from_file "$maria"
    from_file "$mysql"
    local value=${!maria:-${!mysql:-${2:-}}}
    export "$maria"="$value" "$mysql"="$value"
}

wants_help() {  # an option that makes mariadbd print something and stop
    local arg
    for arg; do
        case $arg in -'?'|--help|--print-defaults|-V|--version) return 0 ;; esac
    done
    return 1
}

server_setting() {  # name mariadbd-args...  — what the server will use, from its config files and its defaults
    local name=$1; shift
    "$@" --verbose --help 2>/dev/null |
        awk -v name="$name" '$1 == name && /^[^ \t]/ { sub(/^[^ \t]+[ \t]+/, ""); print; exit }'
}

sql_string() {  # a value for inside '...' in SQL: backslashes and quotes escaped
    local s=${1//\\/\\\\}
    s=${s//$'\n'/\\n}
    printf '%s' "${s//\'/\\\'}"
}

sql_name() {  # a name for inside `...`
    printf '%s' "${1//\`/\`\`}"
}

client() {  # mariadb-args...  — as root, over the socket of the server being set up
    MYSQL_PWD=${root_password_now:-} mariadb --protocol=socket --socket="$SOCKET" -uroot -hlocalhost "$@"
}

run_init_files() {
    local f
    for f in /docker-entrypoint-initdb.d/*; do
        case $f in
            *.sh)
                # shellcheck disable=SC1090
                if [ -x "$f" ]; then note "running $f"; "$f"
                else note "sourcing $f"; . "$f"; fi ;;
            *.sql) note "running $f"; client ${MARIADB_DATABASE:+--database="$MARIADB_DATABASE"} <"$f" ;;
            *.sql.gz) note "running $f"; gunzip -c "$f" | client ${MARIADB_DATABASE:+--database="$MARIADB_DATABASE"} ;;
            *.sql.xz) note "running $f"; xzcat "$f" | client ${MARIADB_DATABASE:+--database="$MARIADB_DATABASE"} ;;
            *.sql.zst) note "running $f"; zstd -dc "$f" | client ${MARIADB_DATABASE:+--database="$MARIADB_DATABASE"} ;;
            *) warn "ignoring $f" ;;
        esac
    done
}

initialise() {  # mariadbd-args...
    if [ -z "$MARIADB_ROOT_PASSWORD" ] && [ -z "$MARIADB_ROOT_PASSWORD_HASH" ] &&
        [ -z "$MARIADB_ALLOW_EMPTY_ROOT_PASSWORD" ] && [ -z "$MARIADB_RANDOM_ROOT_PASSWORD" ]; then
        die "Database is uninitialized and password option is not specified
	You need to specify one of MARIADB_ROOT_PASSWORD, MARIADB_ROOT_PASSWORD_HASH, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD and MARIADB_RANDOM_ROOT_PASSWORD"
    fi
    if [ -n "$MARIADB_ROOT_PASSWORD_HASH" ] && { [ -n "$MARIADB_ROOT_PASSWORD" ] ||
        [ -n "$MARIADB_ALLOW_EMPTY_ROOT_PASSWORD" ] || [ -n "$MARIADB_RANDOM_ROOT_PASSWORD" ]; }; then
        die "Cannot specify MARIADB_ROOT_PASSWORD_HASH and another MARIADB_ROOT_PASSWORD* option."
    fi
    if [ -n "$MARIADB_PASSWORD" ] && [ -n "$MARIADB_PASSWORD_HASH" ]; then
        die "Cannot specify MARIADB_PASSWORD_HASH and MARIADB_PASSWORD option."
    fi
    ls /docker-entrypoint-initdb.d/ >/dev/null

    note "Initializing database files"
    mariadb-install-db --datadir="$DATADIR" --rpm --auth-root-authentication-method=normal "${@:2}" \
        --skip-test-db --default-time-zone=SYSTEM --enforce-storage-engine= --skip-log-bin --expire-logs-days=0 \
        --loose-innodb_buffer_pool_load_at_startup=0 --loose-innodb_buffer_pool_dump_at_shutdown=0 >/dev/null
    note "Database files initialized"

    note "Starting temporary server"
    "$@" --skip-networking --default-time-zone=SYSTEM --socket="$SOCKET" --wsrep_on=OFF --expire-logs-days=0 \
        --loose-innodb_buffer_pool_load_at_startup=0 &
    local pid=$! i
    for i in {300..0}; do
        client --database=mysql <<<'SELECT 1' &>/dev/null && break
        kill -0 "$pid" 2>/dev/null || die "Unable to start server."
        sleep 0.1
    done
    [ "$i" != 0 ] || die "Unable to start server."
    note "Temporary server started."

    if [ -z "$MARIADB_INITDB_SKIP_TZINFO" ]; then
        mariadb-tzinfo-to-sql --skip-write-binlog /usr/share/zoneinfo 2>/dev/null | client --database=mysql
    fi
    if [ -n "$MARIADB_RANDOM_ROOT_PASSWORD" ]; then
        # (no pipe from /dev/urandom: its writer would die of SIGPIPE, and with it, under pipefail, this script)
        MARIADB_ROOT_PASSWORD=$(LC_ALL=C tr -dc 'A-Za-z0-9!#%&()*+,./:;<=>?@^_{|}~-' < <(head -c 2048 /dev/urandom))
        MARIADB_ROOT_PASSWORD=${MARIADB_ROOT_PASSWORD:0:32}
        export MARIADB_ROOT_PASSWORD MYSQL_ROOT_PASSWORD=$MARIADB_ROOT_PASSWORD
        note "GENERATED ROOT PASSWORD: $MARIADB_ROOT_PASSWORD"
    fi

    local root_password user_password sql=''
    root_password=$(sql_string "$MARIADB_ROOT_PASSWORD")
    if [ -n "$MARIADB_ROOT_HOST" ] && [ "$MARIADB_ROOT_HOST" != localhost ]; then
        local root_at
        root_at="'root'@'$(sql_string "$MARIADB_ROOT_HOST")'"
        if [ -n "$MARIADB_ROOT_PASSWORD_HASH" ]; then
            sql+="CREATE USER $root_at IDENTIFIED BY PASSWORD '$(sql_string "$MARIADB_ROOT_PASSWORD_HASH")';"$'\n'
        else
            sql+="CREATE USER $root_at IDENTIFIED BY '$root_password';"$'\n'
        fi
        sql+="GRANT ALL ON *.* TO $root_at WITH GRANT OPTION;"$'\n'
        sql+="GRANT PROXY ON ''@'%' TO $root_at WITH GRANT OPTION;"$'\n'
    fi
    if [ -n "$MARIADB_DATABASE" ]; then
        note "Creating database $MARIADB_DATABASE"
        sql+="CREATE DATABASE IF NOT EXISTS \`$(sql_name "$MARIADB_DATABASE")\`;"$'\n'
    fi
    if [ -n "$MARIADB_USER" ] && { [ -n "$MARIADB_PASSWORD" ] || [ -n "$MARIADB_PASSWORD_HASH" ]; }; then
        note "Creating user $MARIADB_USER"
        local user_at
        user_at="'$(sql_string "$MARIADB_USER")'@'%'"
        if [ -n "$MARIADB_PASSWORD_HASH" ]; then
            sql+="CREATE USER $user_at IDENTIFIED BY PASSWORD '$(sql_string "$MARIADB_PASSWORD_HASH")';"$'\n'
        else
            user_password=$(sql_string "$MARIADB_PASSWORD")
            sql+="CREATE USER $user_at IDENTIFIED BY '$user_password';"$'\n'
        fi
        if [ -n "$MARIADB_DATABASE" ]; then
            note "Giving user $MARIADB_USER access to schema $MARIADB_DATABASE"
            # in a grant, _ matches any character
            sql+="GRANT ALL ON \`$(sql_name "${MARIADB_DATABASE//_/\\_}")\`.* TO $user_at;"$'\n'
        fi
    fi

    note "Securing system users (equivalent to running mysql_secure_installation)"
    client --database=mysql --binary-mode <<EOSQL
SET @orig_sql_log_bin = @@SESSION.SQL_LOG_BIN;
SET @@SESSION.SQL_LOG_BIN=0;
SET @@SESSION.SQL_MODE=REPLACE(@@SESSION.SQL_MODE, 'NO_BACKSLASH_ESCAPES', '');
DROP USER IF EXISTS root@'127.0.0.1', root@'::1';
EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS root@\'', @@hostname, '\'');
$( [ -n "$MARIADB_ROOT_PASSWORD_HASH" ] || echo "SET PASSWORD FOR 'root'@'localhost' = PASSWORD('$root_password');" )
SET @@SESSION.SQL_LOG_BIN=@orig_sql_log_bin;
$sql
EOSQL
    root_password_now=$MARIADB_ROOT_PASSWORD

    run_init_files
    if [ -n "$MARIADB_ROOT_PASSWORD_HASH" ]; then
        note "Setting root@localhost password hash"
        client --binary-mode <<<"SET @@SESSION.SQL_LOG_BIN=0; SET PASSWORD FOR 'root'@'localhost' = '$(sql_string "$MARIADB_ROOT_PASSWORD_HASH")';"
    fi

    note "Stopping temporary server"
    kill "$pid"
    wait "$pid"
    note "Temporary server stopped"
    note "MariaDB init process done. Ready for start up."
}

if [ "${1:0:1}" = - ]; then
    set -- mariadbd "$@"
fi

if { [ "$1" = mariadbd ] || [ "$1" = mysqld ]; } && ! wants_help "$@"; then
    errors=$("$@" --verbose --help 2>&1 >/dev/null) ||
        die "mariadbd failed while attempting to check config"$'\n\t'"command was: $* --verbose --help"$'\n\t'"$errors"
    DATADIR=$(server_setting datadir "$@")
    SOCKET=$(server_setting socket "$@")

    if [ "$(id -u)" = 0 ]; then
        mkdir -p "$DATADIR"
        find "$DATADIR" \! -user mysql -exec chown mysql: '{}' +
        find "${SOCKET%/*}" -maxdepth 0 \! -user mysql -exec chown mysql: '{}' \;
        exec setpriv --reuid=mysql --regid=mysql --init-groups -- "$0" "$@"
    fi

    setting ROOT_HOST %
    setting DATABASE
    setting USER
    setting PASSWORD
    setting ROOT_PASSWORD
    setting RANDOM_ROOT_PASSWORD
    setting INITDB_SKIP_TZINFO
    from_file MARIADB_PASSWORD_HASH
    from_file MARIADB_ROOT_PASSWORD_HASH
    : "${MARIADB_ALLOW_EMPTY_ROOT_PASSWORD:=${MYSQL_ALLOW_EMPTY_PASSWORD:-}}"
    export MARIADB_ALLOW_EMPTY_ROOT_PASSWORD MYSQL_ALLOW_EMPTY_PASSWORD=$MARIADB_ALLOW_EMPTY_ROOT_PASSWORD

    if [ ! -d "$DATADIR/mysql" ]; then
        initialise "$@"
    fi
fi

exec "$@"
