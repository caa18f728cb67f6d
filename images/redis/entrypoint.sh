#!/bin/sh
# Entrypoint with the interface of the official redis image: the command is `redis-server [config file] [options]`
# (a first argument that is an option or a *.conf file means redis-server), its working and data directory is /data
# and there is no config file unless one is given. Started as root, it gives whatever in /data is not the redis
# user's to it and runs the server as that user; started as another user (--user), it runs as that user.
set -eu

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups -- "$0" "$@"
fi

if [ "$1" = redis-server ]; then
    # The official image's Redis is built with protected mode off by default: a container is reachable only from the
    # networks it is put on. Debian's keeps Redis' default (on), which refuses every client but loopback while there
    # is no password. So unless protected-mode is given, on the command line or in the config file, it is turned off
    # here, after everything else, where options like --version (which must come first) are not disturbed.
    given=
    for arg in "$@"; do
        case $arg in --protected-mode) given=1 ;; esac
    done
    case ${2:-} in
        -v|--version|-h|--help|--test-memory|--check-system) given=1 ;;
        -*|'') ;;
        *) [ -f "$2" ] && grep -qiE '^[[:space:]]*protected-mode[[:space:]]' "$2" && given=1 ;;
    esac
    if [ -z "$given" ]; then
        # a last argument "-" (the rest of the config on stdin) has to stay last
        last=
        for last in "$@"; do :; done
        if [ "$last" = - ]; then
            n=$#
            for arg in "$@"; do
                [ "$n" = 1 ] && set -- "$@" --protected-mode no
                set -- "$@" "$arg"
                shift
                n=$((n - 1))
            done
        else
            set -- "$@" --protected-mode no
        fi
    fi
fi

# files the server writes are its own (the official image does the same unless a umask was set)
if [ "$(umask)" = 0022 ]; then
    umask 0077
fi
exec "$@"
