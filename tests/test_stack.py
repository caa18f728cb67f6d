"""The hub on a swarm as deploy/stack.yaml runs it: ``docker stack deploy`` puts the hub launcher on the manager,
which runs the hub in a plain container beside itself, its proxy's port published on the manager; a user logs in
through that port, their notebook runs as a Swarm service on a worker, they reach it through the proxy, and the
notebook calls the hub by its container's name on its overlay, also after the launcher's task is replaced by a new
one (with a new hub container, which joins the overlay again). ``docker stack rm`` then removes the stack's service
and the hub's container, and keeps the hub's volume.

The deployment's own configuration (deploy/jupyterhub_config.py, switched to the swarm by stack.yaml) runs as it is;
a second compose file, as a site would add one, loads it and changes only the authenticator (a password instead of
GitHub) and puts notebooks on workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
import requests
from conftest import IN_CI, new_prefix
from swarmstack import Swarm, SwarmStack, remove_swarm_objects, wait_until

from hubstack import POSTGRES_IMAGE, SINGLEUSER_IMAGE, free_port
from multiuser_spawner.hub_launcher import LABEL_LAUNCHER, STACK_LABEL

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parent.parent
STACK_FILE = ROOT / "deploy" / "stack.yaml"
HUB_IMAGE = os.environ.get("MUS_HUB_IMAGE", "multiuser-spawner/hub:latest")
USER = "ada"

# A site's second compose file: the deployment's configuration, then a password login and notebooks on workers.
TEST_LAYER = """\
version: "3.8"
services:
  hub:
    command: ["python3", "-m", "multiuser_spawner.hub_launcher", "jupyterhub", "-f", "/srv/jupyterhub/test_config.py"]
    volumes:
      - {config}:/srv/jupyterhub/test_config.py:ro
