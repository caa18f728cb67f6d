"""Pure builders of what the local Docker engine is asked to create.

Each builder takes plain values (a :class:`~.plan.Workload`, mostly) and returns plain dicts: the keyword arguments
of docker-py's ``create_container`` (``create``), of ``create_host_config`` (``host_config``) and the network
aliases to set (``networks``). Nothing here talks to Docker, so every rule is tested against literal dicts.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .plan import Resources, Security, Workload

DEFAULT_CPU_PERIOD = 100_000  # microseconds; Docker's default CFS period
CPU_SHARES_PER_CPU = 1024  # Docker's weight for one CPU's worth of contention share


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


#: Keys of :attr:`Workload.engine_extras` this engine reads: DockerSpawner's settings that only mean something here.
EXTRA_CREATE = "extra_create_kwargs"
EXTRA_HOST_CONFIG = "extra_host_config"
EXTRA_MOUNTS = "mounts"
EXTRA_LINKS = "links"
EXTRA_PUBLISH_ON = "publish_on"


def container_from_workload(workload: Workload) -> ContainerSpec:
    """The container that runs ``workload`` on its network (with its aliases there), publishing no port unless
    ``publish_on`` (a host address) is in its engine extras. The admin's ``extra_create_kwargs`` and
    ``extra_host_config`` win over everything built here."""
    w = workload
    extras = w.engine_extras
    extra_host_config = dict(extras.get(EXTRA_HOST_CONFIG) or {})
    create: dict[str, Any] = {
        "name": w.name,
        "image": w.image,
        "environment": dict(w.environment),
        "labels": dict(w.labels),
        "ports": list(w.ports),
        "volumes": sorted(m.target for m in w.mounts),
    }
    if w.command:
        create["command"] = list(w.command)
    if w.hostname:
        create["hostname"] = w.hostname
    if w.stop_signal:
        create["stop_signal"] = w.stop_signal
    host_config: dict[str, Any] = {
        "binds": {m.source: {"bind": m.target, "mode": "ro" if m.read_only else "rw"} for m in w.mounts},
        "network_mode": w.network,
        "auto_remove": False,
    }
    if w.restarts_on_failure:
        host_config["restart_policy"] = {"Name": "on-failure", "MaximumRetryCount": w.restarts_on_failure}
    if extras.get(EXTRA_MOUNTS):
        host_config["mounts"] = list(extras[EXTRA_MOUNTS])
    if extras.get(EXTRA_LINKS):
        host_config["links"] = dict(extras[EXTRA_LINKS])
    if extras.get(EXTRA_PUBLISH_ON) is not None:
        host_config["port_bindings"] = {port: (extras[EXTRA_PUBLISH_ON],) for port in w.ports}
    host_config.update(resource_host_config(w.resources, extra_host_config.get("cpu_period", DEFAULT_CPU_PERIOD)))
    host_config.update(security_host_config(w.security))
    return ContainerSpec(
        create=deep_merge(create, extras.get(EXTRA_CREATE) or {}),
        host_config=deep_merge(host_config, extra_host_config),
        networks={w.network: list(w.aliases)},
    )


def network_config(*, name: str, labels: Mapping[str, str], subnet: str | None = None) -> dict[str, Any]:
    """A server's private bridge network, on ``subnet`` (CIDR) when given, else where Docker's pools say. It is
    not ``internal``: the notebook must still reach the hub and the outside world through it; isolation from
    other users comes from each server having its own bridge."""
    config: dict[str, Any] = {"name": name, "driver": "bridge", "labels": dict(labels), "check_duplicate": True}
    if subnet is not None:
        config["ipam"] = {"Driver": "default", "Config": [{"Subnet": subnet}]}
    return config


def is_root_user(user: str | None) -> bool:
    """Whether a container ``User`` setting (``""``, ``name``, ``uid``, ``uid:gid``) means root."""
    if not user:
        return True
    name = user.split(":", 1)[0]
    return name in ("root", "0")


HOME_ALREADY_OWNED = "home-already-owned"


def home_ownership_container(
    *, name: str, image: str, volume: str, mount_path: str, owner: str, labels: Mapping[str, str]
) -> ContainerSpec:
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
        "labels": dict(labels),
    }
    host_config = {
        "binds": {volume: {"bind": mount_path, "mode": "rw"}},
        "network_mode": "none",
        "cap_drop": ["ALL"],
        "cap_add": ["CHOWN"],
        "security_opt": ["no-new-privileges:true"],
    }
    return ContainerSpec(create=create, host_config=host_config, networks={})
