# RabbitMQ 3 from Debian, with the official rabbitmq image's interface (see entrypoint.sh): RABBITMQ_DEFAULT_USER,
# RABBITMQ_DEFAULT_PASS and RABBITMQ_DEFAULT_VHOST, data in /var/lib/rabbitmq, AMQP on port 5672.
# shellcheck shell=bash disable=SC2034,SC2154  # variables for build.sh, which sets dir
tag=${MUS_RABBITMQ_IMAGE:-multiuser-spawner/rabbitmq:3}
packages=(rabbitmq-server)
changes=(
    # the scripts themselves first, not Debian's wrappers in /usr/sbin, which su to rabbitmq and log to files
    "ENV PATH=/usr/lib/rabbitmq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # the Erlang cookie lives in the data directory, so rabbitmqctl finds it under any user
    "ENV HOME=/var/lib/rabbitmq" "ENV LANG=C.UTF-8" "ENV LANGUAGE=C.UTF-8" "ENV LC_ALL=C.UTF-8"
    "VOLUME /var/lib/rabbitmq" "EXPOSE 4369 5671 5672 25672"
    'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' 'CMD ["rabbitmq-server"]'
)

customize() {  # root
    local root=$1
    install -m 0755 "$dir/entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    mkdir -p "$root/etc/rabbitmq/conf.d"
    install -m 0644 "$dir/10-defaults.conf" "$root/etc/rabbitmq/conf.d/10-defaults.conf"
    # The package's postinst made an Erlang cookie; baked into the image, every container (and, copied into it,
    # every new volume) would share that secret. Without it the node makes its own on first start, in the volume.
    rm -f "$root/var/lib/rabbitmq/.erlang.cookie"
    rm -rf "$root/var/lib/rabbitmq/mnesia"
    chroot "$root" chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq /etc/rabbitmq
    ln -sf /var/lib/rabbitmq/.erlang.cookie "$root/root/.erlang.cookie"
    slim_rootfs "$root"
}
