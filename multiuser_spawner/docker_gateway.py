"""The one module that talks to the Docker engine.

docker-py is blocking, so every call runs in a bounded thread pool shared by all spawners of a hub: different users'
calls run concurrently (up to ``concurrency`` at once) instead of queueing behind one thread. Every method is async
and typed; "not found" comes back as ``None``, not as an exception, where the caller can act on it.

:class:`ContainerView` is the shared, refreshed list of the project's containers that ``poll()`` reads, so polling
a hundred servers costs one list request per refresh instead of an inspect per server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import docker
import docker.tls
import requests
import urllib3
from docker.errors import APIError, DockerException, NotFound
from docker.utils import kwargs_from_env

from .container_spec import ContainerSpec
from .names import LABEL_MANAGED

T = TypeVar("T")
log = logging.getLogger(__name__)


class DockerGatewayError(RuntimeError):
    """A Docker call failed; the message says what was being done, to which object, and what Docker answered."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        #: the engine's HTTP status, when it answered at all
        self.status_code = status_code

    @property
    def jupyterhub_message(self) -> str:
        # JupyterHub shows this (instead of "Internal Server Error") when the error ends a request: a stop, a
        # delete, a spawn that fails within its request.
        return str(self)


class DockerTimeout(DockerGatewayError):
    """A Docker request got no answer in the time it was given."""


#: exit codes of a process ended by SIGKILL or SIGTERM (128 + signal): what ``docker stop`` leaves, and what the
#: engine leaves on every container when it stops
STOP_SIGNAL_EXIT_CODES = (128 + 9, 128 + 15)


