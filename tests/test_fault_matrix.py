"""The fault matrix: a spawn interrupted in each of its steps, by a hub killed with SIGKILL or by the Docker engine
stopping, on the real stack.

For a killed hub, each case waits until the hub is *in* the step (Docker reports the step's object being made, or
the hub reports the step on its progress stream), kills it, starts it again on the same database, and checks what
a user and an admin would: the user can spawn, their files and rows are there, and once the server is stopped
``multiuser-spawner gc --yes`` leaves none of the hub's containers and networks behind.

The engine stopping mid-spawn is one test that holds two spawns in their steps and stops the engine once for both
(and for a running server): stopping the engine mid-spawn stops every container on the machine, and can leave Docker
20.10 unable to start again, so it runs only when asked (``MUS_STOP_DOCKER_ENGINE=1``). The outcomes are summed up
in docs/operations.md ("Faults during a spawn").
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from hubstack import (
    POSTGRES_IMAGE,
    SINGLEUSER_IMAGE,
    HubStack,
    begin_spawn,
    exec_in,
    next_docker_event,
    next_progress_event,
    notebook,
    spawn_outcome,
    start_dockerd,
    stop_dockerd,
)

pytestmark = pytest.mark.docker

CLI = str(Path(sys.executable).with_name("multiuser-spawner"))
CONFIG = f"""
c.Spawner.poll_interval = 2
c.MultiUserSpawner.services = {{"db": {{"preset": "postgres", "image": {POSTGRES_IMAGE!r}}}}}
"""
USER = "ana"
OTHER_USER = "bea"


@dataclass(frozen=True)
class Step:
    """A step of a spawn, and how to tell the hub is in it."""

    name: str
    #: whether the user has spawned (and written files) before: the home volume and the service's volume exist
    returning: bool
    #: blocks until the hub is in the step; called with the hub, the Docker client and the spawn's start time
    reached: Callable[[HubStack, docker.DockerClient, float], object]
    #: another new user spawns first, so this hub process has learned that the image's own home needs no
    #: ownership helper: the new home volume is then the step's only object, not followed by a helper at once
    after_another_new_user: bool = False


def _docker_event(kind: str, event: str, suffix: str) -> Callable[[HubStack, docker.DockerClient, float], object]:
    def reached(hub: HubStack, client: docker.DockerClient, since: float) -> object:
        return next_docker_event(client, since, {"type": kind, "event": event}, f"{hub.prefix}-{USER}{suffix}")

    return reached


def _progress(message: str) -> Callable[[HubStack, docker.DockerClient, float], object]:
    return lambda hub, client, since: next_progress_event(hub, USER, message)


STEPS = [
    # a new user: their home volume is being made
    Step(
        "home-volume", returning=False, reached=_docker_event("volume", "create", "_home"), after_another_new_user=True
    ),
    # a new user's first home on a fresh hub process: the ownership helper is being made
    Step("ownership-helper", returning=False, reached=_docker_event("container", "create", "_home-init")),
    Step("network", returning=True, reached=_docker_event("network", "create", "_net")),
    # a new user: Postgres is in its first initialisation, which takes seconds, while the hub waits for it
    Step("service", returning=False, reached=_docker_event("container", "start", "_db")),
    Step("notebook", returning=True, reached=_docker_event("container", "create", "")),
    # the hub waits for the notebook server to listen
    Step("readiness", returning=True, reached=_progress("Waiting for the server to listen")),
]


def run_gc(hub: HubStack) -> subprocess.CompletedProcess:
    """``multiuser-spawner gc --yes`` with the hub's own config file and API, as an admin runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    env.update(JUPYTERHUB_API_TOKEN=hub.token, JUPYTERHUB_URL=hub.url)
    argv = [CLI, "gc", "-f", str(hub.workdir / "jupyterhub_config.py"), "--yes"]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def hub_objects(client: docker.DockerClient, hub: HubStack) -> list[str]:
    """The hub's containers and networks: by its (random, unique) prefix, so an unlabelled leftover counts too."""
    start = f"{hub.prefix}-"
    containers = [f"container {c.name}" for c in client.containers.list(all=True) if c.name.startswith(start)]
    networks = [f"network {n.name}" for n in client.networks.list() if n.name.startswith(start)]
    return containers + networks


