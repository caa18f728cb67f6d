"""Run the hub in a plain container beside a Swarm task: ``python3 -m multiuser_spawner.hub_launcher [COMMAND...]``.

The Swarm spawner joins the hub's container to each server's overlay network when the server starts. The Docker
engine lets a plain container join an attachable overlay at any time: the managers give it an address there and
publish its name in that network's DNS. It does not let a container that Swarm runs as a service's task do so:
Swarm fixes a task's networks when it creates the task, and the engine refuses a later ``network connect`` (or,
when the network is already on that node, joins it with an address the managers never gave and no name in its
DNS). So ``deploy/stack.yaml`` deploys this launcher as the stack's service, pinned to a manager, and the launcher
runs the hub in a plain container beside itself:

- the same image, environment and mounts as the launcher's own container (the Docker socket, the hub's volume,
  its configuration), a fixed name (``HUB_CONTAINER_NAME``, by which notebooks call the hub and the spawner joins
  it to their networks), the proxy's port published on the manager (``HUB_BIND_ADDRESS``:``HUB_PORT``);
- its log goes to the launcher's output, so ``docker service logs`` shows it;
- when the hub exits, the launcher exits with its status and Swarm starts a new launcher, which starts a new hub;
- when Swarm stops the launcher (``docker stack rm``, an update), the launcher stops and removes the hub first.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.types import Mount

from .names import LABEL_PREFIX

#: on the hub's container: the id of the launcher's container that made it
LABEL_LAUNCHER = f"{LABEL_PREFIX}.hub-launcher"
#: what ``docker stack deploy`` labels a stack's objects with; the hub's container carries its launcher's
STACK_LABEL = "com.docker.stack.namespace"
HUB_COMMAND = ("jupyterhub", "-f", "/srv/jupyterhub/jupyterhub_config.py")
#: the port the hub's proxy listens on inside its container (``c.JupyterHub.bind_url``)
PROXY_PORT = 8000
#: Docker bind-mounts a file of the container's own directory, ``<data root>/containers/<id>/hostname``, on
#: ``/etc/hostname`` in every container; its source names the container by its full id.
_HOSTNAME_SOURCE = re.compile(r"/containers/([0-9a-f]{64})/hostname$")


def container_id_from_mountinfo(mountinfo: str) -> str:
    """The id of the container whose ``/proc/self/mountinfo`` this is; "" outside a container.

    Neither ``$HOSTNAME`` (a service may set ``hostname:``) nor ``/proc/self/cgroup`` (``0::/`` under cgroup v2's
    private namespaces) names the container reliably; the source of ``/etc/hostname``'s mount does."""
    for line in mountinfo.splitlines():
        # proc(5): mount id, parent id, major:minor, root (the source within its filesystem), mount point, ...
        fields = line.split()
        if len(fields) > 4 and fields[4] == "/etc/hostname":
            found = _HOSTNAME_SOURCE.search(fields[3])
            if found:
                return found.group(1)
    return ""


def own_container_id(mountinfo_path: str = "/proc/self/mountinfo") -> str:
    """The id of the container this process runs in; "" when it runs on a host."""
    try:
        return container_id_from_mountinfo(Path(mountinfo_path).read_text())
    except OSError:
        return ""


@dataclass(frozen=True)
class HubSettings:
    """What the hub's container gets that the launcher's does not have: a name, a published port, a command."""

    name: str = "jupyterhub"
    bind_address: str = "127.0.0.1"
    port: int = PROXY_PORT
    command: tuple[str, ...] = HUB_COMMAND

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], command: list[str]) -> HubSettings:
        port = environ.get("HUB_PORT", str(PROXY_PORT))
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"HUB_PORT is {port!r}: it must be a TCP port number")
        return cls(
            name=environ.get("HUB_CONTAINER_NAME") or cls.name,
            bind_address=environ.get("HUB_BIND_ADDRESS") or cls.bind_address,
            port=int(port),
            command=tuple(command) or HUB_COMMAND,
        )


def _mount(mount: Mapping[str, Any]) -> Mount:
    source = mount["Name"] if mount["Type"] == "volume" else mount["Source"]
    return Mount(target=mount["Destination"], source=source, type=mount["Type"], read_only=not mount.get("RW", True))


def hub_container_config(launcher: Mapping[str, Any], settings: HubSettings) -> dict[str, Any]:
    """The arguments of ``containers.run`` for the hub, from the launcher's own ``inspect``: its exact image, its
    environment and its mounts, with the hub's name, command, port and labels."""
    environment = [v for v in launcher["Config"].get("Env") or [] if not v.startswith("HUB_CONTAINER_NAME=")]
    labels = {LABEL_LAUNCHER: launcher["Id"]}
    stack = (launcher["Config"].get("Labels") or {}).get(STACK_LABEL)
    if stack:
        labels[STACK_LABEL] = stack
    return {
        "image": launcher["Image"],
        "command": list(settings.command),
        "name": settings.name,
        # Docker's default bridge has no DNS: the host name (in the container's /etc/hosts) is how the proxy, in the
        # same container, reaches the hub by the name the notebooks use (c.JupyterHub.hub_connect_ip)
        "hostname": settings.name,
        "environment": [*environment, f"HUB_CONTAINER_NAME={settings.name}"],
        "mounts": [_mount(m) for m in launcher.get("Mounts") or []],
        "ports": {f"{PROXY_PORT}/tcp": (settings.bind_address, settings.port)},
        "labels": labels,
        # an init process reaps the proxy's and other children, and passes the stop signal on to the hub
        "init": True,
        "detach": True,
    }


class Stopped(Exception):
    """Swarm asked the launcher to stop."""


def _stop(signum: int, frame: Any) -> None:
    raise Stopped(signal.Signals(signum).name)


def remove_previous_hub(client: docker.DockerClient, name: str) -> None:
    """Remove the hub a killed launcher left behind; refuse to touch a container of that name that is not one."""
    try:
        previous = client.containers.get(name)
    except docker.errors.NotFound:
        return
    if LABEL_LAUNCHER not in (previous.labels or {}):
        raise SystemExit(
            f"a container named {name} exists and was not made by the hub launcher: remove or rename it, or set "
            "HUB_CONTAINER_NAME"
        )
    previous.remove(force=True)


def run(client: docker.DockerClient, settings: HubSettings) -> int:
    """Run the hub's container until it exits (its status) or the launcher is stopped (0); remove it after."""
    own_id = own_container_id()
    if not own_id:
        raise SystemExit("the hub launcher runs in a container (a Swarm service's task): it found none")
    remove_previous_hub(client, settings.name)
    hub = client.containers.run(**hub_container_config(client.api.inspect_container(own_id), settings))
    print(f"hub launcher: started {settings.name} ({hub.short_id})", flush=True)
    try:
        for chunk in hub.logs(stream=True, follow=True):
            sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        status = int(hub.wait()["StatusCode"])
        print(f"hub launcher: {settings.name} exited with {status}", flush=True)
        return status
    except Stopped as stop:
        print(f"hub launcher: {stop}: stopping {settings.name}", flush=True)
        hub.stop(timeout=30)
        return 0
    finally:
        hub.remove(force=True)


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    settings = HubSettings.from_environment(os.environ, sys.argv[1:] if argv is None else argv)
    sys.exit(run(docker.from_env(), settings))


if __name__ == "__main__":
    main()
