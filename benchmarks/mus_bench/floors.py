"""The raw-Docker floors: the containers a spawner makes, started directly with docker-py, N users at once, and
called ready by the same rules (``floor``, ``pair-floor``, ``services-floor``, ``db-floor``)."""

from __future__ import annotations

import functools
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import docker
import jupyterhub

from hubstack import SINGLEUSER_IMAGE, docker0_address, free_port

from .containers import container_timeline, remove_containers, service_timeline
from .machine import CpuMeter
from .probes import postgres_ready, server_answers, wait_until
from .results import Burst
from .scenarios import HOME, NOTEBOOK_LIMITS, ROUNDS, SERVER_PORT, ServerKind, run_at_once, user_names
from .services import PAIR_DATABASE, SIDECARS, Service


class HubStub:
    """What a single-user server asks of its hub while it starts, and nothing more: ``GET /hub/api`` (its version
    check, without which it exits) and ``POST .../activity``. Listens on the docker0 address, like the real hub,
    unless given where to listen (``bind``: address and port) and the host name the servers reach it by
    (``public_host``)."""

    def __init__(self, bind: tuple[str, int] | None = None, public_host: str = "") -> None:
        version = jupyterhub.__version__

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = json.dumps({"version": version}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-JupyterHub-Version", version)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._answer()

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer()

            def log_message(self, *args: Any) -> None:
                pass

        self.ip, self.port = bind or (docker0_address(), free_port())
        self.public_host = public_host or self.ip
        self.server = ThreadingHTTPServer((self.ip, self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def api_url(self) -> str:
        return f"http://{self.public_host}:{self.port}/hub/api"


def singleuser_environment(user: str, hub_api_url: str) -> dict[str, str]:
    """The environment a hub gives a single-user server, as far as its start-up reads it."""
    token = secrets.token_hex(16)
    prefix = f"/user/{user}/"
    return {
        "JUPYTERHUB_API_TOKEN": token,
        "JPY_API_TOKEN": token,
        "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}",
        "JUPYTERHUB_USER": user,
        "JUPYTERHUB_SERVER_NAME": "",
        "JUPYTERHUB_API_URL": hub_api_url,
        "JUPYTERHUB_ACTIVITY_URL": f"{hub_api_url}/users/{user}/activity",
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_HOST": "",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:{SERVER_PORT}{prefix}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
        "JUPYTER_IMAGE_SPEC": SINGLEUSER_IMAGE,
    }


def floor_burst(
    api: docker.APIClient, prefix: str, n: int, server: ServerKind, timeout: float, scenario: str = "floor"
) -> list[Burst]:
    """N notebook containers at once with docker-py: create, start, read the IP, probe HTTP until it answers (the
    URL the hub probes); then stop and remove them all at once. Once for new users, once more on their volumes.

    With sidecars (``pair-floor``, ``services-floor``), each user gets what MultiUserSpawner makes with its
    database or its services on: a new bridge network, the sidecar containers on it (each with its data on a
    volume) and the notebook container on it; ready when all of them are."""
    with HubStub() as stub:
        return [floor_round(api, prefix, n, server, timeout, stub, returning, scenario) for returning in ROUNDS]


def floor_round(
    api: docker.APIClient,
    prefix: str,
    n: int,
    server: ServerKind,
    timeout: float,
    stub: HubStub,
    returning: bool,
    scenario: str,
) -> Burst:
    sidecars = SIDECARS.get(scenario, ())
    result = Burst(scenario, server.name, n, returning)
    users = user_names(n)
    ids: dict[str, list[str]] = {}  # user -> their containers, notebook last
    meter = CpuMeter(api, prefix, {"bench": [os.getpid()]})

    def start_one(i: int, t0: float) -> None:
        user = users[i]
        network = f"{prefix}-{user}_net" if sidecars else "bridge"
        ids[user] = []
        if sidecars:
            api.create_network(network, driver="bridge", check_duplicate=True)
        sidecars_ready = [start_sidecar(user, service, network) for service in sidecars]
        ip = start_container(
            user,
            SINGLEUSER_IMAGE,
            name=f"{prefix}-{user}",
            command=server.command,
            environment=singleuser_environment(user, stub.api_url),
            binds={f"{prefix}-{user}_home": {"bind": HOME, "mode": "rw"}},
            network=network,
            limits=NOTEBOOK_LIMITS,
        )
        checks = [lambda: server_answers(ip, SERVER_PORT, f"/user/{user}/api"), *sidecars_ready]
        wait_until(checks, t0, timeout, f"{user}'s server did not answer")
        result.ready[user] = round(time.monotonic() - t0, 3)

    def start_sidecar(user: str, service: Service, network: str) -> Callable[[], bool]:
        """Start one of the user's sidecars; return its readiness check."""
        name = service.container(prefix, user)
        if service.make_volume:
            api.create_volume(name)
        password = secrets.token_urlsafe(24)
        ip = start_container(
            user,
            service.image,
            name=name,
            environment=service.environment_with(password),
            command=service.command_with(password),
            hostname=service.alias if service.hostname else None,
            binds={name: {"bind": service.data_path, "mode": "rw"}},
            network=network,
            aliases=[service.alias],
            limits=service.limits,
        )
        return functools.partial(service.ready, ip)

    def start_container(
        user: str,
        image: str,
        *,
        network: str,
        binds: dict,
        aliases: list[str] | None = None,
        limits: dict[str, int],
        **create: Any,
    ) -> str:
        host_config = api.create_host_config(
            binds=binds,
            network_mode=network,
            init=True,  # `docker run --init`: a stop is the server's own shutdown, never a 10 s grace period
            **limits,
        )
        networking = api.create_networking_config({network: api.create_endpoint_config(aliases=aliases)})
        created = api.create_container(
            image, ports=[SERVER_PORT], host_config=host_config, networking_config=networking, **create
        )
        ids[user].append(created["Id"])
        api.start(created["Id"])
        return api.inspect_container(created["Id"])["NetworkSettings"]["Networks"][network]["IPAddress"]

    meter.start()
    try:
        t0 = run_at_once(n, start_one, timeout + 30)
        result.cpu = meter.stop()
        result.phases = {u: container_timeline(api, f"{prefix}-{u}", t0, server.up_marker) for u in users}
        for u in users:
            for service in sidecars:
                result.phases[u].update(service_timeline(api, service, prefix, u, t0))
    except Exception as e:
        result.error = f"start: {e!r}"

    def stop_one(i: int, t0: float) -> None:
        user = users[i]
        for container in ids[user]:
            api.stop(container, timeout=10)  # docker stop's (and both spawners') default grace period
            api.remove_container(container, v=True)  # anonymous volumes only: named ones stay
        if sidecars:
            api.remove_network(f"{prefix}-{user}_net")
        result.stopped[user] = round(time.monotonic() - t0, 3)

    if not result.error:
        try:
            run_at_once(n, stop_one, 120 + 5 * n)
        except Exception as e:
            result.error = f"stop: {e!r}"
    remove_containers(api, prefix)  # whatever a failed round left, so the next one can reuse the names
    return result


def database_floor_burst(api: docker.APIClient, prefix: str, n: int, timeout: float) -> list[Burst]:
    """N database containers at once with docker-py, each on a new data volume, ready when pg_isready's rule says
    so; removed at once (the volumes stay). Then once more on the same volumes, which need no initialisation."""
    return [database_floor_round(api, prefix, n, timeout, returning) for returning in ROUNDS]


def database_floor_round(api: docker.APIClient, prefix: str, n: int, timeout: float, returning: bool) -> Burst:
    result = Burst("db-floor", "postgres", n, returning)
    users = user_names(n)
    ids: dict[str, str] = {}
    meter = CpuMeter(api, prefix, {"bench": [os.getpid()]})
    database = PAIR_DATABASE

    def start_one(i: int, t0: float) -> None:
        user = users[i]
        name = database.container(prefix, user)
        created = api.create_container(
            database.image,
            name=name,
            environment=database.environment_with(secrets.token_urlsafe(24)),
            host_config=api.create_host_config(
                binds={name: {"bind": database.data_path, "mode": "rw"}}, network_mode="bridge", init=True
            ),
        )
        ids[user] = created["Id"]
        api.start(created["Id"])
        ip = api.inspect_container(created["Id"])["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        wait_until([lambda: postgres_ready(ip)], t0, timeout, f"{user}'s database was not ready")
        result.ready[user] = round(time.monotonic() - t0, 3)

    meter.start()
    try:
        t0 = run_at_once(n, start_one, timeout + 30)
        result.cpu = meter.stop()
        result.phases = {u: service_timeline(api, database, prefix, u, t0) for u in users}
    except Exception as e:
        result.error = f"start: {e!r}"
        result.cpu = meter.stop()

    def stop_one(i: int, t0: float) -> None:
        user = users[i]
        if user in ids:
            api.stop(ids[user], timeout=10)  # a clean shutdown, so the next round finds a consistent cluster
            api.remove_container(ids[user], v=True)
            result.stopped[user] = round(time.monotonic() - t0, 3)

    try:
        run_at_once(n, stop_one, 120 + 5 * n)
    except Exception as e:
        result.error = result.error or f"stop: {e!r}"
    remove_containers(api, prefix)
    return result
