"""Profiles on the real stack: the REST API's choice, refusals, and the limits each profile sets."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from hubstack import spawn_failure_message

pytestmark = pytest.mark.docker

CONFIG = """
c.MultiUserSpawner.profiles = [
    {"slug": "student-small", "display_name": "Student (0.5 CPU, 512M)", "groups": ["students"], "default": True,
     "spawner_override": {"cpu_limit": 0.5, "mem_limit": "512M"}},
    {"slug": "student-db", "display_name": "Student with a database <Postgres>", "groups": ["students"],
     "description": "0.5 CPU, 512M & a private Postgres",
     "spawner_override": {"cpu_limit": 0.5, "mem_limit": "512M", "database_enabled": True}},
    {"slug": "staff", "display_name": "Staff (1 CPU, 1G)", "groups": ["staff"],
     "spawner_override": {"cpu_limit": 1.0, "mem_limit": "1G", "environment": {"TIER": "staff"}}},
]
c.MultiUserSpawner.group_overrides = {
    "students": {"groups": ["students"], "spawner_override": {"cpu_limit": 0.25, "mem_limit": "256M",
                 "environment": {"TIER": "student"}}},
}
"""
USERS = {"stud": ["students"], "prof": ["staff"], "nobody": []}


@pytest.fixture(scope="module")
def hub(make_hub, docker_client):
    return make_hub(USERS, CONFIG)


def limits(docker_client, hub, user):
    host_config = docker_client.containers.get(f"{hub.prefix}-{user}").attrs["HostConfig"]
    return host_config["CpuQuota"] / host_config["CpuPeriod"], host_config["Memory"]


def test_default_profile_wins_over_group_overrides(hub, docker_client):
    hub.start_server("stud")
    assert limits(docker_client, hub, "stud") == (0.5, 512 * 2**20)
    hub.stop_server("stud")


def test_chosen_profile_through_the_rest_api(hub, docker_client):
    hub.start_server("stud", {"profile": "student-db"})
    assert limits(docker_client, hub, "stud") == (0.5, 512 * 2**20)
    assert docker_client.containers.get(f"{hub.prefix}-stud_db").status == "running"
    hub.stop_server("stud")
    hub.start_server("prof", {"profile": "staff"})
    assert limits(docker_client, hub, "prof") == (1.0, 2**30)
    env = docker_client.containers.get(f"{hub.prefix}-prof").attrs["Config"]["Env"]
    assert "TIER=staff" in env
    hub.stop_server("prof")


@pytest.mark.parametrize(
    ("user", "options", "message"),
    [
        ("stud", {"profile": "staff"}, "profile 'staff' is not available to you"),
        ("stud", {"profile": "gpu"}, "there is no profile 'gpu'"),
        ("stud", {"profile": "student-small", "mem_limit": "64G"}, "unknown option(s): mem_limit"),
        ("nobody", {}, "no profile is available to you"),
    ],
)
def test_refused_choices_get_400_and_create_nothing(hub, docker_client, user, options, message):
    r = hub.request("POST", f"/users/{user}/server", json=options)
    assert r.status_code == 400, r.text
    assert message in r.json()["message"]
    assert not [c for c in docker_client.containers.list(all=True) if c.name.startswith(f"{hub.prefix}-{user}")]
    assert hub.user(user)["servers"] == {}


def test_progress_reports_the_real_stages(hub):
    # the spawn page's view: the event stream, opened while the spawn is under way
    starting = threading.Thread(
        target=hub.request, args=("POST", "/users/stud/server"), kwargs={"json": {"profile": "student-db"}}
    )
    starting.start()
    deadline = time.monotonic() + 30
    while hub.user("stud")["servers"].get("", {}).get("pending") != "spawn":
        assert time.monotonic() < deadline, "spawn never became pending"
        time.sleep(0.05)
    events = []
    url = f"{hub.api}/users/stud/server/progress"
    with requests.get(url, headers={"Authorization": f"token {hub.token}"}, stream=True, timeout=120) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1].get("ready") or events[-1].get("failed"):
                    break
    starting.join()
    messages = [e["message"] for e in events]
    percents = [e["progress"] for e in events if "progress" in e]
    assert events[-1].get("ready"), messages
    assert percents == sorted(percents)
    for expected in (
        "Image",
        "home volume",
        "Private network",
        "Service db started",
        "Started container",
        "db is ready",
    ):
        assert any(expected in m for m in messages), (expected, messages)
    hub.stop_server("stud")


def test_missing_image_fails_with_what_to_do(make_hub, docker_client):
    hub = make_hub(
        {"x": []}, 'c.MultiUserSpawner.image = "multiuser-spawner/absent:1"\nc.MultiUserSpawner.pull_policy = "never"\n'
    )
    message = spawn_failure_message(hub, "x")
    assert "image multiuser-spawner/absent:1 is not on this Docker host" in message
    assert "an admin must build or pull it" in message
    assert not [c for c in docker_client.containers.list(all=True) if c.name.startswith(hub.prefix)]