"""
TEST_CONFIG = """\
load_subconfig("/srv/jupyterhub/jupyterhub_config.py")  # noqa: F821 - the deployment's own
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allowed_users = {{{user!r}}}
c.MultiUserSwarmSpawner.swarm_placement_constraints = ["node.role==worker"]
"""


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (CI is set: Docker-backed tests must run)", pytrace=False)
    pytest.skip(reason)


def docker_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)


@dataclass
class StackHub:
    """deploy/stack.yaml deployed as the stack ``name`` (also the prefix of the users' objects), its proxy on
    ``port`` of the manager."""

    name: str
    workdir: Path
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    password: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def service(self) -> str:
        return f"{self.name}_hub"

    def deploy(self) -> None:
        config = self.workdir / "test_config.py"
        config.write_text(TEST_CONFIG.format(password=self.password, user=USER))
        layer = self.workdir / "test-layer.yaml"
        layer.write_text(TEST_LAYER.format(config=config))
        env = {
            **os.environ,
            "HUB_IMAGE": HUB_IMAGE,
            "HUB_PORT": str(self.port),
            "HUB_CONTAINER_NAME": self.hub_name,
            "HUB_ADMIN_API_TOKEN": self.token,
            # an OAuth app that exists nowhere, for the deployment's config; the test layer logs in by password
            "GITHUB_CLIENT_ID": "stack-test",
            "GITHUB_CLIENT_SECRET": self.token,
            "OAUTH_CALLBACK_URL": f"{self.url}/hub/oauth_callback",
            "MUS_PREFIX": self.name,
            "MUS_SINGLEUSER_IMAGE": SINGLEUSER_IMAGE,
            "MUS_POSTGRES_IMAGE": POSTGRES_IMAGE,
        }
        done = docker_cli(
            "stack", "deploy", "--resolve-image", "never", "-c", str(STACK_FILE), "-c", str(layer), self.name, env=env
        )
        assert done.returncode == 0, f"docker stack deploy failed:\n{done.stdout}\n{done.stderr}"

    def remove(self) -> None:
        docker_cli("stack", "rm", self.name)

    def wait_for_api(self, timeout: float = 180) -> None:
        def answers() -> bool:
            try:
                return requests.get(f"{self.url}/hub/api/", timeout=2).ok
            except requests.RequestException:
                return False

        deadline = time.monotonic() + timeout
        while not answers():
            assert time.monotonic() < deadline, f"the stack's hub did not answer in {timeout} s:\n{self.diagnosis()}"
            time.sleep(0.5)

    def diagnosis(self) -> str:
        tasks = docker_cli("service", "ps", "--no-trunc", self.service).stdout
        logs = docker_cli("service", "logs", "--raw", "--tail", "80", self.service)
        return f"{tasks}\n{logs.stdout}{logs.stderr}"

    @property
    def hub_name(self) -> str:
        """The hub's container (the launcher's service is ``<stack>_hub``)."""
        return f"{self.name}-jupyterhub"

    def wait_until(self, condition, timeout: float, what: str):
        """:func:`wait_until`, with the hub's log in the failure."""
        try:
            return wait_until(condition, timeout, what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnosis()}") from None

    def hub_container(self, client: docker.DockerClient):
        """The hub's running container (on the manager, this engine), made by the stack's launcher."""
        try:
            container = client.containers.get(self.hub_name)
        except docker.errors.NotFound:
            return None
        return container if container.status == "running" else None

    def admin(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(
            method, f"{self.url}/hub/api{path}", headers={"Authorization": f"token {self.token}"}, timeout=60, **kwargs
        )


class Browser:
    """A user's browser session on the hub, through the proxy: a login form, cookies, the XSRF token."""

    def __init__(self, hub: StackHub) -> None:
        self.hub = hub
        self.session = requests.Session()

    def log_in(self, user: str, password: str) -> None:
        self.session.get(f"{self.hub.url}/hub/login", timeout=30).raise_for_status()
        reply = self.session.post(
            f"{self.hub.url}/hub/login",
            data={"username": user, "password": password, "_xsrf": self.xsrf},
            allow_redirects=False,
            timeout=30,
        )
        assert reply.status_code == 302, (reply.status_code, reply.text[-500:])

    @property
    def xsrf(self) -> str:
        return self.session.cookies.get("_xsrf", path="/hub/") or ""

    def api(self, method: str, path: str) -> requests.Response:
        return self.session.request(
            method, f"{self.hub.url}/hub/api{path}", headers={"X-XSRFToken": self.xsrf}, timeout=60
        )

    def open_notebook(self, user: str) -> dict:
        """Open the user's server through the proxy (the hub's OAuth round trip, then the server's own API)."""
        page = self.session.get(f"{self.hub.url}/user/{user}/lab", timeout=60)
        assert page.status_code == 200, (page.status_code, page.url, page.text[-500:])
        status = self.session.get(f"{self.hub.url}/user/{user}/api/status", timeout=60)
        assert status.status_code == 200, (status.status_code, status.text[-500:])
        return status.json()


@pytest.fixture(scope="module")
def stack(docker_client, swarm_stack: SwarmStack, cluster: Swarm, tmp_path_factory):
    try:
        docker_client.images.get(HUB_IMAGE)
    except docker.errors.ImageNotFound:
        unavailable(f"the hub image {HUB_IMAGE} is missing: run images/build.sh hub")
    listed = subprocess.run(
        ["bash", str(ROOT / "images" / "build.sh"), "--list", "hub"],
        capture_output=True,
        text=True,
        env={**os.environ, "MUS_HUB_IMAGE": HUB_IMAGE},
        check=False,
    )
    if "up-to-date" not in listed.stdout:
        unavailable(f"the hub image {HUB_IMAGE} is not built from this checkout: run images/build.sh hub")
    if not swarm_stack.workers:
        unavailable("the test swarm has no worker: scripts/swarm up")
    hub = StackHub(name=new_prefix(), workdir=tmp_path_factory.mktemp("stack"))
    try:
        hub.deploy()
        hub.wait_for_api()
        yield hub
    finally:
        remove_everything(docker_client, cluster, hub)


def remove_everything(client: docker.DockerClient, cluster: Swarm, hub: StackHub) -> None:
    """The stack, whatever a failed test left of it (a hub container its launcher did not remove), what the hub
    made for its users, and the hub's volume."""
    hub.remove()
    try:
        wait_until(lambda: not stack_objects(client, hub.name), 120, "the stack's objects were not removed")
    finally:
        for container in client.containers.list(all=True, filters={"label": f"{STACK_LABEL}={hub.name}"}):
            container.remove(force=True)
        for network in client.networks.list(filters={"label": f"{STACK_LABEL}={hub.name}"}):
            with contextlib.suppress(docker.errors.APIError):  # still leaving: remove_swarm_objects waits a while
                network.remove()
        remove_swarm_objects(cluster, hub.name)
        for volume in client.volumes.list(filters={"label": f"{STACK_LABEL}={hub.name}"}):
            volume.remove(force=True)


def stack_objects(client: docker.DockerClient, stack: str) -> list[str]:
    """The services, networks and containers of the stack (by the label ``docker stack deploy`` gives them)."""
    label = {"label": f"{STACK_LABEL}={stack}"}
    return (
        [f"service {s.name}" for s in client.services.list(filters=label)]
        + [f"network {n.name}" for n in client.networks.list(filters=label)]
        + [f"container {c.name}" for c in client.containers.list(all=True, filters=label)]
    )


def hub_answers_from_notebook(swarm: SwarmStack, service: str, hub_name: str) -> dict:
    """The hub's API, called from inside the notebook's task by the name the notebook was given for the hub."""
    code = f"import urllib.request; print(urllib.request.urlopen('http://{hub_name}:8081/hub/api/').read().decode())"
    done = swarm.exec_in_task(swarm.running_task(service), "python3", "-c", code)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def networks_of(container) -> dict:
    container.reload()
    return container.attrs["NetworkSettings"]["Networks"]


def test_a_user_logs_in_and_reaches_a_notebook_on_a_worker_through_the_stacks_hub(stack, docker_client, swarm):
    # the stack's service is the launcher; the hub runs in a plain container beside it, labelled as the stack's
    hub = stack.hub_container(docker_client)
    assert hub is not None, stack.diagnosis()
    assert hub.labels[STACK_LABEL] == stack.name
    assert hub.labels[LABEL_LAUNCHER] not in (hub.id, "")

    browser = Browser(stack)
    browser.log_in(USER, stack.password)
    started = browser.api("POST", f"/users/{USER}/server")
    assert started.status_code in (201, 202), f"{started.status_code} {started.text}\n{stack.diagnosis()}"
    stack.wait_until(
        lambda: (browser.api("GET", f"/users/{USER}").json()["servers"].get("") or {}).get("ready"),
        240,
        f"{USER}'s server was not ready",
    )
    service = stack.admin("GET", f"/users/{USER}").json()["servers"][""]["state"]["object_name"]
    task = swarm.running_task(service)
    assert task.node in swarm.workers, f"{USER}'s notebook runs on {task.node}, not on a worker"
    assert browser.open_notebook(USER)

    # the hub's container joined the server's overlay, where the notebook on the worker calls it by its name
    network = f"{stack.name}-{USER}_net"
    assert network in networks_of(hub)
    assert "version" in hub_answers_from_notebook(swarm, service, stack.hub_name)

    # a new task of the launcher (an upgrade, a restart): a new hub container, which joins the overlay again
    done = docker_cli("service", "update", "--force", "--detach", stack.service)
    assert done.returncode == 0, done.stderr
    new_hub = stack.wait_until(
        lambda: (c := stack.hub_container(docker_client)) is not None and c.id != hub.id and c,
        120,
        "the hub's container was not replaced",
    )
    stack.wait_for_api()
    stack.wait_until(lambda: network in networks_of(new_hub), 120, f"the new hub did not join {network}")
    assert "version" in hub_answers_from_notebook(swarm, service, stack.hub_name)
    # the same login (the cookie secret is on the volume) reaches the same notebook, never restarted
    assert swarm.running_task(service) == task
    assert browser.open_notebook(USER)

    # the user stops their server: its service and network go
    stopped = browser.api("DELETE", f"/users/{USER}/server")
    assert stopped.status_code in (202, 204), (stopped.status_code, stopped.text)
    stack.wait_until(
        lambda: "" not in stack.admin("GET", f"/users/{USER}").json()["servers"], 120, f"{USER}'s server did not stop"
    )
    assert not docker_client.services.list(filters={"name": service})
    assert not docker_client.networks.list(names=[network])

    # docker stack rm: the launcher's service goes, and the hub's container with it; the hub's data stays on its
    # volume
    assert docker_cli("stack", "rm", stack.name).returncode == 0
    stack.wait_until(lambda: not stack_objects(docker_client, stack.name), 120, "docker stack rm left objects behind")
    (volume,) = docker_client.volumes.list(filters={"label": f"{STACK_LABEL}={stack.name}"})
    assert volume.name == f"{stack.name}_hub-data"
