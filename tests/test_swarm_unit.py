"""The pure parts of the Swarm engine: service specs, names, task and node judgements, against literal values."""

from __future__ import annotations

import json

import docker
import pytest
from traitlets.config import Config

from multiuser_spawner import names, validate_config
from multiuser_spawner.container_spec import EXTRA_CREATE
from multiuser_spawner.docker_gateway import DockerGatewayError
from multiuser_spawner.plan import Mount, NetworkPlan, Resources, Security, Workload
from multiuser_spawner.swarm import (
    Job,
    Placement,
    SwarmGateway,
    directory_maker_job,
    export_root_options,
    export_volume_name,
    job_service_spec,
    node_unavailable,
    overlay_network_config,
    render_driver_options,
    service_from_workload,
    split_device,
    task_address,
    task_failure,
    volume_labels_of_record,
    volume_option_fields,
)
from multiuser_spawner.swarm_jobs import DOCKER_SOCKET_MOUNT, oom_check_job, volume_removal_job

LABELS = {"org.multiuser-spawner.managed": "true", "org.multiuser-spawner.role": "service"}


def test_a_service_workload_becomes_a_one_replica_dnsrr_service_with_limits_reservations_and_volume_mounts():
    workload = Workload(
        name="jh-ada_db",
        image="postgres:15",
        command=("postgres", "-c", "fsync=on"),
        environment={"POSTGRES_PASSWORD": "s3cret"},
        labels=LABELS,
        network="jh-ada_net",
        aliases=("db",),
        hostname="db",
        mounts=(Mount("jh-ada_db", "/var/lib/postgresql/data"),),
        resources=Resources(cpu_limit=0.5, cpu_guarantee=0.25, mem_limit=256 * 2**20, mem_guarantee=128 * 2**20),
        security=Security(cap_drop=("ALL",), cap_add=("CHOWN", "SETUID"), pids_limit=512, init=True),
        stop_signal="SIGINT",
        restarts_on_failure=5,
    )
    spec = service_from_workload(
        workload,
        network_id="net123",
        placement=Placement(constraints=("node.role==worker",), pinned_node="node9"),
        volume_labels={"jh-ada_db": {"org.multiuser-spawner.role": "service-data"}},
        stop_grace_seconds=10,
    )
    assert spec == {
        "name": "jh-ada_db",
        "labels": LABELS,
        "mode": {"Replicated": {"Replicas": 1}},
        "endpoint_spec": {"Mode": "dnsrr"},
        "task_template": {
            "ContainerSpec": {
                "Image": "postgres:15",
                "Labels": LABELS,
                "Env": ["POSTGRES_PASSWORD=s3cret"],
                "Args": ["postgres", "-c", "fsync=on"],
                "Hostname": "db",
                "StopSignal": "SIGINT",
                "StopGracePeriod": 10_000_000_000,
                "Mounts": [
                    {
                        "Type": "volume",
                        "Source": "jh-ada_db",
                        "Target": "/var/lib/postgresql/data",
                        "ReadOnly": False,
                        "VolumeOptions": {"Labels": {"org.multiuser-spawner.role": "service-data"}},
                    }
                ],
                "Init": True,
                "CapabilityDrop": ["ALL"],
                "CapabilityAdd": ["CHOWN", "SETUID"],
            },
            "Resources": {
                "Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 256 * 2**20, "Pids": 512},
                "Reservations": {"NanoCPUs": 250_000_000, "MemoryBytes": 128 * 2**20},
            },
            "RestartPolicy": {"Condition": "on-failure", "MaxAttempts": 5},
            "Placement": {"Constraints": ["node.role==worker", "node.id==node9"]},
            "Networks": [{"Target": "net123", "Aliases": ["db"]}],
        },
    }


def test_a_notebook_is_never_restarted_by_swarm_and_shared_volumes_carry_their_driver():
    workload = Workload(
        name="jh-ada",
        image="nb",
        command=None,
        environment={},
        labels=LABELS,
        network="jh-ada_net",
        mounts=(Mount("jh-ada_home", "/home/jovyan"), Mount("jh-ada_data", "/data", read_only=True)),
        security=Security(pids_limit=None),
        engine_extras={EXTRA_CREATE: {"user": "1000:100", "working_dir": "/tmp"}},
    )
    spec = service_from_workload(
        workload,
        network_id="n",
        placement=Placement(preferences=({"Spread": {"SpreadDescriptor": "node.labels.rack"}},)),
        volume_labels={},
        stop_grace_seconds=3,
        volume_driver="",
        volume_driver_options={"type": "nfs", "o": "addr=10.0.0.5", "device": ":/exports/{volume}"},
    )
    template = spec["task_template"]
    assert template["RestartPolicy"] == {"Condition": "none"}
    assert template["Placement"] == {"Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.rack"}}]}
    assert template["Resources"] == {"Limits": {}, "Reservations": {}}
    assert template["Networks"] == [{"Target": "n"}]
    container = template["ContainerSpec"]
    assert container["User"] == "1000:100"
    assert "Args" not in container and "Hostname" not in container
    # each volume is its own directory of the export
    assert [m["VolumeOptions"] for m in container["Mounts"]] == [
        {
            "Labels": {},
            "DriverConfig": {
                "Name": "local",
                "Options": {"type": "nfs", "o": "addr=10.0.0.5", "device": f":/exports/{volume}"},
            },
        }
        for volume in ("jh-ada_home", "jh-ada_data")
    ]


