# The notebook image: JupyterLab with a Python kernel, as user jovyan (uid 1000) in /opt/venv, started by the hub
# as jupyterhub-singleuser; with the clients for the service presets: psql and psycopg (Postgres), redis-cli and
# redis (Redis), pika (RabbitMQ) and PyMySQL (MariaDB).
# shellcheck shell=bash disable=SC2034,SC2154  # variables for build.sh, which sets dir
tag=${MUS_SINGLEUSER_IMAGE:-multiuser-spawner/singleuser:latest}
jupyterhub_version=${MUS_JUPYTERHUB_VERSION:-6.1.1}
inputs="jupyterhub==$jupyterhub_version"
packages=(python3 python3-venv postgresql-client-15 redis-tools ca-certificates procps)
python_packages=(
    "jupyterhub==$jupyterhub_version" jupyter_server jupyterlab ipykernel
    "psycopg[binary]" redis pika PyMySQL
)
changes=(
    "ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    "ENV HOME=/home/jovyan" "ENV SHELL=/bin/bash" "ENV LANG=C.UTF-8"
    "USER jovyan" "WORKDIR /home/jovyan" "EXPOSE 8888" 'CMD ["jupyterhub-singleuser"]'
)

customize() {  # root
    local root=$1
    chroot "$root" useradd --create-home --uid 1000 --user-group --shell /bin/bash jovyan
    chroot "$root" python3 -m venv /opt/venv
    # pip inside the chroot reaches PyPI only with this machine's CA bundle and name resolution, lent for the install
    lend_network "$root"
    chroot "$root" env -i PATH=/opt/venv/bin:/usr/bin:/bin PIP_CERT=/tmp/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
        /opt/venv/bin/pip install --no-cache-dir -q "${python_packages[@]}" >&2
    return_network "$root"
    # the kernel the notebooks run on is this venv's python (ipykernel's own kernelspec, in /opt/venv/share/jupyter)
    chroot "$root" /opt/venv/bin/jupyter kernelspec list >/dev/null
    slim_rootfs "$root"
}
