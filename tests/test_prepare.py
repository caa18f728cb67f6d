"""``multiuser-spawner prepare`` against a real hub and Docker engine: a class's volumes are made before its first
spawn, with each user's settings resolved as the hub resolves them, and nothing is left running."""

from __future__ import annotations

import json

import pytest
import requests
from test_cli import run_cli

from hubstack import POSTGRES_IMAGE, REDIS_IMAGE, exec_in, notebook

pytestmark = pytest.mark.docker

CLASS_CONFIG = f"""
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}  # the spawn's progress is followed from its start
c.MultiUserSpawner.profiles = [
    {{"slug": "course", "display_name": "Course", "default": True,
     "spawner_override": {{"services": {{"cache": {{"preset": "redis", "image": {REDIS_IMAGE!r}}}}}}}}},
]
c.MultiUserSpawner.group_overrides = {{
    "staff": {{"groups": ["staff"], "spawner_override": {{
        "services": {{"db": {{"preset": "postgres", "image": {POSTGRES_IMAGE!r}}}}}}}}},
}}
"""


@pytest.fixture(scope="module")
def hub(make_hub):
    return make_hub({"sam": ["students"], "sue": ["students"], "tom": ["staff"]}, CLASS_CONFIG)


def volumes_of(docker_client, hub, user: str) -> set[str]:
    return {v.name for v in docker_client.volumes.list(filters={"name": f"{hub.prefix}-{user}"})}


def containers_of(docker_client, hub, user: str) -> list:
    return docker_client.containers.list(all=True, filters={"name": f"{hub.prefix}-{user}"})


def spawn_messages(hub, name: str) -> list[str]:
    """Start ``name``'s server and return the progress messages the spawn page shows, once it is ready."""
    r = hub.request("POST", f"/users/{name}/server", json={})
    assert r.status_code in (201, 202), (r.status_code, r.text)
    url = f"{hub.api}/users/{name}/server/progress"
    messages = []
    with requests.get(url, headers={"Authorization": f"token {hub.token}"}, stream=True, timeout=180) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                event = json.loads(line[5:])
                assert not event.get("failed"), event
                messages.append(event.get("message", ""))
                if event.get("ready"):
                    return messages
    raise AssertionError(f"progress stream ended before {name}'s server was ready: {messages}")


def test_prepare_makes_each_users_volumes_as_their_spawn_would_and_leaves_nothing_running(hub, docker_client):
    hub.start_server("sue")  # running: prepare must leave her server alone
    sue_containers = {c.name: c.id for c in containers_of(docker_client, hub, "sue")}
    assert len(sue_containers) == 2  # notebook and cache

    result = run_cli(hub, "prepare", "--group", "students", "--users", "tom", "--parallel", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "3/3" in out
    assert "3 user(s): 2 prepared, 1 skipped, 0 failed" in out
    # the default profile gave everyone the cache; the staff tier added the database
    assert volumes_of(docker_client, hub, "sam") == {f"{hub.prefix}-sam_home", f"{hub.prefix}-sam_cache"}
    assert volumes_of(docker_client, hub, "tom") == {
        f"{hub.prefix}-tom_home",
        f"{hub.prefix}-tom_cache",
        f"{hub.prefix}-tom_db",
    }
    assert "initialised cache, db" in out
    # nothing of the preparation keeps running; the running server is untouched
    assert containers_of(docker_client, hub, "sam") == []
    assert containers_of(docker_client, hub, "tom") == []
    assert not docker_client.networks.list(names=[f"{hub.prefix}-sam", f"{hub.prefix}-tom"])
    after = {c.name: (c.id, c.status) for c in containers_of(docker_client, hub, "sue")}
    assert after == {name: (cid, "running") for name, cid in sue_containers.items()}

    # The first spawn finds everything made: the home is writable by the user, the database was initialised.
    messages = spawn_messages(hub, "tom")
    assert f"Found home volume {hub.prefix}-tom_home" in messages, messages
    code, output = exec_in(notebook(docker_client, hub, "tom"), "echo hi > ~/first.txt && cat ~/first.txt")
    assert (code, output.strip()) == (0, "hi")
    code, output = exec_in(docker_client.containers.get(f"{hub.prefix}-tom_db"), "ls $PGDATA/PG_VERSION")
    assert code == 0, output

    # Again: everything exists, so nothing more is made.
    hub.stop_server("sue")
    again = run_cli(hub, "prepare", "--group", "students")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "home found; no service to initialise" in again.stdout
    assert "2 user(s): 2 prepared, 0 skipped, 0 failed" in again.stdout


def test_prepare_refuses_an_unknown_group_and_makes_nothing(hub, docker_client):
    result = run_cli(hub, "prepare", "--group", "no-such-group")
    assert result.returncode == 2
    assert "the hub has no group 'no-such-group'; nothing was prepared" in result.stderr
    assert run_cli(hub, "prepare").returncode == 2
