#!/bin/bash
# Entrypoint with the interface of the official rabbitmq image: RABBITMQ_DEFAULT_USER, RABBITMQ_DEFAULT_PASS and
# RABBITMQ_DEFAULT_VHOST (read by RabbitMQ itself, on the first start of an empty data directory), every other
# RABBITMQ_* variable RabbitMQ knows, config in /etc/rabbitmq/rabbitmq.conf and conf.d, data in /var/lib/rabbitmq
# (the node's database under mnesia/rabbit@HOSTNAME: keep the hostname to keep the data).
#
# Started as root, it gives whatever in /var/lib/rabbitmq is not the rabbitmq user's to it and runs the server as that
# user; started as another user (--user), it runs as that user.
set -euo pipefail

if [[ "$1" == rabbitmq* ]] && [ "$(id -u)" = 0 ]; then
    if [ "$1" = rabbitmq-server ]; then
        find /var/lib/rabbitmq \! -user rabbitmq -exec chown rabbitmq '{}' +
    fi
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups -- "$0" "$@"
fi

# if long and short hostnames are not the same, use long hostnames
if [ -z "${RABBITMQ_USE_LONGNAME:-}" ] && [ "$(hostname)" != "$(hostname -s)" ]; then
    export RABBITMQ_USE_LONGNAME=true
fi

# RabbitMQ sizes its memory high watermark (0.4 of the total by default) from the machine's memory, not the
# container's limit, so under a limit it would be killed before it ever pushed back on publishers. Unless a config
# file says otherwise, the total it works from is the container's limit.
if [ "$1" = rabbitmq-server ] && ! grep -qs total_memory_available_override_value /etc/rabbitmq/rabbitmq.conf /etc/rabbitmq/conf.d/*; then
    limit=
    if [ -r /sys/fs/cgroup/memory.max ]; then
        limit=$(cat /sys/fs/cgroup/memory.max)
    elif [ -r /sys/fs/cgroup/memory/memory.limit_in_bytes ]; then
        limit=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
    fi
    total=$(awk '/^MemTotal:/ { printf "%.0f\n", $2 * 1024 }' /proc/meminfo)
    if [[ "$limit" =~ ^[0-9]+$ ]] && [ "$limit" -lt "$total" ]; then
        export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS:-} -rabbit total_memory_available_override_value $limit"
    fi
fi

exec "$@"