def write_before(hub: HubStack, client: docker.DockerClient) -> None:
    """A first spawn in which the user writes a file and a row; then the server is stopped."""
    hub.start_server(USER)
    nb = notebook(client, hub, USER)
    assert exec_in(nb, "echo 'chapter one' > $HOME/thesis.txt") == (0, "")
    code, out = exec_in(nb, "psql -v ON_ERROR_STOP=1 -c \"CREATE TABLE t (x text); INSERT INTO t VALUES ('row')\"")
    assert code == 0, out
    hub.stop_server(USER)


def assert_user_whole(hub: HubStack, client: docker.DockerClient, returning: bool) -> None:
    """The user's server runs, their earlier file and row are there, and their home and database take new ones."""
    nb = notebook(client, hub, USER)
    if returning:
        assert exec_in(nb, "cat $HOME/thesis.txt") == (0, "chapter one\n")
        assert exec_in(nb, "psql -tA -c 'SELECT x FROM t'") == (0, "row\n")
    assert exec_in(nb, "echo more > $HOME/after.txt && stat -c %U $HOME/after.txt") == (0, "jovyan\n")
    code, out = exec_in(
        nb, "psql -q -v ON_ERROR_STOP=1 -tA -c 'CREATE TABLE after (x int); SELECT count(*) FROM after'"
    )
    assert (code, out) == (0, "0\n"), out
    assert hub.server_api(USER, "api/status").status_code == 200


@pytest.mark.parametrize(
    "step",
    STEPS,
    ids=[step.name for step in STEPS],
)
def test_hub_killed_in_a_step_of_a_spawn(make_hub, docker_client, step):
    hub = make_hub({USER: [], OTHER_USER: []}, CONFIG)
    if step.returning:
        write_before(hub, docker_client)
        hub.restart()  # a fresh hub process, as for a new user: every step runs as it does after a hub start
    if step.after_another_new_user:
        hub.start_server(OTHER_USER)
        hub.stop_server(OTHER_USER)
    since = time.time()
    begin_spawn(hub, USER)
    step.reached(hub, docker_client, since)
    hub.kill()  # SIGKILL: no cleanup of any kind runs

    hub.start()  # the same database and config
    # The new hub checks the server it finds half-made and stops it (removing what the spawn made) before the user
    # may start again: at once, not after JupyterHub's 60 s wait for a server URL that was never set.
    wait_until(
        lambda: not hub.user(USER)["servers"],
        lambda: f"the restarted hub to settle the interrupted server {hub.user(USER)}:\n{hub.log_tail()}",
        40,
    )
    assert f"{USER} appears to have stopped while the Hub was down" in hub.log_path.read_text()
    hub.start_server(USER)
    assert_user_whole(hub, docker_client, step.returning)
    hub.stop_server(USER)
    gc = run_gc(hub)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert hub_objects(docker_client, hub) == [], gc.stdout


# -- the Docker engine stopping -------------------------------------------------------------------------------------

# Two users' spawns are held in a step until the test opens a gate (a file on one of their volumes): one waits for a
# service that listens only once its gate is open, the other for a notebook that starts only then. So the engine
# stops while each is surely in its step, with one engine stop for every case.
ENGINE_CONFIG = (
    CONFIG
    + f"""
c.MultiUserSpawner.group_overrides = {{
    "1-held-service": {{"groups": ["held-service"], "spawner_override": {{"services": {{"gate": {{
        "image": {SINGLEUSER_IMAGE!r}, "volume": "/data", "port": 8000, "ready_interval": 0.5,
        "command": ["sh", "-c", "while [ ! -e /data/open ]; do sleep 0.2; done; exec python3 -m http.server 8000"],
    }}}}}}}},
    "2-held-notebook": {{"groups": ["held-notebook"], "spawner_override": {{"cmd": [
        "sh", "-c", 'while [ ! -e "$HOME/open" ]; do sleep 0.2; done; exec jupyterhub-singleuser "$@"', "sh"]}}}},
}}
"""
)