def test_the_overlay_is_attachable_and_encrypted_on_request():
    plan = NetworkPlan("jh-ada_net", {"org.multiuser-spawner.role": "network"})
    assert overlay_network_config(plan, encrypted=False) == {
        "name": "jh-ada_net",
        "driver": "overlay",
        "attachable": True,
        "labels": {"org.multiuser-spawner.role": "network"},
        "check_duplicate": True,
    }
    assert overlay_network_config(plan, encrypted=True)["options"] == {"encrypted": "true"}


def test_a_volume_gets_its_records_labels_but_never_the_password_or_the_pin():
    record = {
        "org.multiuser-spawner.role": "service-data",
        "org.multiuser-spawner.password": "s3cret",
        "org.multiuser-spawner.node": "node9",
        "org.multiuser-spawner.node-name": "worker-1",
    }
    assert volume_labels_of_record(record) == {"org.multiuser-spawner.role": "service-data"}


@pytest.mark.parametrize(
    "status, expected",
    [
        ({"State": "running"}, ""),
        ({"State": "pending", "Message": "pending task scheduling"}, ""),
        (
            {"State": "pending", "Err": "no suitable node (scheduling constraints not satisfied on 3 nodes)"},
            "task pending: no suitable node (scheduling constraints not satisfied on 3 nodes)",
        ),
        ({"State": "rejected", "Err": "No such image: nb:latest"}, "task rejected: No such image: nb:latest"),
        (
            {"State": "failed", "Err": "task: non-zero exit (3)", "ContainerStatus": {"ExitCode": 3}},
            "task failed, exit code 3: task: non-zero exit (3)",
        ),
        ({"State": "complete", "Message": "finished", "ContainerStatus": {"ExitCode": 0}}, "task complete: finished"),
    ],
)
def test_a_task_that_can_never_run_is_told_at_once_with_swarms_reason(status, expected):
    assert task_failure({"Status": status}) == expected


