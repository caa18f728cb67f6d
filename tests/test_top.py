"""``multiuser-spawner top``: usage from Docker's numbers, sorted and formatted (on literal data), and live on a
real hub (the server, its limits, its service and volumes, the busiest first)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubstack import POSTGRES_IMAGE, notebook
from multiuser_spawner import inventory, names, top

MIB = 2**20

# -- Docker's numbers to usage -------------------------------------------------------------------------------------


def stats(total: int, total_before: int, system: int, system_before: int, usage: int, inactive: int) -> dict:
    return {
        "cpu_stats": {"cpu_usage": {"total_usage": total}, "system_cpu_usage": system, "online_cpus": 4},
        "precpu_stats": {"cpu_usage": {"total_usage": total_before}, "system_cpu_usage": system_before},
        "memory_stats": {"usage": usage, "stats": {"total_inactive_file": inactive}, "limit": 512 * MIB},
    }


def test_cpu_is_counted_in_cores_and_memory_without_the_page_cache():
    # a quarter of the host's time on a 4-CPU host: one core busy
    sample = stats(total=2_500, total_before=0, system=10_000, system_before=0, usage=300 * MIB, inactive=100 * MIB)
    assert top.cpu_in_use(sample) == 1.0
    assert top.memory_in_use(sample) == 200 * MIB


def test_a_first_sample_has_no_cpu_rate():
    sample = stats(total=5, total_before=5, system=10, system_before=10, usage=1, inactive=0)
    assert top.cpu_in_use(sample) is None
    assert top.cpu_in_use({"memory_stats": {}}) is None
    assert top.memory_in_use({"memory_stats": {}}) is None


def test_cgroup_v2_page_cache_is_left_out_too():
    sample = {"memory_stats": {"usage": 50 * MIB, "stats": {"inactive_file": 10 * MIB}}}
    assert top.memory_in_use(sample) == 40 * MIB


@pytest.mark.parametrize(
    ("host_config", "limits"),
    [
        ({"NanoCpus": 500_000_000, "Memory": 512 * MIB}, (0.5, 512 * MIB)),
        ({"CpuQuota": 150_000, "CpuPeriod": 100_000, "Memory": 0}, (1.5, None)),
        ({}, (None, None)),
    ],
)
def test_limits_from_docker_inspect(host_config, limits):
    assert top.limits_of({"HostConfig": host_config}) == limits


def resource(kind, name, user, role, server="", service="", state="running", size=None):
    return inventory.Resource(kind, name, name, user, server, role, service=service, state=state, size=size)


def test_a_notebook_keeps_the_home_and_a_service_its_own_volume():
    listed = [
        nb := resource("container", "j-ann", "ann", names.ROLE_NOTEBOOK),
        db := resource("container", "j-ann_db", "ann", names.ROLE_SERVICE, service="db"),
        resource("volume", "j-ann_home", "ann", names.ROLE_HOME, size=5_000),
        resource("volume", "j-ann_db", "ann", names.ROLE_SERVICE_DATA, service="db", size=47_000_000),
        resource("volume", "j-ann.lab_db", "ann", names.ROLE_SERVICE_DATA, server="lab", service="db", size=1),
        resource("volume", "j-bob_home", "bob", names.ROLE_HOME, size=9),
    ]
    assert top.volumes_of(nb, listed) == {"j-ann_home": 5_000}
    assert top.volumes_of(db, listed) == {"j-ann_db": 47_000_000}


# -- sorting and formatting ------------------------------------------------------------------------------------


def server(user: str, memory: int, cpu: float, disk: int, server_name: str = "") -> top.ServerUsage:
    notebook_usage = top.ContainerUsage(
        f"j-{user}", names.ROLE_NOTEBOOK, cpu=cpu, cpu_limit=1.0, memory=memory, memory_limit=512 * MIB
    )
    service_usage = top.ContainerUsage(
        f"j-{user}_db", names.ROLE_SERVICE, "db", cpu=0.01, memory=20 * MIB, volumes={f"j-{user}_db": disk}
    )
    return top.ServerUsage(user, server_name, (notebook_usage, service_usage))


def test_the_servers_that_use_most_come_first():
    servers = [server("ann", 100 * MIB, 0.9, 10), server("bob", 400 * MIB, 0.1, 5), server("cat", 100 * MIB, 0.9, 99)]
    assert [s.user for s in top.sort_servers(servers)] == ["bob", "cat", "ann"]  # memory, then CPU, then disk
    assert [s.user for s in top.sort_servers(servers, "cpu")] == ["cat", "ann", "bob"]
    assert [s.user for s in top.sort_servers(servers, "disk")] == ["cat", "ann", "bob"]
    with pytest.raises(ValueError, match="cannot sort by 'age'"):
        top.sort_servers(servers, "age")


def test_rows_show_use_against_limits():
    assert top.rows([server("ann", 256 * MIB, 0.25, 47_000_000, "lab")]) == [
        ["ann", "lab", "notebook", "j-ann", "0.25/1", "256 MiB/512 MiB 50%", ""],
        ["ann", "lab", "service db", "j-ann_db", "0.01", "20 MiB", "47.0 MB"],
    ]
    unknown = top.ServerUsage("bob", "", (top.ContainerUsage("j-bob", names.ROLE_NOTEBOOK, memory_limit=MIB),))
    assert top.rows([unknown]) == [["bob", "-", "notebook", "j-bob", "?", "?/1 MiB", ""]]
    assert [top.binary_size(n) for n in (2**30, 3 * 2**29, 100)] == ["1 GiB", "1.50 GiB", "0 MiB"]


def test_json_has_totals_per_server_and_every_container():
    document = top.as_json([server("ann", 100 * MIB, 0.5, 7)], host_cpus=2, host_memory=4 * 2**30)
    assert document["host"] == {"cpus": 2, "memory": 4 * 2**30}
    (entry,) = document["servers"]
    assert (entry["user"], entry["cpu"], entry["memory"], entry["disk"]) == ("ann", 0.51, 120 * MIB, 7)
    assert entry["containers"][0]["memory_limit"] == 512 * MIB
    assert entry["containers"][1]["volumes"] == {"j-ann_db": 7}
    assert json.loads(json.dumps(document)) == document


# -- the real stack -------------------------------------------------------------------------------------------------

CLI = str(Path(sys.executable).with_name("multiuser-spawner"))
CONFIG = f"""
c.MultiUserSpawner.group_overrides = {{
    "1-class": {{"groups": ["class"], "spawner_override": {{"mem_limit": "512M", "cpu_limit": 0.5}}}},
    "2-db": {{"groups": ["db"], "spawner_override": {{
        "services": {{"db": {{"preset": "postgres", "image": {POSTGRES_IMAGE!r}, "mem_limit": "256M"}}}}}}}},
}}
"""


def run_top(hub, *args: str) -> subprocess.CompletedProcess:
    config = str(hub.workdir / "jupyterhub_config.py")
    return subprocess.run([CLI, "top", "-f", config, *args], capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.docker
def test_top_shows_each_server_against_its_limits_the_busiest_first(make_hub, docker_client):
    hub = make_hub({"busy": ["class", "db"], "calm": ["class"]}, CONFIG)
    hub.start_server("busy")
    hub.start_server("calm")
    # the busy student holds 200 MB of (written, so resident) memory
    notebook(docker_client, hub, "busy").exec_run(
        ["python3", "-c", "import time; x = b'1' * (200 * 2**20); time.sleep(600)"], detach=True
    )

    deadline = time.monotonic() + 90
    while True:
        frame = json.loads(run_top(hub, "--json").stdout)
        users = [s["user"] for s in frame["servers"]]
        if users == ["busy", "calm"] and frame["servers"][0]["memory"] > 200 * MIB:
            break
        assert time.monotonic() < deadline, f"busy never came first with its 200 MB: {frame}"
        time.sleep(1)

    busy, calm = frame["servers"]
    notebook_usage, db_usage = busy["containers"]
    assert notebook_usage["name"] == f"{hub.prefix}-busy" and notebook_usage["role"] == "notebook"
    assert (notebook_usage["memory_limit"], notebook_usage["cpu_limit"]) == (512 * MIB, 0.5)
    assert 200 * MIB < notebook_usage["memory"] < 512 * MIB
    assert notebook_usage["volumes"].keys() == {f"{hub.prefix}-busy_home"}
    assert (db_usage["service"], db_usage["memory_limit"]) == ("db", 256 * MIB)
    assert 0 < db_usage["memory"] < 256 * MIB
    assert db_usage["volumes"][f"{hub.prefix}-busy_db"] > 10 * MIB  # a Postgres cluster's files
    assert [c["role"] for c in calm["containers"]] == ["notebook"] and calm["containers"][0]["memory"] > 0

    # and the table for a person, one frame
    table = run_top(hub, "--once").stdout
    busy_row = next(line for line in table.splitlines() if f" {hub.prefix}-busy " in line)
    assert "/0.5" in busy_row and "/512 MiB" in busy_row, table
    assert table.index(f"{hub.prefix}-busy ") < table.index(f"{hub.prefix}-calm "), table
    assert "2 user(s), 2 running server(s)" in table
