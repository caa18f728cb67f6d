"""Waiting for the single-user server to listen, so a server that dies while starting fails the spawn with its
own last words instead of a timeout that says nothing."""

from __future__ import annotations

import asyncio
import time

from .docker_gateway import DockerGateway, DockerGatewayError

STATE_CHECK_INTERVAL = 0.5
CONNECT_INTERVAL = 0.1


class ServerExited(DockerGatewayError):
    """The notebook container stopped before its server listened."""


async def wait_until_listening(
    gateway: DockerGateway, container: str, ip: str, port: int, timeout: float, log_lines: int = 20
) -> bool:
    """True once ``ip:port`` accepts a TCP connection; raise :class:`ServerExited` (with the container's last log
    lines) if the container stops first. False past ``timeout``: the hub's own HTTP check then decides."""
    deadline = time.monotonic() + timeout
    next_state_check = time.monotonic()
    while time.monotonic() < deadline:
        if await accepts_tcp(ip, port):
            return True
        if time.monotonic() >= next_state_check:
            await _fail_if_stopped(gateway, container, log_lines)
            next_state_check = time.monotonic() + STATE_CHECK_INTERVAL
        await asyncio.sleep(CONNECT_INTERVAL)
    return False


async def accepts_tcp(ip: str, port: int) -> bool:
    """Whether ``ip:port`` accepts a TCP connection within a second."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout=1)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


async def _fail_if_stopped(gateway: DockerGateway, container: str, log_lines: int) -> None:
    info = await gateway.inspect_container(container)
    if info is not None and info["State"]["Running"]:
        return
    if info is None:
        raise ServerExited(f"container {container} disappeared while its server was starting")
    state = info["State"]
    reason = "killed by its memory limit" if state.get("OOMKilled") else f"exit code {state.get('ExitCode')}"
    logs = (await gateway.logs_tail(container, log_lines)).strip() or "(no output)"
    raise ServerExited(
        f"the server in container {container} stopped while starting ({reason}). Its last log lines:\n{logs}"
    )
