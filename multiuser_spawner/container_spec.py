"""Pure builders of what the spawner asks Docker to create.

Each builder takes plain values and returns plain dicts: the keyword arguments of docker-py's ``create_container``
(``create``), of ``create_host_config`` (``host_config``) and the network aliases to set (``networks``). Nothing
here talks to Docker, so every rule is tested against literal dicts.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CPU_PERIOD = 100_000  # microseconds; Docker's default CFS period
CPU_SHARES_PER_CPU = 1024  # Docker's weight for one CPU's worth of contention share


@dataclass(frozen=True)
class Resources:
    """CPU in cores, memory in bytes; ``None`` leaves a value unset."""

    cpu_limit: float | None = None
    cpu_guarantee: float | None = None
    mem_limit: int | None = None
    mem_guarantee: int | None = None


@dataclass(frozen=True)
class Security:
    """Container hardening. Each field maps to one Docker host-config setting."""

    no_new_privileges: bool = True
    cap_drop: tuple[str, ...] = ("ALL",)
    cap_add: tuple[str, ...] = ()
    pids_limit: int | None = 1024
    init: bool = True


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one container."""

    create: dict[str, Any]
    host_config: dict[str, Any]
    #: network name -> aliases on it; the first network is the one the container is created on
    networks: dict[str, list[str]] = field(default_factory=dict)


def resource_host_config(resources: Resources, cpu_period: int = DEFAULT_CPU_PERIOD) -> dict[str, Any]:
    """Limits are hard (the kernel enforces them); guarantees are Docker's soft equivalents.

    A CPU guarantee becomes a CFS weight (``cpu_shares``), which only matters while CPUs are contended; a memory
    guarantee becomes ``mem_reservation``, a soft limit the kernel reclaims down to under memory pressure.
    """
    config: dict[str, Any] = {}
    if resources.mem_limit is not None:
        config["mem_limit"] = int(resources.mem_limit)
    if resources.mem_guarantee is not None:
        config["mem_reservation"] = int(resources.mem_guarantee)
    if resources.cpu_limit is not None:
        config["cpu_period"] = cpu_period
        config["cpu_quota"] = int(round(resources.cpu_limit * cpu_period))
    if resources.cpu_guarantee is not None:
        # Docker's minimum weight is 2
        config["cpu_shares"] = max(2, int(round(resources.cpu_guarantee * CPU_SHARES_PER_CPU)))
    return config


def security_host_config(security: Security) -> dict[str, Any]:
    config: dict[str, Any] = {"init": security.init}
    if security.no_new_privileges:
        config["security_opt"] = ["no-new-privileges:true"]
    if security.cap_drop:
        config["cap_drop"] = list(security.cap_drop)
    if security.cap_add:
        config["cap_add"] = list(security.cap_add)
    if security.pids_limit is not None:
        config["pids_limit"] = security.pids_limit
    return config


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``override`` merged in: dicts recursively, anything else replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def notebook_container(
    *,
    name: str,
    image: str,
    command: list[str] | None,
    environment: Mapping[str, str],
    labels: Mapping[str, str],
    port: int,
    network: str,
    binds: Mapping[str, Mapping[str, str]],
    mounts: list[Any] | None = None,
    resources: Resources = Resources(),
    security: Security = Security(),
    publish_on: str | None = None,
    auto_remove: bool = False,
    links: Mapping[str, str] | None = None,
    extra_networks: Mapping[str, list[str]] | None = None,
    extra_create: Mapping[str, Any] | None = None,
    extra_host_config: Mapping[str, Any] | None = None,
) -> ContainerSpec:
    """The single-user server's container.

    ``publish_on`` is the host address to publish the server's port on, or ``None`` (the default the spawner uses)
    to publish nothing and let the hub reach the container by its IP. ``extra_create`` and ``extra_host_config``
    are the admin's own additions (DockerSpawner's ``extra_create_kwargs`` / ``extra_host_config``) and win over
    everything built here.
    """
    extra_host_config = dict(extra_host_config or {})
    create: dict[str, Any] = {
        "name": name,
        "image": image,
        "environment": dict(environment),
        "labels": dict(labels),
        "ports": [port],
        "volumes": sorted(bind["bind"] for bind in binds.values()),
    }
    if command:
        create["command"] = list(command)
    host_config: dict[str, Any] = {
        "binds": {source: dict(bind) for source, bind in binds.items()},
        "network_mode": network,
        "auto_remove": auto_remove,
    }
    if mounts:
        host_config["mounts"] = list(mounts)
    if links:
        host_config["links"] = dict(links)
    if publish_on is not None:
        host_config["port_bindings"] = {port: (publish_on,)}
    host_config.update(resource_host_config(resources, extra_host_config.get("cpu_period", DEFAULT_CPU_PERIOD)))
    host_config.update(security_host_config(security))
    networks = {network: []}
    networks.update({net: list(aliases) for net, aliases in (extra_networks or {}).items()})
    return ContainerSpec(
        create=deep_merge(create, extra_create or {}),
        host_config=deep_merge(host_config, extra_host_config),
        networks=networks,
    )


