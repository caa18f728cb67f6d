# The hub itself, for running JupyterHub in a container (deploy/compose.yaml): JupyterHub with this package
# installed from the source tree beside this directory, configurable-http-proxy on Debian's Node.js, and
# jupyterhub-idle-culler and OAuthenticator (GitHub, GitLab, Google, generic OpenID Connect, ...) for the
# deployment's config to use.
# The hub's config is not in the image: compose mounts it, so a config change needs no rebuild.
# shellcheck shell=bash disable=SC2034,SC2154  # variables for build.sh, which sets dir
tag=${MUS_HUB_IMAGE:-multiuser-spawner/hub:latest}
jupyterhub_version=${MUS_JUPYTERHUB_VERSION:-6.1.1}
# 4.x runs on Debian 12's Node.js 18 (5.x needs Node.js 20); the proxy's REST API is the same
proxy_version=4.6.3
packages=(python3 python3-venv nodejs ca-certificates)
python_packages=(
    "jupyterhub==$jupyterhub_version" jupyterhub-idle-culler oauthenticator
)
changes=(
    "ENV PATH=/opt/venv/bin:/opt/configurable-http-proxy/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    "ENV LANG=C.UTF-8" "WORKDIR /srv/jupyterhub" "VOLUME /srv/jupyterhub/data" "EXPOSE 8000"
    'CMD ["jupyterhub", "-f", "/srv/jupyterhub/jupyterhub_config.py"]'
)

# The package's own files (not the tests, docs or README) are part of this image's hash: a code change rebuilds it.
source_root=$(cd "$dir/../.." && pwd)
package_files() {
    (cd "$source_root" && { echo pyproject.toml; find multiuser_spawner -type f ! -name '*.pyc' ! -path '*/__pycache__/*'; } |
        LC_ALL=C sort)
}
inputs="jupyterhub==$jupyterhub_version configurable-http-proxy@$proxy_version $(
    cd "$source_root" && package_files | while IFS= read -r f; do printf '%s %s\n' "$f" "$(sha256sum <"$f")"; done |
        sha256sum | cut -c1-16
)"

customize() {  # root
    local root=$1 src=$1/tmp/src
    command -v npm >/dev/null || { log "npm is needed to install configurable-http-proxy: apt-get install -y npm"; return 1; }
    # the proxy is plain JavaScript: installed by this machine's npm straight into the image's tree
    npm install --global --prefix "$root/opt/configurable-http-proxy" --no-audit --no-fund --loglevel=error \
        "configurable-http-proxy@$proxy_version" >&2
    # a copy of the package's sources (the README only for its metadata), installed like any pip package
    mkdir -p "$src"
    (cd "$source_root" && package_files | tar -cf - -T - README.md) | tar -C "$src" -xf -
    chroot "$root" python3 -m venv /opt/venv
    # this package set has no /etc/hosts for lend_network to keep (Docker writes its own into every container)
    [ -e "$root/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n' >"$root/etc/hosts"
    lend_network "$root"
    chroot "$root" env -i PATH=/opt/venv/bin:/usr/bin:/bin PIP_CERT=/tmp/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
        /opt/venv/bin/pip install --no-cache-dir -q "${python_packages[@]}" /tmp/src >&2
    return_network "$root"
    rm -rf "$src"
    mkdir -p "$root/srv/jupyterhub/data"
    chroot "$root" /opt/venv/bin/python -c 'import multiuser_spawner, jupyterhub_idle_culler'
    chroot "$root" /opt/configurable-http-proxy/bin/configurable-http-proxy --version >/dev/null
    slim_rootfs "$root"
}
