"""The readiness checks the floors make from the host: each one TCP connection, at no cost to the engine, so that
probing twenty servers every 50 ms costs next to no CPU."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable

from multiuser_spawner.readiness import redis_answer

from .scenarios import HTTP_CHECK_INTERVAL

AMQP_0_9_1_HEADER = b"AMQP\x00\x00\x09\x01"
AMQP_METHOD_FRAME = 1
AMQP_CONNECTION_START = struct.pack("!HH", 10, 10)  # class Connection, method Start


def server_answers(ip: str, port: int, path: str) -> bool:
    """The hub's readiness rule: any HTTP answer below 500. A bare socket, so that probing twenty servers every
    50 ms costs next to no CPU (with an HTTP client library it took a noticeable share of this machine)."""
    try:
        with socket.create_connection((ip, port), timeout=2) as sock:
            sock.settimeout(10)  # a server that accepts before it serves answers once it serves
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\n\r\n".encode())
            status_line = sock.recv(64).split(None, 2)
    except OSError:
        return False
    return len(status_line) >= 2 and status_line[1].isdigit() and int(status_line[1]) < 500


def postgres_ready(ip: str, port: int = 5432) -> bool:
    """pg_isready's rule, from outside the container and at no cost to the engine: the server answers a startup
    packet with anything but "the database system is starting up" (SQLSTATE 57P03). During its first-run setup the
    image's server listens on its unix socket only, so this also waits for that setup to finish."""
    body = b"user\0pg_isready\0database\0pg_isready\0\0"
    try:
        with socket.create_connection((ip, port), timeout=1) as sock:
            sock.settimeout(2)
            sock.sendall(struct.pack("!ii", 8 + len(body), 3 << 16) + body)
            answer = sock.recv(4096)
    except OSError:
        return False
    if not answer:
        return False
    return not (answer[:1] == b"E" and b"C57P03" in answer)


def _receive(sock: socket.socket, enough: Callable[[bytes], bool]) -> bytes:
    """What the peer sends until ``enough`` of it has come, or it closes the connection."""
    answer = b""
    while not enough(answer):
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


def redis_ready(ip: str, port: int = 6379) -> bool:
    """``PING`` answered, by the spawner's own rule (:func:`multiuser_spawner.readiness.redis_answer`)."""
    try:
        with socket.create_connection((ip, port), timeout=1) as sock:
            sock.settimeout(2)
            sock.sendall(b"PING\r\n")
            answer = _receive(sock, lambda data: b"\r\n" in data)
    except OSError:
        return False
    return redis_answer(answer.split(b"\r\n", 1)[0])[0]


def amqp_ready(ip: str, port: int = 5672) -> bool:
    """The AMQP 0-9-1 protocol header answered with a Connection.Start method frame (type 1, channel 0). The
    connection is closed right after, before any login."""
    try:
        with socket.create_connection((ip, port), timeout=1) as sock:
            sock.settimeout(5)
            sock.sendall(AMQP_0_9_1_HEADER)
            answer = _receive(sock, lambda data: len(data) >= 11)
    except OSError:
        return False
    return (
        len(answer) >= 11
        and answer[0] == AMQP_METHOD_FRAME
        and answer[1:3] == b"\0\0"
        and answer[7:11] == AMQP_CONNECTION_START
    )


def wait_until(checks: list[Callable[[], bool]], t0: float, timeout: float, failure: str) -> None:
    """Call every check every 50 ms until each has passed once; past ``t0 + timeout`` raise ``failure``."""
    while checks:
        checks = [check for check in checks if not check()]
        if checks and time.monotonic() > t0 + timeout:
            raise TimeoutError(f"{failure} within {timeout:.0f} s")
        time.sleep(HTTP_CHECK_INTERVAL if checks else 0)
