"""Per-user services as settings: presets, checks that name the setting, the deprecated database settings, and
the plan's workloads against literal dicts."""

from __future__ import annotations

import pytest
from traitlets.config import Config

from multiuser_spawner import names, plan, readiness, services
from multiuser_spawner.services import ServiceConfigError
from multiuser_spawner.spawner import LEGACY_DATABASE_SETTINGS, MultiUserSpawner

HUB_FIELDS = {"raw_username": "Alice", "prefix": "jupyter"}


def instance(key: str, raw: dict, password: str = "pw") -> plan.ServiceInstance:
    spec = services.parse_service(key, raw)
    service_names = names.service_names(names.NameTemplates(), names.template_fields("jupyter", "alice", ""), key)
    return plan.ServiceInstance(spec, service_names, password)


def test_a_preset_fills_every_field_and_the_admin_wins():
    spec = services.parse_service("cache", {"preset": "redis", "image": "my/redis:7", "mem_limit": "64M"})
    assert spec.image == "my/redis:7"
    assert (spec.alias, spec.port, spec.volume, spec.ready) == ("cache", 6379, "/data", "redis")
    assert spec.mem_limit == 64 * 2**20
    assert spec.cpu_limit == 0.25  # the preset's


@pytest.mark.parametrize("preset", sorted(services.PRESETS))
def test_every_preset_is_limited_and_ready_checked(preset):
    spec = services.parse_service("svc", {"preset": preset})
    assert spec.cpu_limit and spec.mem_limit
    assert spec.ready in services.READY_KINDS and spec.port
    assert spec.volume.startswith("/")


def test_a_custom_service_without_limits_gets_the_defaults():
    spec = services.parse_service("minio", {"image": "minio/minio", "port": 9000})
    assert (spec.cpu_limit, spec.mem_limit) == (0.5, 256 * 2**20)
    assert spec.ready == "tcp"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"preset": "redis", "port": "6379"}, r"services\['cache'\]\.port: '6379' is not a port"),
        ({"preset": "mongo"}, r"services\['cache'\]\.preset: unknown preset 'mongo'"),
        ({"port": 1}, r"services\['cache'\]\.image is required"),
        ({"preset": "redis", "colour": "red"}, r"services\['cache'\] has unknown setting\(s\) \['colour'\]"),
        ({"preset": "redis", "ready": "http"}, r"services\['cache'\]\.ready: 'http' is not one of"),
        ({"image": "x", "ready": "redis"}, r"services\['cache'\]\.ready: 'redis' needs the service's port"),
        ({"preset": "redis", "mem_limit": "lots"}, r"services\['cache'\]\.mem_limit must be bytes"),
        ({"preset": "redis", "volume": "data"}, r"services\['cache'\]\.volume must be an absolute path"),
        ({"preset": "redis", "environment": {"A": 1}}, r"services\['cache'\]\.environment\['A'\] must be a string"),
        (
            {"preset": "redis", "notebook_environment": {"R": "{pasword}"}},
            r"services\['cache'\]\.notebook_environment\['R'\]: unknown field \{pasword\}",
        ),
        ({"preset": "redis", "alias": "Cache_1"}, r"services\['cache'\]\.alias"),
        ("redis", r"services\['cache'\] must be a dict"),
    ],
)
def test_bad_service_settings_are_named(raw, message):
    with pytest.raises(ServiceConfigError, match=message):
        services.parse_service("cache", raw)


def test_two_services_may_not_tell_the_notebook_the_same_variable():
    message = r"db2'\]\.notebook_environment\['DATABASE_HOST'\] is also set by services\['db'\]"
    with pytest.raises(ServiceConfigError, match=message):
        services.parse_services({"db": {"preset": "postgres"}, "db2": {"preset": "postgres", "alias": "db2"}})


def test_services_come_sorted_by_key():
    specs = services.parse_services({"queue": {"preset": "rabbitmq"}, "cache": {"preset": "redis"}})
    assert [s.key for s in specs] == ["cache", "queue"]


def test_a_bad_service_stops_the_hub_at_start_naming_it():
    config = Config()
    config.MultiUserSpawner.services = {"cache": {"preset": "redis", "port": 0}}
    with pytest.raises(ValueError, match=r"services\['cache'\]\.port"):
        MultiUserSpawner(config=config)


def test_a_service_slower_than_the_hubs_patience_is_refused():
    config = Config()
    config.MultiUserSpawner.services = {"queue": {"preset": "rabbitmq", "ready_timeout": 200}}
    with pytest.raises(ValueError, match=r"services\['queue'\]\.ready_timeout \(200 s\).*start_timeout \(180 s\)"):
        MultiUserSpawner(config=config).check_settings()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"services": {"cache": {"preset": "redis", "port": "x"}}},
            r"group_overrides\['1-tier'\]: services\['cache'\]\.port",
        ),
        (
            {"services": {"queue": {"preset": "rabbitmq"}}, "start_timeout": 60},
            r"group_overrides\['1-tier'\]:.*ready_timeout",
        ),
        ({"services": {"db": {"mem_limit": "lots"}}}, r"group_overrides\['1-tier'\]: services\['db'\]\.mem_limit"),
    ],
)
def test_a_tiers_services_are_checked_at_hub_start(override, message):
    config = Config()
    config.MultiUserSpawner.services = {"db": {"preset": "postgres"}}
    config.MultiUserSpawner.group_overrides = {"1-tier": {"groups": ["g"], "spawner_override": override}}
    with pytest.raises(ValueError, match=message):
        MultiUserSpawner(config=config).check_settings()


