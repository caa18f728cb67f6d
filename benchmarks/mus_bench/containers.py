"""The benchmark's Docker objects: listing and removing everything named ``<prefix>-...``, and reading, after a
burst and at no cost to it, when the engine had each container running and when its server said it serves."""

from __future__ import annotations

import contextlib
import time
from datetime import datetime, timezone
from typing import Any

import docker

from hubstack import cleanup_prefix

from .services import Service


def prefixed_containers(api: docker.APIClient, prefix: str) -> list[dict[str, Any]]:
    """Every container (running or not) with a name starting with ``prefix-``."""
    return [
        container
        for container in api.containers(all=True, filters={"name": f"{prefix}-"})
        if any(name.lstrip("/").startswith(f"{prefix}-") for name in container["Names"])
    ]


def remove_objects(client: docker.DockerClient, prefix: str, attempts: int = 5) -> None:
    """The harness's clean-up of everything named ``prefix-*``, retried: on a shared engine another user's
    container may vanish between its listing and its inspection."""
    for attempt in range(attempts):
        try:
            cleanup_prefix(client, prefix)
            return
        except docker.errors.NotFound:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)


def remove_containers(api: docker.APIClient, prefix: str) -> None:
    """Remove every container and network named ``prefix-*`` (volumes stay), ignoring ones that vanish meanwhile."""
    for container in prefixed_containers(api, prefix):
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_container(container["Id"], v=True, force=True)
    for network in api.networks(names=[f"{prefix}-"]):
        if network["Name"].startswith(f"{prefix}-"):
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_network(network["Id"])


def docker_time(stamp: str) -> float:
    """An engine timestamp (RFC 3339, nanoseconds) as a Unix time."""
    date, _, fraction = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(date).replace(tzinfo=timezone.utc).timestamp() + float(f"0.{fraction or 0}")


def container_timeline(
    api: docker.APIClient,
    name: str,
    t0: float,
    up_marker: str,
    running: str = "container_running",
    up: str = "server_up",
    last: bool = False,
) -> dict[str, float]:
    """Seconds after ``t0`` (a ``time.monotonic()`` value) when the engine had the container running (key
    ``running``) and when it logged ``up_marker`` (key ``up``: the line its server prints as it begins to serve;
    the last such line when ``last``). Read after the burst, at no cost to it."""
    t0_unix = t0 + (time.time() - time.monotonic())
    timeline: dict[str, float] = {}
    try:
        info = api.inspect_container(name)
        logs = api.logs(name, timestamps=True, stdout=True, stderr=True).decode("utf-8", "replace")
    except docker.errors.APIError:
        return timeline
    timeline[running] = round(docker_time(info["State"]["StartedAt"]) - t0_unix, 3)
    for line in logs.splitlines():
        if up_marker in line:
            timeline[up] = round(docker_time(line.split(" ", 1)[0]) - t0_unix, 3)
            if not last:
                break
    return timeline


def service_timeline(api: docker.APIClient, service: Service, prefix: str, user: str, t0: float) -> dict[str, float]:
    """A service's timeline, as ``<alias>_running`` and ``<alias>_up`` (``db_running`` and ``db_up`` for the
    database)."""
    return container_timeline(
        api,
        service.container(prefix, user),
        t0,
        service.up_marker,
        f"{service.alias}_running",
        f"{service.alias}_up",
        last=service.up_marker_last,
    )