class WorkloadExited(DockerGatewayError):
    """A workload stopped while the spawn waited for it; ``state`` is its container's ``State`` as inspected."""

    def __init__(self, message: str, state: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.state = dict(state or {})

    @property
    def stopped_by_a_signal(self) -> bool:
        """Killed or terminated from outside (not by its memory limit): someone stopped it, or its engine is
        stopping everything."""
        return self.state.get("ExitCode") in STOP_SIGNAL_EXIT_CODES and not self.state.get("OOMKilled")


def exit_reason(state: Mapping[str, Any]) -> str:
    """Why a container stopped, in words: its memory limit, or its exit code."""
    return "killed by its memory limit" if state.get("OOMKilled") else f"exit code {state.get('ExitCode')}"


def is_ours(obj: dict[str, Any]) -> bool:
    """Whether an inspected container, network or volume carries the project's label."""
    labels = obj.get("Labels") or (obj.get("Config") or {}).get("Labels") or {}
    return labels.get(LABEL_MANAGED) == "true"


def ensure_ours(container: dict[str, Any]) -> dict[str, Any]:
    """A container found under one of our names must carry our label: never reuse or remove another's."""
    if not is_ours(container):
        name = container.get("Name", "").lstrip("/")
        raise DockerGatewayError(
            f"the container name {name} is taken by a container multiuser-spawner did not create; "
            "an admin must rename or remove that container"
        )
    return container


def is_timeout(error: Exception) -> bool:
    """Over a Unix socket, docker-py reports a read timeout as a ``ConnectionError`` wrapping urllib3's."""
    return isinstance(error, requests.exceptions.Timeout) or any(
        isinstance(arg, urllib3.exceptions.TimeoutError) for arg in error.args
    )


def describe_api_error(error: APIError) -> str:
    return getattr(error, "explanation", None) or str(error)


class _Raise:
    """Marks a call whose "not found" is an error like any other."""


RAISE = _Raise()


class DockerGateway:
    def __init__(self, client: docker.APIClient, concurrency: int, view_max_age: float):
        self.client = client
        self.concurrency = concurrency
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="docker-api")
        self.view = ContainerView(self, max_age=view_max_age)
        self._network_lanes: dict[str, asyncio.Lock] = {}

    @classmethod
    def connect(
        cls,
        client_kwargs: Mapping[str, Any],
        concurrency: int,
        view_max_age: float,
        tls_config: Mapping[str, Any] | None = None,
    ) -> DockerGateway:
        """A client for the engine DOCKER_HOST (or the local socket) names, as DockerSpawner's settings adjust it."""
        # urllib3 must keep one connection per worker thread, or threads queue on the connection pool instead.
        kwargs: dict[str, Any] = {"version": "auto", "max_pool_size": max(concurrency, 10), **kwargs_from_env()}
        if tls_config:
            kwargs["tls"] = docker.tls.TLSConfig(**tls_config)
        kwargs.update(client_kwargs)
        return cls(docker.APIClient(**kwargs), concurrency, view_max_age)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _call(self, action: str, fn: Callable[..., T], *args: Any, if_missing: Any = RAISE, **kwargs: Any) -> Any:
        """Run one Docker request (or a short sequence of them) in the pool. Every way it can fail becomes a
        :class:`DockerGatewayError` that names ``action`` (what was done, to which object) and gives the engine's
        own words; "not found" returns ``if_missing`` instead when one is given."""
        try:
            return await self._run(fn, *args, **kwargs)
        except NotFound as e:
            if if_missing is RAISE:
                raise DockerGatewayError(f"{action} failed: {describe_api_error(e)}", 404) from e
            return if_missing
        except APIError as e:
            raise DockerGatewayError(f"{action} failed: {describe_api_error(e)}", e.status_code) from e
        except (requests.exceptions.RequestException, DockerException) as e:
            if is_timeout(e):
                raise DockerTimeout(f"{action} failed: the Docker engine did not answer in time ({e})") from e
            raise DockerGatewayError(f"{action} failed: the Docker engine could not be reached ({e})") from e

    async def engine_stopping(self, within: float = 5.0, interval: float = 0.5) -> bool:
        """Whether the engine stops answering within ``within`` seconds. An engine that shuts down stops every
        container first (they exit by SIGTERM) and only then goes away, so a workload that died of a signal nobody
        in the spawn sent is checked against this before the user is told why their spawn failed."""
        deadline = time.monotonic() + within
        while True:
            try:
                await self._run(self.client.ping)
            except (requests.exceptions.RequestException, DockerException):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(interval)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run a docker-py ``APIClient`` method by name. Only for DockerSpawner's inherited code (its
        ``self.docker("...")`` calls) and admins' subclasses, which expect docker-py's own exceptions; the
        project's own code uses the typed methods."""
        return await self._run(getattr(self.client, method), *args, **kwargs)

    # -- images -------------------------------------------------------------------------------------------------

    async def inspect_image(self, image: str) -> dict[str, Any] | None:
        return await self._call(f"inspecting image {image}", self.client.inspect_image, image, if_missing=None)

    async def pull_image(self, image: str, on_progress: Callable[[dict[str, Any]], None]) -> None:
        """Pull ``image``, calling ``on_progress`` with each of Docker's progress records (from the pool thread)."""
        repo, tag = split_image_tag(image)

        def pull() -> None:
            for record in self.client.pull(repo, tag=tag, stream=True, decode=True):
                if "error" in record:
                    raise DockerGatewayError(f"pulling image {image} failed: {record['error']}")
                on_progress(record)

        await self._call(f"pulling image {image}", pull)

    # -- containers ---------------------------------------------------------------------------------------------

    async def inspect_container(self, name_or_id: str) -> dict[str, Any] | None:
        return await self._call(
            f"inspecting container {name_or_id}", self.client.inspect_container, name_or_id, if_missing=None
        )

    async def container_stats(self, name_or_id: str) -> dict[str, Any] | None:
        """One sample of a running container's CPU and memory use, with the previous one (``precpu_stats``) for a
        CPU rate: the engine takes about a second to answer. ``None`` when the container is gone or stopped in the
        meantime (the engine then answers with an empty body, or a conflict)."""
        try:
            return await self._run(self.client.stats, name_or_id, stream=False)
        except (NotFound, ValueError):  # requests' JSON decoding error is a ValueError
            return None
        except APIError as e:
            if e.status_code == 409:
                return None
            raise DockerGatewayError(f"reading the stats of {name_or_id} failed: {describe_api_error(e)}") from e

    async def create_container(self, spec: ContainerSpec) -> str:
        """Create the container on its first network with its aliases, join the others; return its id."""
        networks = list(spec.networks.items())

        def create() -> str:
            host_config = self.client.create_host_config(**spec.host_config)
            networking_config = None
            if networks and networks[0][1]:
                first, aliases = networks[0]
                networking_config = self.client.create_networking_config(
                    {first: self.client.create_endpoint_config(aliases=aliases)}
                )
            created = self.client.create_container(
                host_config=host_config, networking_config=networking_config, **spec.create
            )
            for network, aliases in networks[1:]:
                self.client.connect_container_to_network(created["Id"], network, aliases=aliases or None)
            return created["Id"]

        return await self._call(f"creating container {spec.create['name']}", create)

    async def run_to_completion(self, spec: ContainerSpec, timeout: float) -> tuple[int, str]:
        """Create, start and wait (at most ``timeout`` seconds) for a short-lived container; return its exit code
        and output. It is removed afterwards whatever happened; a failure says what the container printed."""
        name = spec.create["name"]
        container_id = await self.create_container(spec)
        try:
            await self.start_container(container_id)
            try:
                result = await self._call(
                    f"waiting for container {name}", self.client.wait, container_id, timeout=timeout
                )
            except DockerTimeout as e:
                raise DockerGatewayError(f"container {name} did not finish within {timeout:g} s") from e
            return int(result.get("StatusCode", -1)), await self.logs_tail(container_id, 50)
        except DockerGatewayError as e:
            output = (await self.logs_tail(container_id, 20)).strip()
            raise DockerGatewayError(f"{e}; its output: {output or '(none)'}", e.status_code) from e
        finally:
            try:
                await self.remove_container(container_id)
            except DockerGatewayError as e:
                # The first failure is the one to report; a container left behind carries our labels for gc.
                log.warning("%s", e)

    async def start_container(self, name_or_id: str) -> None:
        await self._call(f"starting container {name_or_id}", self.client.start, name_or_id)

    async def stop_container(self, name_or_id: str, timeout: int) -> bool:
        """Stop; False when there was no such container."""
        stopped = await self._call(
            f"stopping container {name_or_id}", self.client.stop, name_or_id, timeout=timeout, if_missing=False
        )
        return stopped is not False

    async def remove_container(self, name_or_id: str) -> None:
        """Remove (forcefully, so a half-started container goes too). Anonymous volumes go with it; named volumes
        never do."""
        try:
            await self._call(
                f"removing container {name_or_id}",
                self.client.remove_container,
                name_or_id,
                v=True,
                force=True,
                if_missing=None,
            )
        except DockerGatewayError as e:
            if e.status_code != 409:  # 409: removal already in progress
                raise

    async def logs_tail(self, name_or_id: str, lines: int) -> str:
        """The container's last lines of output; "" when they cannot be read (they only ever add to a message)."""
        try:
            raw = await self._call(
                f"reading the logs of {name_or_id}", self.client.logs, name_or_id, tail=lines, stdout=True, stderr=True
            )
        except DockerGatewayError:
            return ""
        return raw.decode("utf-8", "replace")

    async def exec_run(self, name_or_id: str, cmd: list[str], user: str = "") -> tuple[int, str]:
        """Run ``cmd`` in a running container; return its exit code and combined output."""

        def run() -> tuple[int, str]:
            created = self.client.exec_create(name_or_id, cmd, user=user, stdout=True, stderr=True)
            output = self.client.exec_start(created["Id"])
            exit_code = self.client.exec_inspect(created["Id"])["ExitCode"]
            return exit_code, output.decode("utf-8", "replace")

        return await self._call(f"running {cmd[0] if cmd else 'a command'} in container {name_or_id}", run)

    async def list_containers(self, label_filters: list[str]) -> list[dict[str, Any]]:
        return await self._call(
            "listing containers", self.client.containers, all=True, filters={"label": label_filters}
        )

    async def _network_change(
        self, container: str, action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        """One change of ``container``'s networks, queued behind its others. Docker makes them one at a time per
        container (an overlay's first endpoint on a node takes about half a second), so a burst of them, say the
        hub's container joining every new server's network, would otherwise hold every thread of the pool while they
        wait inside the engine, and every other user's requests would queue behind them."""
        async with self._network_lanes.setdefault(container, asyncio.Lock()):
            await self._call(action, fn, container, *args, **kwargs)

    async def connect_network(self, network: str, container: str, aliases: list[str] | None = None) -> None:
        try:
            await self._network_change(
                container,
                f"connecting {container} to network {network}",
                self.client.connect_container_to_network,
                network,
                aliases=aliases,
            )
        except DockerGatewayError as e:
            # already on it: a bridge says "already exists", an overlay "is already attached"
            if "already exists" not in str(e) and "already attached" not in str(e):
                raise

    async def disconnect_network(self, network: str, container: str) -> None:
        # Not connected, or either side already gone: nothing to undo.
        with contextlib.suppress(DockerGatewayError):
            await self._network_change(
                container,
                f"disconnecting {container} from network {network}",
                self.client.disconnect_container_from_network,
                network,
                force=True,
            )

    # -- volumes ------------------------------------------------------------------------------------------------

    async def inspect_volume(self, name: str) -> dict[str, Any] | None:
        return await self._call(f"inspecting volume {name}", self.client.inspect_volume, name, if_missing=None)

    async def ensure_volume(self, name: str, labels: Mapping[str, str]) -> tuple[dict[str, Any], bool]:
        """The volume ``name``, created with ``labels`` if missing; also say whether it was created now.

        An existing volume keeps its own labels: they may hold state (the database password) that must not
        change while the data lives.
        """
        existing = await self.inspect_volume(name)
        if existing is not None:
            return existing, False
        created = await self._call(f"creating volume {name}", self.client.create_volume, name=name, labels=dict(labels))
        return created, True

    async def list_volumes(self, label_filters: list[str]) -> list[dict[str, Any]]:
        result = await self._call("listing volumes", self.client.volumes, filters={"label": label_filters})
        return result.get("Volumes") or []

    async def remove_volume(self, name: str) -> None:
        await self._call(f"removing volume {name}", self.client.remove_volume, name, force=True, if_missing=None)

    # -- networks -----------------------------------------------------------------------------------------------

    async def inspect_network(self, name: str) -> dict[str, Any] | None:
        return await self._call(f"inspecting network {name}", self.client.inspect_network, name, if_missing=None)

    async def ensure_network(self, config: Mapping[str, Any]) -> bool:
        """Create the network unless it exists; True when it was created now."""
        if await self.inspect_network(config["name"]) is not None:
            return False
        try:
            await self._call(f"creating network {config['name']}", self.client.create_network, **config)
        except DockerGatewayError as e:
            if e.status_code == 409:  # made by a concurrent call meanwhile
                return False
            raise
        return True

    async def list_networks(self, label_filters: list[str]) -> list[dict[str, Any]]:
        return await self._call("listing networks", self.client.networks, filters={"label": label_filters})

    async def remove_network(self, name: str) -> None:
        await self._call(f"removing network {name}", self.client.remove_network, name, if_missing=None)

    # -- engine -------------------------------------------------------------------------------------------------

    async def info(self) -> dict[str, Any]:
        return await self._call("asking the Docker engine for its details", self.client.info)

    async def disk_usage(self) -> dict[str, Any]:
        """Docker's ``system df``: images, containers and volumes with their sizes (``Volumes[].UsageData.Size``).
        The engine walks every volume to answer, so this is slow on big hosts: only for admin tools."""
        return await self._call("reading Docker's disk usage", self.client.df)


class ContainerView:
    """A shared snapshot of the project's containers, refreshed with one list request when older than
    ``max_age`` seconds. Concurrent readers share one refresh."""

    def __init__(self, gateway: DockerGateway, max_age: float):
        self._gateway = gateway
        self.max_age = max_age
        self._by_name: dict[str, dict[str, Any]] = {}
        self._taken_at = float("-inf")
        self._refresh_task: asyncio.Task[None] | None = None
        self.refreshes = 0

    async def state(self, name: str, not_older_than: float = float("-inf")) -> dict[str, Any] | None:
        """The listed summary of container ``name`` (or None if absent), from a snapshot taken after
        ``not_older_than`` (a ``time.monotonic()`` value) and at most ``max_age`` old."""
        oldest_allowed = max(not_older_than, time.monotonic() - self.max_age)
        if self._taken_at < oldest_allowed:
            await self._refresh()
        return self._by_name.get(name)

    async def _refresh(self) -> None:
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.ensure_future(self._take_snapshot())
        await asyncio.shield(self._refresh_task)

    async def _take_snapshot(self) -> None:
        started = time.monotonic()
        containers = await self._gateway.list_containers([f"{LABEL_MANAGED}=true"])
        self._by_name = {name.lstrip("/"): container for container in containers for name in container.get("Names", [])}
        self._taken_at = started
        self.refreshes += 1


def split_image_tag(image: str) -> tuple[str, str]:
    """``repo[:tag]`` → (repo, tag); a registry port (``host:5000/img``) is not a tag."""
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        repo, digest = image.split("@", 1)
        return repo, digest
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
        return repo, tag
    return image, "latest"