def test_a_profiles_services_are_checked_at_hub_start():
    config = Config()
    config.MultiUserSpawner.profiles = [{"slug": "big", "spawner_override": {"services": {"s": {"port": 1}}}}]
    with pytest.raises(ValueError, match=r"profiles\['big'\]: services\['s'\]\.image is required"):
        MultiUserSpawner(config=config).check_settings()


def test_service_workload_is_private_limited_and_templated():
    cache = instance("cache", {"preset": "redis", "image": "r:7"}, password="s3cret")
    workload = plan.service_workload(
        cache,
        network="jupyter-alice_net",
        owner=names.Owner(hub="jupyter", user="alice", user_id="3", user_created="2026-01-02T03:04:05.000006"),
        hub_fields=HUB_FIELDS,
        security=plan.Security(cap_add=("SETUID",)),
    )
    assert workload == plan.Workload(
        name="jupyter-alice_cache",
        image="r:7",
        command=("redis-server", "--requirepass", "s3cret", "--appendonly", "yes"),
        environment={},
        labels={
            "org.multiuser-spawner.managed": "true",
            "org.multiuser-spawner.hub": "jupyter",
            "org.multiuser-spawner.user": "alice",
            "org.multiuser-spawner.user-id": "3",
            "org.multiuser-spawner.user-created": "2026-01-02T03:04:05.000006",
            "org.multiuser-spawner.server": "",
            "org.multiuser-spawner.role": "service",
            "org.multiuser-spawner.service": "cache",
        },
        network="jupyter-alice_net",
        aliases=("cache",),
        hostname="cache",
        mounts=(plan.Mount("jupyter-alice_cache", "/data"),),
        ports=(6379,),
        resources=plan.Resources(cpu_limit=0.25, mem_limit=128 * 2**20),
        security=plan.Security(cap_add=("SETUID",)),
        stop_signal="SIGTERM",
        restarts_on_failure=5,
    )


def test_the_notebook_is_told_of_each_service():
    env = plan.notebook_service_environment(
        [instance("cache", {"preset": "redis"}, "r-pw"), instance("queue", {"preset": "rabbitmq"}, "q-pw")],
        HUB_FIELDS,
    )
    assert env == {
        "REDIS_HOST": "cache",
        "REDIS_PORT": "6379",
        "REDIS_PASSWORD": "r-pw",
        "REDIS_URL": "redis://:r-pw@cache:6379/0",
        "RABBITMQ_HOST": "queue",
        "RABBITMQ_PORT": "5672",
        "RABBITMQ_USER": "jupyter",
        "RABBITMQ_PASSWORD": "q-pw",
        "AMQP_URL": "amqp://jupyter:q-pw@queue:5672/%2F",
    }


def test_readiness_probes():
    pg = plan.readiness_probe(instance("db", {"preset": "postgres"}, "pw"), HUB_FIELDS)
    assert pg == readiness.Probe(
        kind="postgres",
        port=5432,
        command=("pg_isready", "--quiet", "--host=127.0.0.1", "--port=5432"),
        interval=2.0,
        login_user="jupyter",
        login_database="jupyter",
        secret="pw",
    )
    custom = instance("m", {"image": "m", "port": 1, "ready": ["ping", "--password={password}"], "ready_interval": 5})
    probe = plan.readiness_probe(custom, HUB_FIELDS)
    assert (probe.kind, probe.command, probe.interval) == ("command", ("ping", "--password=pw"), 5.0)
    assert probe.described_command() == "ping --password=***"


def test_a_password_never_shows_in_a_repr():
    db = instance("db", {"preset": "postgres"}, "s3cret")
    assert "s3cret" not in repr(db)
    assert "s3cret" not in repr(plan.readiness_probe(db, HUB_FIELDS))


def legacy_settings(**changes) -> dict:
    spawner = MultiUserSpawner()
    values = {name: getattr(spawner, name) for name in LEGACY_DATABASE_SETTINGS}
    return {**values, **changes}


def test_the_deprecated_database_settings_describe_the_service_db():
    raw = services.legacy_database_service(legacy_settings(database_image="pg:15", database_mem_limit=2**30))
    db = instance("db", raw, "pw")
    assert (db.spec.image, db.spec.alias, db.spec.port, db.spec.volume) == (
        "pg:15",
        "db",
        5432,
        "/var/lib/postgresql/data",
    )
    assert (db.spec.mem_limit, db.spec.cpu_limit) == (2**30, 0.5)  # its own where set, else the preset's
    assert db.spec.ready == "postgres"
    assert db.names == names.ServiceNames("jupyter-alice_db", "jupyter-alice_db")  # the first release's names
    env = plan.notebook_service_environment([db], HUB_FIELDS)
    assert env["DATABASE_URL"] == "postgresql://jupyter:pw@db:5432/jupyter"
    assert env["DATABASE_PASS"] == env["PGPASSWORD"] == "pw"


def test_a_deprecated_ready_command_keeps_working():
    raw = services.legacy_database_service(
        legacy_settings(database_ready_command=["mysqladmin", "ping", "-p{db_password}"], database_url_scheme="mysql")
    )
    db = instance("db", raw, "pw")
    assert plan.readiness_probe(db, HUB_FIELDS).command == ("mysqladmin", "ping", "-ppw")
    assert plan.notebook_service_environment([db], HUB_FIELDS)["DATABASE_URL"].startswith("mysql://")


def test_a_volume_keeps_its_password_under_either_label():
    assert plan.password_of_volume({names.LABEL_PASSWORD: "new"}) == "new"
    assert plan.password_of_volume({names.LABEL_DB_PASSWORD: "old"}) == "old"
    assert plan.password_of_volume({}) == ""
