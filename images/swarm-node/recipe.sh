# A Docker engine in a container: one worker node of the test swarm that scripts/swarm runs on this machine (the
# host's own engine is the manager). Debian's docker.io with what dockerd needs around it; tini reaps the orphans
# that dockerd, as process 1, would leave behind. /var/lib/docker must be a volume (overlay2 on overlay fails).
# scripts/swarm gives dockerd its per-node options (cgroup parent, address pools, labels) at `docker run`.
# shellcheck shell=bash disable=SC2034,SC2154  # variables for build.sh, which sets dir
tag=${MUS_SWARM_NODE_IMAGE:-multiuser-spawner/swarm-node:latest}
packages=(docker.io iptables iproute2 ca-certificates procps kmod tini)
changes=(
    "ENV LANG=C.UTF-8" "VOLUME /var/lib/docker"
    'ENTRYPOINT ["/usr/bin/tini", "--"]' 'CMD ["swarm-node-dockerd", "--host=unix:///var/run/docker.sock"]'
)

customize() {  # root
    local root=$1
    # the worker's engine runs under a name of its own: its process shows in the host's process list, where whatever
    # looks for the host's engine by name (`pidof dockerd`) must not find a worker's instead
    ln -s /usr/sbin/dockerd "$root/usr/local/bin/swarm-node-dockerd"
    slim_rootfs "$root"
}
