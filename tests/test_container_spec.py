"""The container builders, against literal dicts."""

from __future__ import annotations

from multiuser_spawner import container_spec as cs
from multiuser_spawner.plan import Mount, Resources, Security, Workload

LABELS = {"org.multiuser-spawner.managed": "true"}


def workload(**overrides) -> Workload:
    fields = {
        "name": "jupyter-alice",
        "image": "img:1",
        "command": ("jupyterhub-singleuser",),
        "environment": {"USER_ID": "alice"},
        "labels": LABELS,
        "network": "jupyter-alice_net",
        "mounts": (Mount("jupyter-alice_home", "/home/jovyan"),),
        "ports": (8888,),
        "resources": Resources(cpu_limit=0.5, cpu_guarantee=0.25, mem_limit=512 * 2**20, mem_guarantee=256 * 2**20),
    }
    return Workload(**{**fields, **overrides})


def test_notebook_container_with_limits_guarantees_and_secure_defaults():
    spec = cs.container_from_workload(workload())
    assert spec.create == {
        "name": "jupyter-alice",
        "image": "img:1",
        "command": ["jupyterhub-singleuser"],
        "environment": {"USER_ID": "alice"},
        "labels": LABELS,
        "ports": [8888],
        "volumes": ["/home/jovyan"],
    }
    assert spec.host_config == {
        "binds": {"jupyter-alice_home": {"bind": "/home/jovyan", "mode": "rw"}},
        "network_mode": "jupyter-alice_net",
        "auto_remove": False,
        "mem_limit": 536870912,
        "mem_reservation": 268435456,
        "cpu_period": 100000,
        "cpu_quota": 50000,
        "cpu_shares": 256,
        "init": True,
        "security_opt": ["no-new-privileges:true"],
        "cap_drop": ["ALL"],
        "pids_limit": 1024,
    }
    assert spec.networks == {"jupyter-alice_net": []}


def test_admin_extras_win_and_merge_deeply():
    spec = cs.container_from_workload(
        workload(
            command=None,
            labels={"a": "1"},
            network="net",
            mounts=(Mount("/srv/data", "/data", read_only=True),),
            resources=Resources(cpu_limit=1.0),
            security=Security(no_new_privileges=False, cap_drop=(), pids_limit=None, init=False),
            engine_extras={
                cs.EXTRA_PUBLISH_ON: "127.0.0.1",
                cs.EXTRA_CREATE: {"labels": {"b": "2"}, "user": "1000"},
                cs.EXTRA_HOST_CONFIG: {"cpu_period": 50000, "shm_size": "1G"},
            },
        )
    )
    assert spec.create["labels"] == {"a": "1", "b": "2"}
    assert spec.create["user"] == "1000"
    assert "command" not in spec.create
    assert spec.host_config == {
        "binds": {"/srv/data": {"bind": "/data", "mode": "ro"}},
        "network_mode": "net",
        "auto_remove": False,
        "port_bindings": {8888: ("127.0.0.1",)},
        "cpu_period": 50000,
        "cpu_quota": 50000,
        "init": False,
        "shm_size": "1G",
    }


def test_service_container_is_private_and_unpublished():
    spec = cs.container_from_workload(
        Workload(
            name="jupyter-alice_db",
            image="postgres:15",
            command=None,
            environment={"POSTGRES_PASSWORD": "s3cret"},
            labels=LABELS,
            network="jupyter-alice_net",
            aliases=("db",),
            hostname="db",
            mounts=(Mount("jupyter-alice_db", "/var/lib/postgresql/data"),),
            ports=(5432,),
            resources=Resources(mem_limit=256 * 2**20),
            security=Security(cap_add=("CHOWN", "SETUID")),
            stop_signal="SIGINT",
            restarts_on_failure=5,
        )
    )
    assert spec.create == {
        "name": "jupyter-alice_db",
        "image": "postgres:15",
        "environment": {"POSTGRES_PASSWORD": "s3cret"},
        "labels": LABELS,
        "ports": [5432],
        "volumes": ["/var/lib/postgresql/data"],
        "hostname": "db",
        "stop_signal": "SIGINT",
    }
    assert spec.host_config == {
        "binds": {"jupyter-alice_db": {"bind": "/var/lib/postgresql/data", "mode": "rw"}},
        "network_mode": "jupyter-alice_net",
        "auto_remove": False,
        "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 5},
        "mem_limit": 268435456,
        "init": True,
        "security_opt": ["no-new-privileges:true"],
        "cap_drop": ["ALL"],
        "cap_add": ["CHOWN", "SETUID"],
        "pids_limit": 1024,
    }
    assert "port_bindings" not in spec.host_config
    assert spec.networks == {"jupyter-alice_net": ["db"]}


def test_network_on_a_subnet_of_its_own():
    assert cs.network_config(name="n", labels=LABELS, subnet="10.201.0.16/28") == {
        "name": "n",
        "driver": "bridge",
        "labels": LABELS,
        "check_duplicate": True,
        "ipam": {"Driver": "default", "Config": [{"Subnet": "10.201.0.16/28"}]},
    }


def test_home_ownership_container_runs_as_root_with_only_chown():
    spec = cs.home_ownership_container(
        name="v-init", image="img", volume="v", mount_path="/home/jovyan", owner="jovyan", labels={"k": "v"}
    )
    assert spec.create["labels"] == {"k": "v"}  # so gc sees one a crash left behind
    assert spec.create["user"] == "0"
    assert spec.create["command"] == ["jovyan", "/home/jovyan"]
    assert spec.host_config["cap_drop"] == ["ALL"] and spec.host_config["cap_add"] == ["CHOWN"]
    assert spec.host_config["network_mode"] == "none"


def test_cpu_guarantee_has_docker_minimum_weight():
    assert cs.resource_host_config(Resources(cpu_guarantee=0.0001)) == {"cpu_shares": 2}


def test_root_detection():
    for user in ("", "root", "0", "0:0", "root:staff"):
        assert cs.is_root_user(user)
    for user in ("jovyan", "1000", "1000:100"):
        assert not cs.is_root_user(user)