def database_container(
    *,
    name: str,
    image: str,
    environment: Mapping[str, str],
    labels: Mapping[str, str],
    network: str,
    hostname_alias: str,
    data_volume: str,
    data_path: str,
    resources: Resources = Resources(),
    security: Security = Security(),
    stop_signal: str | None = None,
    auto_remove: bool = False,
) -> ContainerSpec:
    """The per-user database: on the private network only, reachable there as ``hostname_alias``, no host port."""
    create: dict[str, Any] = {
        "name": name,
        "image": image,
        "environment": dict(environment),
        "labels": dict(labels),
        "volumes": [data_path],
    }
    if stop_signal:
        create["stop_signal"] = stop_signal
    host_config: dict[str, Any] = {
        "binds": {data_volume: {"bind": data_path, "mode": "rw"}},
        "network_mode": network,
        "auto_remove": auto_remove,
        # A database that crashes or is killed from inside (out of memory, say) comes straight back and recovers
        # from its log; one stopped by hand stays stopped until the server's next start.
        "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 5},
    }
    host_config.update(resource_host_config(resources))
    host_config.update(security_host_config(security))
    return ContainerSpec(create=create, host_config=host_config, networks={network: [hostname_alias]})


def network_config(*, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """A user's private bridge network. It is not ``internal``: the notebook must still reach the hub and the
    outside world through it; isolation from other users comes from each user having their own bridge."""
    return {"name": name, "driver": "bridge", "labels": dict(labels), "check_duplicate": True}


def is_root_user(user: str | None) -> bool:
    """Whether a container ``User`` setting (``""``, ``name``, ``uid``, ``uid:gid``) means root."""
    if not user:
        return True
    name = user.split(":", 1)[0]
    return name in ("root", "0")


HOME_ALREADY_OWNED = "home-already-owned"


def home_ownership_container(*, name: str, image: str, volume: str, mount_path: str, owner: str) -> ContainerSpec:
    """A one-shot container that gives a new home volume to ``owner`` (the image's user: a name, ``uid`` or
    ``uid:gid``) and prints :data:`HOME_ALREADY_OWNED` when Docker's copy of the image's directory had already done
    so. It runs as root with only the CHOWN capability and no network."""
    script = (
        "set -e; "  # an unknown user name must fail the spawn, not chown to nobody
        'case "$1" in '
        '*[!0-9:]*) target="$(id -u "$1"):$(id -g "$1")" ;; '  # a user name: look it up in the image
        "*) target=$1 ;; "
        "esac; "
        'case "$target" in *:*) now="$(stat -c %u:%g "$2")" ;; *) now="$(stat -c %u "$2")" ;; esac; '
        f'if [ "$now" = "$target" ]; then echo {HOME_ALREADY_OWNED}; else chown "$target" "$2"; fi'
    )
    create = {
        "name": name,
        "image": image,
        "user": "0",
        "entrypoint": ["/bin/sh", "-c", script, "fix-home"],
        "command": [owner, mount_path],
        "volumes": [mount_path],
        "network_disabled": True,
    }
    host_config = {
        "binds": {volume: {"bind": mount_path, "mode": "rw"}},
        "network_mode": "none",
        "cap_drop": ["ALL"],
        "cap_add": ["CHOWN"],
        "security_opt": ["no-new-privileges:true"],
    }
    return ContainerSpec(create=create, host_config=host_config, networks={})
