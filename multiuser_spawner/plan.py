"""What one user's server is, independent of the engine that runs it: a notebook, its services, one private
network, and volumes.

Pure data and pure builders. The spawner resolves the settings (group overrides, profile, user options) and the
generated passwords, calls these builders, and hands the result to a backend (:mod:`.backend`), which turns each
piece into its engine's objects: containers on one Docker host, Swarm services on many.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import names, services
from .readiness import KIND_COMMAND, KIND_POSTGRES, POSTGRES_FALLBACK_COMMAND, Probe


@dataclass(frozen=True)
class Resources:
    """CPU in cores, memory in bytes; ``None`` leaves a value unset. Limits are hard caps; guarantees are what the
    engine reserves or weighs by."""

    cpu_limit: float | None = None
    cpu_guarantee: float | None = None
    mem_limit: int | None = None
    mem_guarantee: int | None = None


@dataclass(frozen=True)
class Security:
    """Hardening of one workload."""

    no_new_privileges: bool = True
    cap_drop: tuple[str, ...] = ("ALL",)
    cap_add: tuple[str, ...] = ()
    pids_limit: int | None = 1024
    init: bool = True


@dataclass(frozen=True)
class Mount:
    """A volume (by name) or a host path mounted into a workload."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Workload:
    """One process tree the server runs: the notebook or a service."""

    name: str
    image: str
    command: tuple[str, ...] | None
    environment: Mapping[str, str]
    labels: Mapping[str, str]
    network: str
    aliases: tuple[str, ...] = ()
    hostname: str | None = None
    mounts: tuple[Mount, ...] = ()
    ports: tuple[int, ...] = ()
    resources: Resources = Resources()
    security: Security = Security()
    stop_signal: str | None = None
    #: restarts the engine may do by itself after a crash (0: never; the hub decides)
    restarts_on_failure: int = 0
    #: engine-specific additions the admin configured (DockerSpawner's ``extra_create_kwargs`` and friends); a
    #: backend reads the keys it knows
    engine_extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VolumePlan:
    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class NetworkPlan:
    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class ServiceInstance:
    """One user's instance of a service: its spec, its names and its password."""

    spec: services.ServiceSpec
    names: names.ServiceNames
    password: str = field(repr=False)  # a logged plan or a traceback must not show it

    def fields(self, hub_fields: Mapping[str, str]) -> dict[str, str]:
        return services.template_fields(self.spec, self.password, hub_fields)


# A crashed or OOM-killed service comes straight back and recovers from its own log; one stopped on purpose stays
# stopped until the server's next start.
SERVICE_RESTARTS_ON_FAILURE = 5


def network_plan(name: str, owner: names.Owner) -> NetworkPlan:
    return NetworkPlan(name=name, labels=owner.labels(names.ROLE_NETWORK))


def service_volume_plan(spec: services.ServiceSpec, volume: str, owner: names.Owner) -> VolumePlan:
    """A service's data volume, labelled with a new password: the engine keeps the labels of a volume that
    exists, so the password is only ever the one made with the data."""
    labels = owner.labels(names.ROLE_SERVICE_DATA, spec.key)
    labels[names.LABEL_PASSWORD] = services.new_password()
    return VolumePlan(name=volume, labels=labels)


def password_of_volume(labels: Mapping[str, str]) -> str:
    """The password kept on a service's volume (or on a database volume from before per-user services)."""
    return labels.get(names.LABEL_PASSWORD) or labels.get(names.LABEL_DB_PASSWORD) or ""


def service_workload(
    instance: ServiceInstance,
    *,
    network: str,
    owner: names.Owner,
    hub_fields: Mapping[str, str],
    security: Security,
) -> Workload:
    """A service's container: on the private network only, reachable there by its alias, no published port,
    its host name fixed (RabbitMQ keeps its data under its host name), its own limits."""
    spec = instance.spec
    fields = instance.fields(hub_fields)
    mounts = (Mount(instance.names.volume, spec.volume),) if spec.volume else ()
    return Workload(
        name=instance.names.container,
        image=spec.image,
        command=services.render_list(spec.command, fields),
        environment=services.render(spec.environment, fields),
        labels=owner.labels(names.ROLE_SERVICE, spec.key),
        network=network,
        aliases=(spec.alias,),
        hostname=spec.alias,
        mounts=mounts,
        ports=(spec.port,) if spec.port else (),
        resources=Resources(
            cpu_limit=spec.cpu_limit,
            cpu_guarantee=spec.cpu_guarantee,
            mem_limit=spec.mem_limit,
            mem_guarantee=spec.mem_guarantee,
        ),
        security=security,
        stop_signal=spec.stop_signal or None,
        restarts_on_failure=SERVICE_RESTARTS_ON_FAILURE,
    )


def notebook_service_environment(instances: list[ServiceInstance], hub_fields: Mapping[str, str]) -> dict[str, str]:
    """What the notebook is told of its services (host names, ports, credentials, URLs)."""
    env: dict[str, str] = {}
    for instance in instances:
        env.update(services.render(instance.spec.notebook_environment, instance.fields(hub_fields)))
    return env


def readiness_probe(instance: ServiceInstance, hub_fields: Mapping[str, str]) -> Probe:
    spec = instance.spec
    fields = instance.fields(hub_fields)
    if spec.ready == services.READY_COMMAND:
        command = services.render_list(spec.ready_command, fields) or ()
        kind = KIND_COMMAND
    elif spec.ready == services.READY_POSTGRES:
        command = services.render_list(POSTGRES_FALLBACK_COMMAND, fields) or ()
        kind = KIND_POSTGRES
    else:
        command, kind = (), spec.ready
    return Probe(
        kind=kind,
        port=spec.port,
        command=command,
        interval=spec.ready_interval,
        login_user=spec.user,
        login_database=spec.name,
        secret=instance.password,
    )