def open_gate(client: docker.DockerClient, volume: str, path: str) -> None:
    """Put the gate file on ``volume`` with a one-shot container of the test's own."""
    client.containers.run(
        SINGLEUSER_IMAGE, ["touch", f"{path}/open"], user="root", volumes={volume: {"bind": path}}, remove=True
    )


# Opt-in: stopping the engine while a spawn removes its network can leave dockerd 20.10 unable to start again
# (a panic in libnetwork's reservePools on the half-removed network, see docs/operations.md): it happened in one of
# eight runs here, and a machine whose engine does not start fails every test after it.
ENGINE_STOPS_ALLOWED = pytest.mark.skipif(
    os.environ.get("MUS_STOP_DOCKER_ENGINE") != "1",
    reason="stops the machine's Docker engine mid-spawn: run with MUS_STOP_DOCKER_ENGINE=1 on a machine of its own",
)


@ENGINE_STOPS_ALLOWED
def test_docker_engine_stopping_mid_spawn_and_under_a_running_server(make_hub, docker_client):
    hub = make_hub(
        {"running": [], "waits-service": ["held-service"], "waits-notebook": ["held-notebook"]}, ENGINE_CONFIG
    )
    hub.start_server("running")
    nb = notebook(docker_client, hub, "running")
    assert exec_in(nb, "echo survives > $HOME/before.txt") == (0, "")
    assert exec_in(nb, "psql -v ON_ERROR_STOP=1 -c \"CREATE TABLE d (x text); INSERT INTO d VALUES ('kept')\"")[0] == 0
    for user in ("waits-service", "waits-notebook"):
        begin_spawn(hub, user)
    # the notebook is up and the spawn waits for the service, which waits for its gate
    next_progress_event(hub, "waits-service", f"Started container {hub.prefix}-waits-service")
    next_progress_event(hub, "waits-notebook", "Waiting for the server to listen")

    engine = stop_dockerd()
    try:
        outcomes = {user: spawn_outcome(hub, user) for user in ("waits-service", "waits-notebook")}
    finally:
        start_dockerd(engine)
    for user, event in outcomes.items():
        assert event.get("failed"), (user, event)
        assert "Docker" in event["message"], (user, event["message"])

    # the engine stopped the running server too: the hub notices, and the user starts again with their files
    wait_until(lambda: hub.user("running")["servers"] == {}, "the hub to see the stopped server")
    hub.start_server("running")
    nb = notebook(docker_client, hub, "running")
    assert exec_in(nb, "cat $HOME/before.txt") == (0, "survives\n")
    assert exec_in(nb, "psql -tA -c 'SELECT x FROM d'") == (0, "kept\n")
    # the interrupted spawns work once their gates are open
    open_gate(docker_client, f"{hub.prefix}-waits-service_gate", "/data")
    open_gate(docker_client, f"{hub.prefix}-waits-notebook_home", "/home/jovyan")
    for user in ("waits-service", "waits-notebook"):
        hub.start_server(user)
        assert hub.server_api(user, "api/status").status_code == 200
    for user in ("running", "waits-service", "waits-notebook"):
        hub.stop_server(user)
    gc = run_gc(hub)
    assert gc.returncode == 0, gc.stdout + gc.stderr
    assert hub_objects(docker_client, hub) == [], gc.stdout


def wait_until(condition: Callable[[], bool], what: str | Callable[[], str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")
        time.sleep(0.25)
