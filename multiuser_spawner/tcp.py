"""Reaching a server over TCP from the hub: one attempt, and the pauses between attempts."""

from __future__ import annotations

import asyncio

# Connection attempts start often (a light server is up in a fraction of a second) and slow down to this, so
# twenty Jupyter servers taking half a minute each do not cost the hub thousands of refused connections.
FIRST_CONNECT_INTERVAL = 0.05
MAX_CONNECT_INTERVAL = 0.25


def connect_intervals(first: float = FIRST_CONNECT_INTERVAL, most: float = MAX_CONNECT_INTERVAL):
    """Pauses between connection attempts: ``first``, growing by half each time, up to ``most``."""
    interval = first
    while True:
        yield interval
        interval = min(most, interval * 1.5)


TCP_OPEN = "open"
TCP_REFUSED = "refused"  # the address answered: nothing listens on the port yet
TCP_UNREACHABLE = "unreachable"  # no answer at all: this process cannot reach that network


async def open_tcp(
    ip: str, port: int, timeout: float = 1.0
) -> tuple[str, tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]:
    """Open one TCP connection to ``ip:port``: (:data:`TCP_OPEN`, its streams), or (:data:`TCP_REFUSED` or
    :data:`TCP_UNREACHABLE`, None)."""
    try:
        streams = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout=timeout)
    except ConnectionRefusedError:
        return TCP_REFUSED, None
    except (OSError, asyncio.TimeoutError):
        return TCP_UNREACHABLE, None
    return TCP_OPEN, streams


async def probe_tcp(ip: str, port: int, timeout: float = 1.0) -> str:
    """Try one TCP connection to ``ip:port``: :data:`TCP_OPEN`, :data:`TCP_REFUSED` or :data:`TCP_UNREACHABLE`."""
    reach, streams = await open_tcp(ip, port, timeout)
    if streams is not None:
        streams[1].close()
    return reach


async def accepts_tcp(ip: str, port: int) -> bool:
    """Whether ``ip:port`` accepts a TCP connection within a second."""
    return await probe_tcp(ip, port) == TCP_OPEN