def test_a_tasks_address_is_read_on_its_network_by_name():
    task = {
        "NetworksAttachments": [
            {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.5/24"]},
            {"Network": {"Spec": {"Name": "jh-ada_net"}}, "Addresses": ["10.0.7.4/24"]},
        ]
    }
    assert task_address(task, "jh-ada_net") == "10.0.7.4"
    assert task_address(task, "other") == ""


@pytest.mark.parametrize(
    "state, availability, expected",
    [
        ("ready", "active", ""),
        ("down", "active", "is down"),
        ("ready", "drain", "is drained by an admin"),
        ("ready", "pause", "is paused by an admin"),
    ],
)
def test_why_a_node_cannot_take_a_task(state, availability, expected):
    assert node_unavailable({"Status": {"State": state}, "Spec": {"Availability": availability}}) == expected


def test_swarm_names_have_no_dot_stay_apart_and_are_stable():
    fields = names.template_fields("jh", "alice", "x")
    resolved = names.resource_names(names.NameTemplates(), fields, ["db"])
    swarm = names.swarm_resource_names(resolved)
    assert swarm.container == "jh-alice__x"
    assert swarm.network == "jh-alice__x_net"
    assert swarm.services["db"].container == "jh-alice__x_db"
    assert swarm.home_volume == resolved.home_volume == "jh-alice_home"
    assert swarm.services["db"].volume == resolved.services["db"].volume == "jh-alice.x_db"
    # a user whose name looks like another's server never meets it
    other = names.resource_names(names.NameTemplates(), names.template_fields("jh", "alice-x", ""), ["db"])
    assert names.swarm_resource_names(other).container == "jh-alice-x" != swarm.container
    assert names.swarm_resource_names(resolved) == swarm


def test_a_long_swarm_name_is_shortened_with_a_hash_and_a_name_swarm_refuses_names_the_setting():
    long = "jh-" + "a" * 40 + "." + "b" * 25
    fitted = names.swarm_name(long, "name_template")
    assert len(fitted) == names.MAX_NAME_LENGTH and "." not in fitted
    assert fitted != names.swarm_name(long[:-1] + "c", "name_template")
    with pytest.raises(ValueError, match="name_template"):
        names.swarm_name("jh-alice-", "name_template")


@pytest.mark.parametrize("spawner_class", ["multiuser-swarm", "multiuser_spawner.swarm_spawner.MultiUserSwarmSpawner"])
def test_a_swarm_hub_that_would_keep_stopped_services_is_stopped_at_start_naming_the_setting(spawner_class):
    config = Config()
    config.JupyterHub.spawner_class = spawner_class
    config.MultiUserSpawner.remove = False
    with pytest.raises(ValueError, match=r"c\.MultiUserSwarmSpawner\.remove"):
        validate_config(config)
    config.JupyterHub.spawner_class = "multiuser"
    validate_config(config)  # one host keeps stopped containers, as DockerSpawner does


@pytest.mark.parametrize(
    ("call", "action"),
    [
        (lambda g: g.all_tasks(), "listing the swarm's tasks"),
        (lambda g: g.nodes(), "listing the swarm's nodes"),
        (lambda g: g.list_services([]), "listing services"),
        (lambda g: g.inspect_record("jh-ada_home"), "looking up the record of volume jh-ada_home"),
    ],
)
async def test_a_swarm_call_that_fails_says_what_it_was_doing(tmp_path, call, action):
    gone = SwarmGateway(docker.APIClient(base_url=f"unix://{tmp_path}/docker.sock", version="1.41"), 1, 1)
    with pytest.raises(DockerGatewayError, match=f"^{action} failed: the Docker engine could not be reached"):
        await call(gone)


def test_a_job_is_one_task_never_restarted_where_its_placement_allows_with_its_mounts():
    socket = {"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/var/run/docker.sock"}
    job = Job(
        name="jh-rm-1",
        image="img",
        command=("true",),
        labels=LABELS,
        placement=Placement(pinned_node="n1"),
        mounts=(socket,),
    )
    assert job_service_spec(job) == {
        "name": "jh-rm-1",
        "labels": LABELS,
        "task_template": {
            "ContainerSpec": {"Image": "img", "Command": ["true"], "User": "0", "Labels": LABELS, "Mounts": [socket]},
            "RestartPolicy": {"Condition": "none"},
            "Placement": {"Constraints": ["node.id==n1"]},
        },
        "mode": {"Replicated": {"Replicas": 1}},
    }


def test_the_jobs_that_need_a_nodes_engine_run_on_that_node_with_its_socket():
    owner = names.Owner(hub="jh", user="ada", user_id="7")
    for job in (volume_removal_job("jh-ada_home", "n1", "img", owner), oom_check_job("c0ffee", "n1", "img", owner)):
        assert job.placement == Placement(pinned_node="n1")
        assert job.mounts == (DOCKER_SOCKET_MOUNT,)
        assert job.labels["org.multiuser-spawner.role"] == "job"
        assert job.name.startswith("jh-") and "." not in job.name


def test_a_volume_is_removed_only_with_the_users_identity_or_without_one_their_name():
    known = names.Owner(hub="jh", user="ada", user_id="7", user_created="2026-01-01T00:00:00Z")
    unknown = names.Owner(hub="jh", user="ada", user_id="")
    expected = {
        owner: json.loads(volume_removal_job("jh-ada_home", "n1", "img", owner).command[4])
        for owner in (known, unknown)
    }
    assert expected[known] == {
        "org.multiuser-spawner.managed": "true",
        "org.multiuser-spawner.hub": "jh",
        "org.multiuser-spawner.user-id": "7",
        "org.multiuser-spawner.user-created": "2026-01-01T00:00:00Z",
    }
    assert expected[unknown] == {
        "org.multiuser-spawner.managed": "true",
        "org.multiuser-spawner.hub": "jh",
        "org.multiuser-spawner.user": "ada",
    }


# -- shared volumes -------------------------------------------------------------------------------------------------

OWNER_LABELS = {"org.multiuser-spawner.user": "Ada.Lovelace@example.org", "org.multiuser-spawner.hub": "jh"}


def test_driver_options_name_the_volume_its_user_and_the_hub():
    fields = volume_option_fields("jh-ada_home", OWNER_LABELS)
    assert fields == {"volume": "jh-ada_home", "user": names.safe_slug("Ada.Lovelace@example.org", 24), "prefix": "jh"}
    options = {"type": "nfs", "o": "addr=10.0.0.5,rw", "device": ":/exports/{prefix}/{user}/{volume}"}
    assert render_driver_options(options, fields) == {
        "type": "nfs",
        "o": "addr=10.0.0.5,rw",
        "device": f":/exports/jh/{fields['user']}/jh-ada_home",
    }


@pytest.mark.parametrize(
    "device, expected",
    [
        (":/exports/{volume}", (":/exports", "{volume}")),
        ("/srv/shared/t1/{user}/{volume}", ("/srv/shared/t1", "{user}/{volume}")),
        ("/srv/home-{volume}/data", ("/srv", "home-{volume}/data")),
    ],
)
def test_a_device_splits_into_the_exports_root_and_each_volumes_directory(device, expected):
    assert split_device(device) == expected


@pytest.mark.parametrize(
    "driver, options, message",
    [
        ("", {"device": ":/exports/{username}"}, r"\['device'\]: cannot fill .*\{volume\}, \{user\}, \{prefix\}"),
        ("", {"type": "nfs", "device": ":/exports/home"}, r"\['device'\] is ':/exports/home'.*must contain \{volume\}"),
        ("local", {"type": "none", "o": "bind"}, r"must contain \{volume\}"),
        ("", {"type": "nfs", "o": "addr={user}.nfs", "device": ":/x/{volume}"}, r"\['o'\]: .*only 'device'"),
        ("", {"type": "none", "o": "bind", "device": "/{volume}"}, r"must name the export's directory"),
        ("rexray", {"size": "{nope}"}, r"\['size'\]: cannot fill"),
    ],
)
def test_driver_options_that_cannot_name_each_volume_stop_the_hub_naming_the_setting(driver, options, message):
    config = Config()
    config.JupyterHub.spawner_class = "multiuser-swarm"
    config.MultiUserSwarmSpawner.volume_driver = driver
    config.MultiUserSwarmSpawner.volume_driver_options = options
    with pytest.raises(ValueError, match=r"c\.MultiUserSwarmSpawner\.volume_driver_options.*" + message):
        validate_config(config)


def test_a_plugin_driver_or_a_volume_named_device_is_accepted():
    for driver, options in [
        ("rexray", {"size": "10"}),  # a plugin makes each named volume itself
        ("", {"type": "nfs", "o": "addr=10.0.0.5,rw", "device": ":/exports/{prefix}/{user}/{volume}"}),
    ]:
        config = Config()
        config.JupyterHub.spawner_class = "multiuser-swarm"
        config.MultiUserSwarmSpawner.volume_driver = driver
        config.MultiUserSwarmSpawner.volume_driver_options = options
        validate_config(config)


def test_the_directory_maker_mounts_the_exports_root_and_makes_each_volumes_directory_as_root():
    spec = job_service_spec(
        directory_maker_job(
            name="jh-ada_-mkdir",
            image="nb",
            labels=LABELS,
            export_volume="jh_shared-export-1234abcd",
            export_labels={"org.multiuser-spawner.role": "shared-export"},
            driver_options={"type": "nfs", "o": "addr=10.0.0.5,rw", "device": ":/exports/{user}/{volume}"},
            directories=["ada/jh-ada_home", "ada/jh-ada_db"],
            placement=Placement(constraints=("node.labels.nfs==yes",)),
        )
    )
    assert spec == {
        "name": "jh-ada_-mkdir",
        "labels": LABELS,
        "mode": {"Replicated": {"Replicas": 1}},
        "task_template": {
            "ContainerSpec": {
                "Image": "nb",
                "Labels": LABELS,
                "User": "0",
                "Command": [
                    "mkdir",
                    "-p",
                    "--",
                    "/mnt/multiuser-spawner-export/ada/jh-ada_home",
                    "/mnt/multiuser-spawner-export/ada/jh-ada_db",
                ],
                "Mounts": [
                    {
                        "Type": "volume",
                        "Source": "jh_shared-export-1234abcd",
                        "Target": "/mnt/multiuser-spawner-export",
                        "VolumeOptions": {
                            "NoCopy": True,
                            "Labels": {"org.multiuser-spawner.role": "shared-export"},
                            "DriverConfig": {
                                "Name": "local",
                                "Options": {"type": "nfs", "o": "addr=10.0.0.5,rw", "device": ":/exports"},
                            },
                        },
                    }
                ],
            },
            "RestartPolicy": {"Condition": "none"},
            "Placement": {"Constraints": ["node.labels.nfs==yes"]},
        },
    }


def test_the_exports_root_volume_is_the_hubs_and_changes_name_with_the_export():
    nfs = {"type": "nfs", "o": "addr=10.0.0.5,rw", "device": ":/exports/{volume}"}
    root = export_root_options(nfs)
    assert root == {"type": "nfs", "o": "addr=10.0.0.5,rw", "device": ":/exports"}
    name = export_volume_name("jh", root)
    assert name.startswith("jh_shared-export-") and names.is_valid_docker_name(name)
    assert export_volume_name("jh", root) == name
    assert export_volume_name("jh", {**root, "device": ":/exports2"}) != name
    assert export_volume_name("jh2", root) != name
