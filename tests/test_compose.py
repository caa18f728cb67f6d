"""The hub in a container, as deploy/compose.yaml runs it: brought up with Docker Compose from the hub image that
images/build.sh makes, it spawns a user's server with a private Postgres beside it on this Docker engine, and keeps
that server running and reachable through its proxy when its own container is restarted, and when it is replaced
by a new one (an upgrade)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
import requests
from conftest import new_prefix

from hubstack import POSTGRES_IMAGE, SINGLEUSER_IMAGE, HubStack, cleanup_prefix, exec_in

pytestmark = pytest.mark.docker

DEPLOY = Path(__file__).parent.parent / "deploy"
HUB_IMAGE = os.environ.get("MUS_HUB_IMAGE", "multiuser-spawner/hub:latest")


def unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: Docker-backed tests must run)", pytrace=False)
    pytest.skip(reason)


def compose_command() -> list[str]:
    """Docker's compose plugin when it has one, else the standalone ``docker-compose`` (Debian 12's package)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    unavailable("neither `docker compose` nor `docker-compose` is installed (apt-get install docker-compose)")


@dataclass
class ComposeHub(HubStack):
    """The deployment of deploy/compose.yaml under a project name of its own, its port on 127.0.0.1 only; driven
    through the REST API with the token the deploy config gives its ``admin-api`` service."""

    compose: list[str] = field(default_factory=list)

    @property
    def hub_container(self) -> str:
        return f"{self.prefix}-hub"

    def run(self, *args: str) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": self.prefix,
            "HUB_IMAGE": HUB_IMAGE,
            "HUB_CONTAINER_NAME": self.hub_container,
            # a network of its own per test, sorting before the users' networks as the default name does
            "HUB_NETWORK_NAME": f"0-{self.prefix}",
            "HUB_PORT": str(self.port),
            "HUB_ADMIN_API_TOKEN": self.token,
            # an OAuth app that exists nowhere: nobody logs in here, the test drives the hub through its REST API
            "GITHUB_CLIENT_ID": "compose-test",
            "GITHUB_CLIENT_SECRET": self.token,
            "OAUTH_CALLBACK_URL": f"{self.url}/hub/oauth_callback",
            "MUS_PREFIX": self.prefix,
            "MUS_SINGLEUSER_IMAGE": SINGLEUSER_IMAGE,
            "MUS_POSTGRES_IMAGE": POSTGRES_IMAGE,
        }
        command = [*self.compose, "-f", str(DEPLOY / "compose.yaml"), *args]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}\n{self.log_tail()}"
        return done

    def start(self, timeout: float = 90) -> None:
        self.run("up", "-d")
        self.wait_for_api(timeout)

    def wait_for_api(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.api}/", timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"the hub in its container did not answer in {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        self.run("down", "--volumes")

    def log_tail(self, lines: int = 60) -> str:
        done = subprocess.run(["docker", "logs", "--tail", str(lines), self.hub_container], capture_output=True)
        return (done.stdout + done.stderr).decode("utf-8", "replace")

    def read_in_hub(self, path: str) -> str:
        done = subprocess.run(["docker", "exec", self.hub_container, "cat", path], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def compose_hub(docker_client, tmp_path_factory):
    command = compose_command()
    try:
        docker_client.images.get(HUB_IMAGE)
    except docker.errors.ImageNotFound:
        unavailable(f"the hub image {HUB_IMAGE} is missing: run images/build.sh hub")
    hub = ComposeHub(workdir=tmp_path_factory.mktemp("compose"), prefix=new_prefix(), compose=command)
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()
        cleanup_prefix(docker_client, hub.prefix)  # the users' objects, which the hub made outside the project


def wait_until_reachable(hub: ComposeHub, user: str, timeout: float = 150) -> dict:
    """Wait until the hub lists the user's server as ready and its proxy passes a request on to it."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            model = hub.user(user)["servers"].get("")
            if model is None:
                raise AssertionError(f"the hub no longer lists {user}'s server:\n{hub.log_tail(80)}")
            reply = hub.server_api(user, "api/status")
            if model.get("ready") and reply.status_code == 200:
                return model
            last = f"ready={model.get('ready')}, proxy answered {reply.status_code}"
        except requests.RequestException as e:
            last = str(e)
        time.sleep(0.5)
    raise AssertionError(f"{user}'s server not reachable through the proxy in {timeout} s ({last}):\n{hub.log_tail()}")


def read_notes(container) -> str:
    # psql finds the database's host, user, password and name in the notebook's PG* variables
    code, out = exec_in(container, "psql -tA -c 'SELECT note FROM notes'")
    assert code == 0, out
    return out.strip()


def hub_networks(docker_client, hub: ComposeHub) -> set[str]:
    return set(docker_client.containers.get(hub.hub_container).attrs["NetworkSettings"]["Networks"])


def test_users_log_in_through_the_configured_oauth_provider(compose_hub):
    # the deploy config's authenticator is GitHub's: the hub's login sends the browser there, with its own app id
    reply = requests.get(f"{compose_hub.url}/hub/oauth_login", allow_redirects=False, timeout=30)
    assert reply.status_code == 302
    assert reply.headers["Location"].startswith("https://github.com/login/oauth/authorize?")
    assert "client_id=compose-test" in reply.headers["Location"]


def test_servers_outlive_a_restart_and_a_replacement_of_the_hubs_container(compose_hub, docker_client):
    hub = compose_hub
    user, network = "ada", f"{hub.prefix}-ada_net"
    assert hub.request("POST", f"/users/{user}").status_code == 201
    assert hub.request("POST", "/groups/databases", json={"users": [user]}).status_code == 201
    # the start request is under way while the spawner joins the hub to the new network: it must not be cut off
    hub.start_server(user, timeout=180)
    wait_until_reachable(hub, user)
    notebook = docker_client.containers.get(f"{hub.prefix}-{user}")
    database = docker_client.containers.get(f"{hub.prefix}-{user}_db")
    code, out = exec_in(notebook, "psql -c \"CREATE TABLE notes (note text); INSERT INTO notes VALUES ('kept')\"")
    assert code == 0, out
    # the hub joined the server's private network, where the notebook reaches it by its container name
    assert network in hub_networks(docker_client, hub)
    assert exec_in(notebook, f"getent hosts {hub.hub_container}")[0] == 0
    started = notebook.attrs["State"]["StartedAt"]
    cookie_secret = hub.read_in_hub("/srv/jupyterhub/data/jupyterhub_cookie_secret")

    # a restart of the hub's container: the same container, still on the private network
    hub_id = docker_client.containers.get(hub.hub_container).id
    hub.run("restart", "hub")
    hub.wait_for_api()
    wait_until_reachable(hub, user)
    assert docker_client.containers.get(hub.hub_container).id == hub_id

    # a new container for the hub (what `docker compose up` does after an upgrade): it must join the network anew
    hub.run("up", "-d", "--force-recreate", "hub")
    assert docker_client.containers.get(hub.hub_container).id != hub_id
    hub.wait_for_api()
    wait_until_reachable(hub, user)
    assert network in hub_networks(docker_client, hub)
    # the state on the volume survived: the same cookie secret (users stay logged in), the same database (the user
    # and their server are known), and the user's containers are the ones started before, never restarted
    assert hub.read_in_hub("/srv/jupyterhub/data/jupyterhub_cookie_secret") == cookie_secret
    notebook.reload()
    database.reload()
    assert notebook.status == "running" and database.status == "running"
    assert notebook.attrs["State"]["StartedAt"] == started
    assert read_notes(notebook) == "kept"

    # stopped through the new hub: the server's containers and network go, the hub leaves the network first
    hub.stop_server(user, timeout=90)
    assert not docker_client.containers.list(all=True, filters={"name": f"{hub.prefix}-{user}"})
    assert not docker_client.networks.list(names=[network])
    assert network not in hub_networks(docker_client, hub)
    assert docker_client.volumes.get(f"{hub.prefix}-{user}_db")  # the data stays
