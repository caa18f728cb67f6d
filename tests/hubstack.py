"""A real JupyterHub (with configurable-http-proxy) in a subprocess, driven through its REST API, and helpers to
look inside the containers it makes."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
import requests

SINGLEUSER_IMAGE = os.environ.get("MUS_SINGLEUSER_IMAGE", "multiuser-spawner/singleuser:latest")
POSTGRES_IMAGE = os.environ.get("MUS_POSTGRES_IMAGE", "multiuser-spawner/postgres:15")
REDIS_IMAGE = os.environ.get("MUS_REDIS_IMAGE", "multiuser-spawner/redis:7")
RABBITMQ_IMAGE = os.environ.get("MUS_RABBITMQ_IMAGE", "multiuser-spawner/rabbitmq:3")
MARIADB_IMAGE = os.environ.get("MUS_MARIADB_IMAGE", "multiuser-spawner/mariadb:10")
JUPYTERHUB = str(Path(sys.executable).with_name("jupyterhub"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker0_address() -> str:
    """The host's address on Docker's default bridge: where containers reach a hub running on the host."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True, text=True, check=True)
    return out.stdout.split(" inet ", 1)[1].split("/", 1)[0]


@dataclass
class HubStack:
    """One hub process. ``extra_config`` is appended to the generated config file."""

    workdir: Path
    prefix: str
    users: dict[str, list[str]] = field(default_factory=dict)  # user -> groups
    extra_config: str = ""
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    port: int = field(default_factory=free_port)
    hub_port: int = field(default_factory=free_port)
    proxy_api_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    #: where the hub's proxy listens, and what the hub command runs under (e.g. ``nsenter`` into a network namespace)
    host: str = "127.0.0.1"
    launcher: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.url}/hub/api"

    @property
    def log_path(self) -> Path:
        return self.workdir / "jupyterhub.log"

    def write_config(self) -> Path:
        groups: dict[str, list[str]] = {}
        for user, user_groups in self.users.items():
            for group in user_groups:
                groups.setdefault(group, []).append(user)
        hub_ip = docker0_address()
        config = textwrap.dedent(
            f"""
            c = get_config()  # noqa
            c.JupyterHub.bind_url = {self.url!r}
            c.JupyterHub.hub_ip = {hub_ip!r}
            c.JupyterHub.hub_port = {self.hub_port}
            c.JupyterHub.hub_connect_ip = {hub_ip!r}
            c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
            c.ConfigurableHTTPProxy.should_start = True
            c.JupyterHub.cleanup_servers = False
            c.JupyterHub.cleanup_proxy = True
            c.JupyterHub.db_url = "sqlite:///{self.workdir}/jupyterhub.sqlite"
            c.JupyterHub.cookie_secret_file = "{self.workdir}/cookie_secret"
            c.ConfigurableHTTPProxy.pid_file = "{self.workdir}/proxy.pid"
            c.JupyterHub.pid_file = "{self.workdir}/hub.pid"
            c.JupyterHub.authenticator_class = "dummy"
            c.DummyAuthenticator.password = "pw"
            c.Authenticator.allowed_users = {set(self.users) | {"admin"}!r}
            c.Authenticator.admin_users = {{"admin"}}
            c.JupyterHub.load_groups = {{g: {{"users": u}} for g, u in {groups!r}.items()}}
            c.JupyterHub.services = [{{"name": "tester", "api_token": {self.token!r}}}]
            c.JupyterHub.load_roles = [{{"name": "tester", "scopes": ["admin:users", "admin:servers",
                "admin:groups", "access:servers", "read:users", "list:users"], "services": ["tester"]}}]
            c.JupyterHub.spawner_class = "multiuser"
            c.Spawner.start_timeout = 180
            c.Spawner.http_timeout = 60
            c.MultiUserSpawner.image = {SINGLEUSER_IMAGE!r}
            c.MultiUserSpawner.database_image = {POSTGRES_IMAGE!r}
            c.MultiUserSpawner.prefix = {self.prefix!r}
            """
        )
        path = self.workdir / "jupyterhub_config.py"
        path.write_text(config + textwrap.dedent(self.extra_config))
        return path

    def start(self, timeout: float = 60) -> None:
        config = self.write_config()
        log = open(self.log_path, "a")  # noqa: SIM115 - kept open for the process's lifetime
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        self.process = subprocess.Popen(
            [*self.launcher, JUPYTERHUB, "-f", str(config)],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hub exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.api}/", timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"hub did not answer in {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the hub (and its proxy); the user servers keep running (cleanup_servers is off)."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """Kill the hub process with SIGKILL, as a crash or the OOM killer would: nothing of its own shutdown runs.
        Its proxy stays; the next :meth:`start` finds it by its pid file and replaces it, as JupyterHub does."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(30)
        self.process = None

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- REST API ---------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {self.token}"}
        return requests.request(method, f"{self.api}{path}", headers=headers, timeout=120, **kwargs)

    def user(self, name: str) -> dict:
        r = self.request("GET", f"/users/{name}")
        r.raise_for_status()
        return r.json()

    def start_server(self, name: str, options: dict | None = None, server: str = "", timeout: float = 120) -> dict:
        """Start a server and wait until the hub says it is ready; return the server's model."""
        if (self.user(name)["servers"].get(server) or {}).get("ready") and options is None:
            return self.wait_ready(name, server, timeout)  # already running: tests share servers where they can
        path = f"/users/{name}/servers/{server}" if server else f"/users/{name}/server"
        r = self.request("POST", path, json=options or {})
        if r.status_code >= 400:
            raise AssertionError(f"start of {name} refused: {r.status_code} {r.text}\n{self.log_tail()}")
        return self.wait_ready(name, server, timeout)

    def wait_ready(self, name: str, server: str = "", timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.user(name)["servers"].get(server)
            if model and model.get("ready"):
                return model
            if not model:
                raise AssertionError(f"server of {name} went away while starting:\n{self.log_tail()}")
            time.sleep(0.25)
        raise AssertionError(f"server of {name} not ready in {timeout} s:\n{self.log_tail()}")

    def stop_server(self, name: str, server: str = "", timeout: float = 60) -> None:
        path = f"/users/{name}/servers/{server}" if server else f"/users/{name}/server"
        r = self.request("DELETE", path)
        if r.status_code not in (202, 204, 400):  # 400: not running
            raise AssertionError(f"stop of {name} refused: {r.status_code} {r.text}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server not in self.user(name)["servers"]:
                return
            time.sleep(0.25)
        raise AssertionError(f"server of {name} did not stop in {timeout} s:\n{self.log_tail()}")

    def server_api(self, name: str, path: str, server: str = "") -> requests.Response:
        """Call the user's single-user server through the proxy, as the hub's admin service."""
        base = f"{self.url}/user/{name}/{server + '/' if server else ''}"
        return requests.get(f"{base}{path}", headers={"Authorization": f"token {self.token}"}, timeout=30)


def wait_until(condition, timeout: float = 60, what: str = "condition") -> None:
    """Call ``condition`` until it is true; fail, naming ``what``, once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def notebook(docker_client: docker.DockerClient, hub: HubStack, user: str):
    """The user's notebook container (default server), by the spawner's default name."""
    return docker_client.containers.get(f"{hub.prefix}-{user}")


def running_container_names(client: docker.DockerClient, name: str) -> list[str]:
    """The running containers whose name contains ``name``, from one list call. docker-py's ``containers.list()``
    also inspects each one and fails when one is removed in between, as a hub's clean-up does while a test waits
    for it."""
    return [c["Names"][0].lstrip("/") for c in client.api.containers(filters={"name": name})]


def exec_in(container, cmd: str, user: str = "") -> tuple[int, str]:
    """Run a shell command in a container; return (exit code, output)."""
    result = container.exec_run(["sh", "-c", cmd], user=user, demux=False)
    return result.exit_code, (result.output or b"").decode("utf-8", "replace")


def cleanup_prefix(client: docker.DockerClient, prefix: str) -> None:
    """Remove every container, network and volume whose name starts with ``prefix-``."""
    start = f"{prefix}-"
    # Only this prefix's containers are listed (the engine is shared: listing every container inspects each, and
    # one that another test removes meanwhile would fail the listing).
    for c in client.containers.list(all=True, filters={"name": start}):
        if c.name.startswith(start):
            c.remove(force=True, v=True)
    for n in client.networks.list():
        if n.name.startswith(start):
            n.remove()
    for v in client.volumes.list():
        if v.name.startswith(start):
            v.remove(force=True)


def dump_logs(client: docker.DockerClient, prefix: str) -> str:
    """The last log lines of the prefix's containers, for a failed test's report; what went wrong instead when the
    engine cannot be asked (a test that stopped it failed): the report must never end the whole run."""
    out = []
    try:
        for c in client.containers.list(all=True, filters={"name": f"{prefix}-"}):
            if c.name.startswith(f"{prefix}-"):
                logs = c.logs(tail=40).decode("utf-8", "replace")
                out.append(f"----- container {c.name} ({c.status}) -----\n{logs}")
    except (docker.errors.DockerException, requests.RequestException) as e:
        out.append(f"(the containers' logs could not be read: {e})")
    return "\n".join(out)


def spawn_failure_message(hub: HubStack, name: str, timeout: float = 120) -> str:
    """Start a server expected to fail; return the failure message from the progress event stream."""
    r = hub.request("POST", f"/users/{name}/server", json={})
    if r.status_code >= 400:  # failed quickly, within the request
        return r.json()["message"]
    # 202: still starting; 201 can also mean "failed before the hub looked": the progress stream tells either way
    assert r.status_code in (201, 202), (r.status_code, r.text)
    url = f"{hub.api}/users/{name}/server/progress"
    with requests.get(url, headers={"Authorization": f"token {hub.token}"}, stream=True, timeout=timeout) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("failed"):
                    return event["message"]
                if event.get("ready"):
                    raise AssertionError(f"server of {name} started, but it should have failed")
    raise AssertionError("progress stream ended without a failure")


def next_progress_event(hub: HubStack, name: str, wanted: str, timeout: float = 120) -> dict:
    """Follow the server's progress event stream (it replays every event from the spawn's start) until an event
    whose message contains ``wanted``; return it. Fails if the spawn ends (ready or failed) first."""
    url = f"{hub.api}/users/{name}/server/progress"
    with requests.get(url, headers={"Authorization": f"token {hub.token}"}, stream=True, timeout=timeout) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if not (line and line.startswith("data:")):
                continue
            event = json.loads(line[5:])
            if wanted in event.get("message", ""):
                return event
            if event.get("failed") or event.get("ready"):
                raise AssertionError(f"the spawn of {name} ended before {wanted!r}: {event}\n{hub.log_tail()}")
    raise AssertionError(f"progress stream of {name} ended before {wanted!r}")


def next_docker_event(
    client: docker.DockerClient, since: float, filters: dict, name: str, timeout: float = 120
) -> dict:
    """The first Docker event since ``since`` (a ``time.time()`` value) matching ``filters`` whose object is
    called ``name``. Docker keeps its recent events, so one that happened before the call is found too."""
    until = time.time() + timeout
    for event in client.api.events(since=since, until=until, filters=filters, decode=True):
        attributes = event.get("Actor", {}).get("Attributes", {})
        if name in (attributes.get("name"), event.get("Actor", {}).get("ID")):
            return event
    raise AssertionError(f"no Docker event {filters} for {name} in {timeout} s")


def host_dockerd_pid() -> int:
    """The pid of this machine's own dockerd (from its pid file: other engines, Docker-in-Docker ones for a Swarm,
    may run here too and must not be taken for it)."""
    return int(Path("/var/run/docker.pid").read_text().strip())


def stop_dockerd(timeout: float = 90) -> list[bytes]:
    """Stop the machine's dockerd as ``systemctl stop`` would (SIGTERM: it stops every container, then exits) and
    wait until it is gone; return its command line, for :func:`start_dockerd`."""
    pid = host_dockerd_pid()
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().split(b"\0")[:-1]
    cmdline[0] = os.readlink(f"/proc/{pid}/exe").encode()  # started by a bare name, perhaps: use the real path
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while not _exited(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"dockerd (pid {pid}) did not stop in {timeout} s")
        time.sleep(0.2)
    return cmdline


def _exited(pid: int) -> bool:
    """Whether the process has ended. A dockerd that :func:`start_dockerd` started earlier in this run is this
    process's child: once it ends it stays a zombie (its /proc entry remains) until it is reaped here."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def start_dockerd(cmdline: list[bytes], timeout: float = 90) -> None:
    """Start dockerd again as scripts/setup does (its own session, its log in /var/log/dockerd.log); wait until it
    answers."""
    with open("/var/log/dockerd.log", "ab") as log:
        subprocess.Popen(
            cmdline, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            docker.from_env().ping()
            return
        except Exception:
            time.sleep(0.5)
    raise AssertionError(f"dockerd did not answer in {timeout} s after its start")


def spawn_outcome(hub: HubStack, name: str, timeout: float = 180) -> dict:
    """The last event of a spawn already under way (or just ended): the one that says it failed or is ready."""
    url = f"{hub.api}/users/{name}/server/progress"
    with requests.get(url, headers={"Authorization": f"token {hub.token}"}, stream=True, timeout=timeout) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("failed") or event.get("ready"):
                    return event
    raise AssertionError(f"progress stream of {name} ended without an outcome")


def begin_spawn(hub: HubStack, name: str, timeout: float = 60) -> Future:
    """Ask the hub to start the default server without waiting for its answer (the hub holds the request for up
    to 10 s while the spawn runs, and a test must act during the spawn); return once the spawn is under way.
    The returned future holds the hub's response, or the error of a request the test cut short."""
    executor = ThreadPoolExecutor(max_workers=1)
    answer = executor.submit(hub.request, "POST", f"/users/{name}/server", json={})
    executor.shutdown(wait=False)
    deadline = time.monotonic() + timeout
    while not hub.user(name)["servers"].get(""):
        if answer.done() and answer.exception() is None and answer.result().status_code >= 400:
            raise AssertionError(f"start of {name} refused: {answer.result().text}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the spawn of {name} did not begin in {timeout} s:\n{hub.log_tail()}")
        time.sleep(0.05)
    return answer
