"""Waiting for the single-user server to listen, so a server that dies while starting fails the spawn with its
own last words instead of a timeout that says nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .docker_gateway import DockerGateway, WorkloadExited, exit_reason
from .tcp import accepts_tcp, connect_intervals

# How fresh the "is it still running" answer must be. It comes from the shared container list, so during a class
# burst all starting servers share one list request per interval instead of each inspecting its own container.
STATE_CHECK_INTERVAL = 0.5


class ServerExited(WorkloadExited):
    """The notebook container stopped before its server listened."""


async def wait_until_listening(
    gateway: DockerGateway, container: str, ip: str, port: int, timeout: float, log_lines: int = 20
) -> bool:
    """True once ``ip:port`` accepts a TCP connection; raise :class:`ServerExited` (with the container's last log
    lines) if the container stops first. False past ``timeout``: the hub's own HTTP check then decides."""
    began = time.monotonic()
    deadline = began + timeout
    pauses = connect_intervals()
    while time.monotonic() < deadline:
        if await accepts_tcp(ip, port):
            return True
        await fail_if_stopped(gateway, container, since=began, log_lines=log_lines)
        await asyncio.sleep(next(pauses))
    return False


async def current_state(gateway: DockerGateway, container: str, since: float) -> tuple[bool, dict[str, Any] | None]:
    """Whether the container runs, and what Docker says of it: its entry in the shared list (at most
    :data:`STATE_CHECK_INTERVAL` old, and taken after ``since``) while it runs; when the list says otherwise (rare),
    a precise inspect of it, or None if it is gone."""
    fresh_after = max(since, time.monotonic() - STATE_CHECK_INTERVAL)
    summary = await gateway.view.state(container, not_older_than=fresh_after)
    if summary is not None and summary.get("State") == "running":
        return True, summary
    info = await gateway.inspect_container(container)
    return info is not None and info["State"]["Running"], info


async def fail_if_stopped(gateway: DockerGateway, container: str, since: float, log_lines: int = 20) -> None:
    """Raise :class:`ServerExited`, with the container's exit reason and last log lines, if it no longer runs."""
    running, info = await current_state(gateway, container, since)
    if running:
        return
    if info is None:
        raise ServerExited(f"container {container} disappeared while its server was starting")
    state = info["State"]
    logs = (await gateway.logs_tail(container, log_lines)).strip() or "(no output)"
    raise ServerExited(
        f"the server in container {container} stopped while starting ({exit_reason(state)}). "
        f"Its last log lines:\n{logs}",
        state,
    )
