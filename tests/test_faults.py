"""Faults survived, each on the real stack: broken servers and names, out-of-memory, a killed database, start/stop
races, user deletion, and a restart of the Docker engine itself."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from hubstack import (
    POSTGRES_IMAGE,
    begin_spawn,
    exec_in,
    next_docker_event,
    next_progress_event,
    notebook,
    spawn_failure_message,
    start_dockerd,
    stop_dockerd,
    wait_until,
)

pytestmark = pytest.mark.docker

CONFIG = """
c.Spawner.poll_interval = 2
c.MultiUserSpawner.group_overrides = {
    "1-db": {"groups": ["db"], "spawner_override": {"database_enabled": True}},
    "2-crash": {"groups": ["crash"], "spawner_override": {
        "cmd": ["sh", "-c", "echo 'fatal: cannot read course config' >&2; exit 3"]}},
    "3-small": {"groups": ["small"], "spawner_override": {"mem_limit": "200M"}},
    "4-nonet": {"groups": ["nonet"], "spawner_override": {
        "network_name": "no-such-network", "private_network": False}},
    "5-stuck": {"groups": ["stuck"], "spawner_override": {"services": {"svc": {
        "image": "multiuser-spawner/singleuser:latest", "command": ["sleep", "600"], "port": 8000,
        "ready_interval": 0.5}}}},
    "6-late": {"groups": ["late"], "spawner_override": {"services": {"db": {
        "preset": "postgres", "image": "multiuser-spawner/postgres:late-image-test"}}}},
}
"""
USERS = {
    "ada": ["db"],
    "crash": ["crash"],
    "tiny": ["small"],
    "nonet": ["nonet"],
    "squat": [],
    "racer": ["db"],
    "stuck": ["stuck"],
    "late": ["late"],
}


@pytest.fixture(scope="module")
def hub(make_hub, docker_client):
    return make_hub(USERS, CONFIG)


def leftovers(docker_client, hub, user):
    prefix = f"{hub.prefix}-{user}"
    containers = [c.name for c in docker_client.containers.list(all=True) if c.name.startswith(prefix)]
    networks = [n.name for n in docker_client.networks.list() if n.name.startswith(prefix)]
    return containers + networks


def test_server_that_dies_while_starting_shows_its_last_words(hub, docker_client):
    message = spawn_failure_message(hub, "crash")
    assert f"the server in container {hub.prefix}-crash stopped while starting (exit code 3)" in message
    assert "fatal: cannot read course config" in message
    assert leftovers(docker_client, hub, "crash") == []


def test_name_taken_by_a_foreign_container(hub, docker_client):
    squatter = docker_client.containers.run(
        "multiuser-spawner/singleuser:latest", ["sleep", "300"], name=f"{hub.prefix}-squat", detach=True
    )
    try:
        message = spawn_failure_message(hub, "squat")
        assert (
            f"the container name {hub.prefix}-squat is taken by a container multiuser-spawner did not create" in message
        )
        squatter.reload()
        assert squatter.status == "running"  # left alone
    finally:
        squatter.remove(force=True)


def test_database_name_taken_by_a_foreign_container(hub, docker_client):
    squatter = docker_client.containers.run(
        "multiuser-spawner/singleuser:latest", ["sleep", "300"], name=f"{hub.prefix}-ada_db", detach=True
    )
    try:
        message = spawn_failure_message(hub, "ada")
        assert f"the container name {hub.prefix}-ada_db is taken" in message
        squatter.reload()
        assert squatter.status == "running"  # neither reused nor removed by the undo
        assert [c.name for c in docker_client.containers.list(all=True) if c.name.startswith(f"{hub.prefix}-ada")] == [
            f"{hub.prefix}-ada_db"
        ]
    finally:
        squatter.remove(force=True)


def test_missing_network_names_it(hub, docker_client):
    message = spawn_failure_message(hub, "nonet")
    assert "no-such-network" in message
    assert leftovers(docker_client, hub, "nonet") == []


def test_out_of_memory_server_is_reported_stopped(hub, docker_client):
    hub.start_server("tiny")
    container = notebook(docker_client, hub, "tiny")
    # make the server itself the OOM killer's first choice (raising one's own score needs no privilege; the
    # pattern does not match this shell's own command line, whose children would inherit the score), then
    # push the container past its 200M limit
    code, out = exec_in(
        container,
        'for p in /proc/[0-9]*; do grep -q "jupyterhub-single[u]ser" $p/cmdline 2>/dev/null'
        " && echo 1000 > $p/oom_score_adj; done; python3 -c 'x = bytearray(150 * 2**20); y = bytearray(150 * 2**20)'",
    )
    wait_until(lambda: hub.user("tiny")["servers"] == {}, what="the hub to see the server stop")
    log = hub.log_path.read_text()
    assert f"Container {hub.prefix}-tiny was killed by its memory limit" in log
    # the hub's own word for this user's server, not another user's exit code elsewhere in the log
    assert re.search(r"User tiny server stopped,? with exit code: 137$", log, re.MULTILINE), hub.log_tail()
    # and the user can simply start again
    hub.start_server("tiny")
    assert hub.server_api("tiny", "api/status").status_code == 200
    hub.stop_server("tiny")


def test_database_killed_from_inside_comes_back_with_its_rows(hub, docker_client):
    hub.start_server("ada")
    nb = notebook(docker_client, hub, "ada")
    code, out = exec_in(
        nb, "psql -v ON_ERROR_STOP=1 -c \"CREATE TABLE IF NOT EXISTS t (x text); INSERT INTO t VALUES ('row')\""
    )
    assert code == 0, out
    db = docker_client.containers.get(f"{hub.prefix}-ada_db")
    postmaster = next(p for p in db.top(ps_args="-eo pid,comm")["Processes"] if p[1] == "postgres")
    os.kill(int(postmaster[0]), signal.SIGKILL)

    def answers():
        return exec_in(nb, "PGCONNECT_TIMEOUT=2 psql -tA -c 'SELECT x FROM t'") == (0, "row\n")

    wait_until(answers, what="the database to come back")
    db.reload()
    assert db.attrs["RestartCount"] >= 1
    assert hub.server_api("ada", "api/status").status_code == 200  # the notebook never noticed


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param("service-created", id="while-docker-creates-its-service"),
        pytest.param("notebook-started", id="while-it-waits-for-its-service"),
    ],
)
def test_stop_while_starting_cancels_the_spawn_and_leaves_nothing(hub, docker_client, moment):
    # The service never gets ready (nothing listens on its port), so the spawn cannot end by itself before the
    # service's 120 s wait: only the cancel can end it this early.
    since = time.time()
    begin_spawn(hub, "stuck")
    if moment == "service-created":
        next_docker_event(docker_client, since, {"type": "container", "event": "create"}, f"{hub.prefix}-stuck_svc")
    else:
        next_progress_event(hub, "stuck", f"Started container {hub.prefix}-stuck")
    stopping = hub.request("DELETE", "/users/stuck/server")
    assert stopping.status_code in (202, 204), stopping.text
    wait_until(lambda: hub.user("stuck")["servers"] == {}, timeout=60, what="the cancelled spawn to be undone")
    assert leftovers(docker_client, hub, "stuck") == []
    # what the spawn had made was made, then removed: the cancel path ran, not a spawn that never began
    destroyed = next_docker_event(
        docker_client, since, {"type": "container", "event": "destroy"}, f"{hub.prefix}-stuck_svc", timeout=5
    )
    assert destroyed["Action"] == "destroy"


def test_a_server_starts_normally_after_cancelled_spawns(hub, docker_client):
    hub.start_server("racer")
    assert exec_in(notebook(docker_client, hub, "racer"), "psql -tA -c 'SELECT 1'") == (0, "1\n")
    hub.stop_server("racer")
    assert leftovers(docker_client, hub, "racer") == []


def test_a_cancel_lets_a_database_finish_its_first_start_even_on_an_older_volume(hub, docker_client):
    """A first attempt that failed before its database ever ran leaves the database's volume, empty. The next
    attempt runs the database's first initialisation on it; cancelled then, it must let it finish, or the database
    is broken for good."""
    late_image = "multiuser-spawner/postgres:late-image-test"
    message = spawn_failure_message(hub, "late")
    assert f"image {late_image} of service 'db' is not on this Docker host" in message
    assert docker_client.volumes.get(f"{hub.prefix}-late_db")  # made before the image was found missing
    docker_client.images.get(POSTGRES_IMAGE).tag(late_image)
    try:
        since = time.time()
        begin_spawn(hub, "late")
        next_docker_event(docker_client, since, {"type": "container", "event": "start"}, f"{hub.prefix}-late_db")
        stopping = hub.request("DELETE", "/users/late/server")
        assert stopping.status_code in (202, 204), stopping.text
        wait_until(lambda: hub.user("late")["servers"] == {}, timeout=120, what="the cancelled spawn to be undone")
        hub.start_server("late")
        nb = notebook(docker_client, hub, "late")
        assert exec_in(nb, "PGCONNECT_TIMEOUT=5 psql -tA -c 'SELECT 1'") == (0, "1\n")
        hub.stop_server("late")
    finally:
        docker_client.images.remove(late_image)  # only the tag: the image keeps its own name


def test_deleting_a_user_keeps_their_volumes(hub, docker_client):
    hub.start_server("racer")
    hub.stop_server("racer")
    r = hub.request("DELETE", "/users/racer")
    assert r.status_code == 204, r.text
    assert leftovers(docker_client, hub, "racer") == []
    volumes = sorted(v.name for v in docker_client.volumes.list() if v.name.startswith(f"{hub.prefix}-racer"))
    assert volumes == [f"{hub.prefix}-racer_db", f"{hub.prefix}-racer_home"]


def test_deleting_a_user_removes_volumes_when_configured(make_hub, docker_client):
    hub = make_hub({"gone": []}, "c.MultiUserSpawner.remove_volumes_on_delete = True\n")
    hub.start_server("gone")
    r = hub.request("DELETE", "/users/gone")  # a running user: the hub stops the server first
    assert r.status_code == 204, r.text
    assert not [v.name for v in docker_client.volumes.list() if v.name.startswith(hub.prefix)]
    assert leftovers(docker_client, hub, "gone") == []


def test_dockerd_restart_then_respawn_finds_files_and_rows(hub, docker_client):
    hub.start_server("ada")
    nb = notebook(docker_client, hub, "ada")
    assert exec_in(nb, "echo survives > $HOME/before-restart.txt")[0] == 0
    assert exec_in(nb, "psql -v ON_ERROR_STOP=1 -c \"CREATE TABLE d (x text); INSERT INTO d VALUES ('kept')\"")[0] == 0
    start_dockerd(stop_dockerd())
    # the engine stopped every container; the hub's poll notices and marks the server stopped
    wait_until(lambda: hub.user("ada")["servers"] == {}, timeout=60, what="the hub to see the server stop")
    hub.start_server("ada")
    nb = notebook(docker_client, hub, "ada")
    assert exec_in(nb, "cat $HOME/before-restart.txt") == (0, "survives\n")
    assert exec_in(nb, "psql -tA -c 'SELECT x FROM d'") == (0, "kept\n")
