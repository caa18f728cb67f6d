"""The containers that run beside a notebook on its private network: the database of ``pair-floor`` (and of
MultiUserSpawner's ``database_enabled``), and the per-user services of ``services-floor`` and ``multiuser-services``
(a Postgres database, a Redis cache and a RabbitMQ queue), each with the official image's interface."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from hubstack import POSTGRES_IMAGE

from .probes import amqp_ready, postgres_ready, redis_ready
from .scenarios import container_limits

try:
    from hubstack import RABBITMQ_IMAGE, REDIS_IMAGE
except ImportError:  # the same defaults, for a harness that does not name these images yet
    REDIS_IMAGE = os.environ.get("MUS_REDIS_IMAGE", "multiuser-spawner/redis:7")
    RABBITMQ_IMAGE = os.environ.get("MUS_RABBITMQ_IMAGE", "multiuser-spawner/rabbitmq:3")

MIB = 1024**2  # "M" as the hub's ByteSpecification reads it
POSTGRES_UP_MARKER = "database system is ready to accept connections"


@dataclass(frozen=True)
class Service:
    """One container beside a notebook: reached by the notebook as ``alias``, its data on a named volume."""

    alias: str  # the network alias; also the end of its container's and volume's names
    preset: str  # MultiUserSpawner's name for this kind of service
    image: str
    data_path: str  # where its volume is mounted
    environment: dict[str, str]  # "{password}" is replaced by a new password for each start
    command: tuple[str, ...] | None  # the same; None: the image's own command
    ready: Callable[[str], bool]  # its IP address -> whether it is ready
    up_marker: str  # the log line it prints as it begins to serve
    up_marker_last: bool = False  # the last such line counts (an image whose first start logs it twice)
    limits: dict[str, int] = field(default_factory=dict)
    hostname: bool = True  # its container's hostname is its alias
    make_volume: bool = True  # the floor creates its volume before the container (else: the engine, on create)

    def container(self, prefix: str, user: str) -> str:
        """Its container's name, and its volume's: MultiUserSpawner's default templates give the same."""
        return f"{prefix}-{user}_{self.alias}"

    def environment_with(self, password: str) -> dict[str, str]:
        return {key: value.format(password=password) for key, value in self.environment.items()}

    def command_with(self, password: str) -> list[str] | None:
        return [part.format(password=password) for part in self.command] if self.command else None


# pair-floor's database, as measured since it was added: Postgres with the user the spawner makes, no limits, the
# container's hostname its id, its volume made by the engine as the container is created.
PAIR_DATABASE = Service(
    alias="db",
    preset="postgres",
    image=POSTGRES_IMAGE,
    data_path="/var/lib/postgresql/data",
    # an existing cluster keeps the password it was made with; this one is then ignored
    environment={"POSTGRES_USER": "jupyter", "POSTGRES_PASSWORD": "{password}"},
    command=None,
    ready=postgres_ready,
    # A first start logs the marker twice: the image's setup runs a server on a local socket, then the real one.
    up_marker=POSTGRES_UP_MARKER,
    up_marker_last=True,
    hostname=False,
    make_volume=False,
)

SERVICES = (
    Service(
        alias="db",
        preset="postgres",
        image=POSTGRES_IMAGE,
        data_path="/var/lib/postgresql/data",
        environment={"POSTGRES_USER": "jupyter", "POSTGRES_PASSWORD": "{password}", "POSTGRES_DB": "jupyter"},
        command=None,
        ready=postgres_ready,
        up_marker=POSTGRES_UP_MARKER,
        up_marker_last=True,
        limits=container_limits(0.5, 256 * MIB),
    ),
    Service(
        alias="cache",
        preset="redis",
        image=REDIS_IMAGE,
        data_path="/data",
        environment={},
        command=("redis-server", "--requirepass", "{password}", "--appendonly", "yes"),
        ready=redis_ready,
        up_marker="Ready to accept connections",
        limits=container_limits(0.25, 128 * MIB),
    ),
    Service(
        alias="queue",
        preset="rabbitmq",
        image=RABBITMQ_IMAGE,
        data_path="/var/lib/rabbitmq",  # with the hostname fixed, a returning user's node finds its data again
        environment={"RABBITMQ_DEFAULT_USER": "jupyter", "RABBITMQ_DEFAULT_PASS": "{password}"},
        command=None,
        ready=amqp_ready,
        up_marker="started TCP listener on",  # "Server startup complete" comes after the AMQP port answers
        limits=container_limits(0.5, 512 * MIB),
    ),
)

# The containers beside each notebook, by scenario.
SIDECARS: dict[str, tuple[Service, ...]] = {
    "pair-floor": (PAIR_DATABASE,),
    "multiuser-db": (PAIR_DATABASE,),
    "services-floor": SERVICES,
    "multiuser-services": SERVICES,
    "multiuser-services-prepared": SERVICES,
}


def services_config() -> str:
    """MultiUserSpawner's configuration for the same services."""
    services = {s.alias: {"preset": s.preset, "image": s.image} for s in SERVICES}
    return f"c.MultiUserSpawner.services = {services!r}\n"
