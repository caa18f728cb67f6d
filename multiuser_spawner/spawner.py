"""MultiUserSpawner: JupyterHub's glue and the orchestration of a server's plan.

Each step is a call into a focused module:

- :mod:`.names`: what every object is called and labelled;
- :mod:`.services`: the per-user services an admin configured, with their presets;
- :mod:`.plan`: what a server is (notebook, services, network, volumes), engine-neutral and pure;
- :mod:`.backend` / :mod:`.local`: the engine that runs the plan (:mod:`.docker_gateway` talks to Docker);
- :mod:`.readiness`: telling that a service is ready; :mod:`.startup`: that the notebook listens;
- :mod:`.home`: the home volume; :mod:`.progress`: what the spawn page shows.

Every service is handled alike: nothing here knows which one is a database.
"""

from __future__ import annotations

import asyncio
import copy
import posixpath
import string
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import docker.errors
import requests
from dockerspawner import DockerSpawner
from jupyterhub.utils import isoformat, recursive_update
from tornado import web
from traitlets import default

from . import (
    cleanup,
    container_spec,
    home,
    inventory,
    names,
    network,
    plan,
    profiles,
    readiness,
    services,
    startup,
    stop_notes,
)
from .docker_gateway import DockerGateway, DockerGatewayError, WorkloadExited
from .local import LocalEngine
from .progress import SpawnProgress, pull_percent
from .settings import MultiUserSettings

#: the ``database_*`` settings of releases before per-user services, read to build the service ``db``
LEGACY_DATABASE_SETTINGS = (
    "database_image",
    "database_hostname",
    "database_port",
    "database_user",
    "database_name",
    "database_url_scheme",
    "database_data_path",
    "database_env",
    "database_ready_command",
    "database_ready_timeout",
    "database_cpu_limit",
    "database_mem_limit",
    "database_cap_add",
    "database_stop_signal",
)
STATE_NAMES = "multiuser_names"
STATE_STOP_NOTE = "multiuser_last_stop"
# Time the hub gives a spawn beyond its slowest service's own wait, so that service's error (with its logs) is
# what the user sees, not the hub's generic timeout.
START_TIMEOUT_MARGIN = 30


class SpawnCancelled(RuntimeError):
    """The user stopped the server while it was starting."""


class SpawnFailed(RuntimeError):
    """A spawn step failed. The message (shown to the user on the spawn page) says which and why."""

    def __init__(self, message: str):
        super().__init__(message)
        # JupyterHub shows this instead of "Internal Server Error" when a spawn fails within its request
        self.jupyterhub_message = message
        # JupyterHub before 6.0 ignores jupyterhub_message in its REST API's error answer and writes
        # ``log_message % args`` (tornado's HTTPError convention) instead: this makes that the same sentence
        self.log_message = "%s"


@dataclass(frozen=True)
class PreparedServer:
    """What :meth:`MultiUserSpawner.prepare` made: whether the home is new, and which services were initialised."""

    home_created: bool
    services_initialised: tuple[str, ...]


class MultiUserSpawner(MultiUserSettings, DockerSpawner):
    """One image, many users: a container, a home volume, limits and private services per user."""

    _gateways: ClassVar[dict[type, DockerGateway]] = {}
    #: what talks to the engine; a subclass for another engine (Swarm) names its own
    gateway_class: ClassVar[type[DockerGateway]] = DockerGateway
    _address_pools: ClassVar[dict[tuple[str, int], network.AddressPool]] = {}
    _legacy_warned: ClassVar[bool] = False

    _progress: SpawnProgress | None = None
    _started_at: float = float("-inf")
    _start_task: asyncio.Task | None = None
    _cancel_requested = False
    _waiting = False
    _names: names.ResourceNames | None = None
    _home_created = False
    #: why the last server stopped unasked (its memory limit), told to the user at their next start
    _stop_note: stop_notes.StopNote | None = None
    _hub_container_joined = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._service_environment: dict[str, str] = {}
        self._new_service_volumes: set[str] = set()
        # services whose readiness wait has ended, ready or not: an undo need not wait for them again
        self._settled_services: set[str] = set()

    # -- DockerSpawner defaults this product changes ------------------------------------------------------------

    @default("name_template")
    def _default_name_template(self) -> str:
        return names.NameTemplates.container

    @default("remove")
    def _default_remove(self) -> bool:
        # Files live on the home volume, so the container is disposable; recreating it on every start is what
        # makes a changed image, limit or profile take effect.
        return True

    @default("use_internal_ip")
    def _default_use_internal_ip(self) -> bool:
        # The hub reaches containers by IP; publishing a port on the host would expose it to every local process.
        return True

    @default("start_timeout")
    def _default_start_timeout(self) -> int:
        # JupyterHub's 60 s is shorter than a first Postgres or RabbitMQ start under load: the services' own
        # timeouts (with their logs) must fire first.
        return 180

    def check_settings(self) -> None:
        """Checks that need more than one setting, or DockerSpawner's; single settings check themselves."""
        try:
            names.validate_prefix(self.prefix)
        except ValueError as e:
            raise ValueError(f"c.MultiUserSpawner.prefix: {e}") from None
        self._profiles()
        self._check_home_mounts()
        check_timeouts(self.service_specs(), self.start_timeout)
        for where, override in self._overrides_with_services():
            # A tier's services are merged into the base ones only when its user spawns: check each tier now.
            merged = copy.deepcopy(dict(self.services))
            recursive_update(merged, copy.deepcopy(override["services"]))
            try:
                check_timeouts(services.parse_services(merged), override.get("start_timeout", self.start_timeout))
            except ValueError as e:
                raise ValueError(f"c.MultiUserSpawner.{where}: {e}") from None

    def _check_home_mounts(self) -> None:
        """DockerSpawner's own mounts on the home path: a writable ``volumes`` entry there becomes the home, unless
        ``home_volume_name_template`` names another; anything else there would clash with the home volume."""
        if not self.home_volume_name_template:
            return  # no home volume of ours: DockerSpawner's mounts are all there is
        path = self.home_mount_path
        read_only = entry_on_path(self.read_only_volumes, path, str)
        if read_only:
            raise ValueError(
                f"c.DockerSpawner.read_only_volumes mounts {read_only[0]!r} on the home path {path}, where the home "
                "volume goes: a home must be writable, so move that entry to c.DockerSpawner.volumes"
            )
        renamed = self.home_volume_name_template != names.NameTemplates.home_volume
        from_volumes = entry_on_path(self.volumes, path, str)
        if renamed and from_volumes:
            raise ValueError(
                f"c.DockerSpawner.volumes mounts {from_volumes[0]!r} on the home path {path}, which makes it each "
                f"user's home volume, and c.MultiUserSpawner.home_volume_name_template names another "
                f"({self.home_volume_name_template!r}): keep only one of them"
            )

    def _overrides_with_services(self) -> list[tuple[str, dict[str, Any]]]:
        """The group overrides and profiles that change ``services``, each with where it is set."""
        found = []
        if isinstance(self.group_overrides, dict):
            for key, group_override in sorted(self.group_overrides.items()):
                override = (group_override or {}).get("spawner_override") or {}
                found.append((f"group_overrides[{key!r}]", override))
        found += [(f"profiles[{p.slug!r}]", dict(p.spawner_override)) for p in self._profiles()]
        return [(where, o) for where, o in found if isinstance(o.get("services"), dict)]

    # -- profiles: the hub's own options form, options_from_form and apply_user_options hooks -------------------

    def _profiles(self) -> list[profiles.Profile]:
        images = self.allowed_images if isinstance(self.allowed_images, dict | list) else None
        return profiles.parse_profiles(self.profiles, type(self).class_trait_names(config=True), images)

    def _available_profiles(self) -> list[profiles.Profile]:
        return profiles.profiles_for(self._profiles(), (group.name for group in self.user.groups))

    @default("options_form")
    def _default_options_form(self):
        if not self.profiles:
            return super()._default_options_form()
        return lambda spawner: profiles.render_form(spawner._available_profiles())

    @default("options_from_form")
    def _default_options_from_form(self):
        if not self.profiles:
            return super()._default_options_from_form()
        return profiles.options_from_form

    @default("apply_user_options")
    def _default_apply_user_options(self):
        if not self.profiles:
            return None
        return lambda spawner, user_options: spawner.apply_profile(user_options)

    def apply_profile(self, user_options: dict[str, Any]) -> profiles.Profile:
        """Apply the profile ``user_options`` chose (after group overrides, so the choice wins); refuse, with
        HTTP 400 and nothing created, a choice the user may not make."""
        all_profiles = self._profiles()
        try:
            chosen = profiles.choose(self._available_profiles(), all_profiles, user_options)
        except profiles.ProfileChoiceError as e:
            raise web.HTTPError(400, f"Invalid server options: {e}") from None
        self.log.info("Applying profile %s for %s", chosen.slug, self._log_name)
        # the hub's own mechanism, as for group_overrides: dicts merge, callables are called
        self._apply_overrides(dict(chosen.spawner_override))
        return chosen

    # -- Docker access: one bounded pool per hub instead of DockerSpawner's single thread ------------------------

    @property
    def gateway(self) -> DockerGateway:
        cls = type(self)
        if cls not in self._gateways:
            max_age = self.poll_view_max_age if self.poll_view_max_age is not None else self.poll_interval
            self._gateways[cls] = self.gateway_class.connect(
                self.client_kwargs, self.docker_api_concurrency, max_age, tls_config=self.tls_config
            )
        return self._gateways[cls]

    @property
    def client(self):
        return self.gateway.client

    def docker(self, method: str, *args: Any, **kwargs: Any) -> asyncio.Future:
        """DockerSpawner's by-name entry point, kept for its inherited helpers and for subclasses."""
        return asyncio.ensure_future(self.gateway.call(method, *args, **kwargs))

    # -- names, services and environment ------------------------------------------------------------------------

    def template_namespace(self) -> dict[str, str]:
        namespace = super().template_namespace()
        namespace.update(names.template_fields(self.prefix, self.user.name, self.name or ""))
        return namespace

    @default("object_name")
    def _object_name_default(self) -> str:
        if self.user is None:  # a spawner made only to check the configuration (validate_config)
            return ""
        return names.render_name(self.name_template, self.template_namespace(), "name_template")

    def service_specs(self) -> list[services.ServiceSpec]:
        """The services this server has, after group overrides and the profile: ``services``, plus ``db`` when
        the deprecated ``database_enabled`` is on."""
        raw = dict(self.services)
        if self.database_enabled:
            if names.LEGACY_DATABASE_SERVICE in raw:
                raise ValueError(
                    "c.MultiUserSpawner.database_enabled and services['db'] both describe the service 'db': "
                    "keep services['db'] only"
                )
            self._warn_legacy_database()
            legacy = {name: getattr(self, name) for name in LEGACY_DATABASE_SETTINGS}
            raw[names.LEGACY_DATABASE_SERVICE] = services.legacy_database_service(legacy)
        return services.parse_services(raw)

    def _warn_legacy_database(self) -> None:
        if not MultiUserSpawner._legacy_warned:
            MultiUserSpawner._legacy_warned = True
            self.log.warning(
                "c.MultiUserSpawner.database_enabled and the other database_* settings are deprecated: use "
                "c.MultiUserSpawner.services = {'db': {'preset': 'postgres', 'image': ...}}. Existing databases "
                "are found again under either setting."
            )

    def _templates(self) -> names.NameTemplates:
        return names.NameTemplates(
            container=self.name_template,
            home_volume=self.home_volume_name_template,
            network=self.network_name_template,
            service_container=self.service_container_name_template,
            service_volume=self.service_volume_name_template,
        )

    def _home_from_volumes(self) -> tuple[str, str] | None:
        """DockerSpawner's ``volumes`` entry on the home path, as (its template, the name DockerSpawner gives it
        for this user), when it is the home: an admin coming from DockerSpawner keeps their users' files."""
        if not self.home_volume_name_template:
            return None
        return entry_on_path(self.volumes, self.home_mount_path, lambda t: self.format_volume_name(t, self))

    def _home_server(self) -> str:
        """The server label of the home volume: this server's when its template names the server, else ``""``
        (one home for all the user's servers)."""
        return (self.name or "") if uses_server_field(self._home_volume_template()) else ""

    def _home_volume_template(self) -> str:
        """The template the home volume's name comes from."""
        from_volumes = self._home_from_volumes()
        return from_volumes[0] if from_volumes else self.home_volume_name_template

    def _names_for(self, specs: list[services.ServiceSpec]) -> names.ResourceNames:
        fields = self.template_namespace()
        resolved = names.resource_names(self._templates(), fields, [spec.key for spec in specs])
        from_volumes = self._home_from_volumes()
        if from_volumes:
            # Exactly the name DockerSpawner computed (never shortened or re-slugged), so its files are found. A
            # host directory there is the home itself: no volume of ours, the bind stays as DockerSpawner made it.
            source = from_volumes[1]
            resolved = replace(resolved, home_volume="" if source.startswith("/") else source)
        if self.database_enabled:
            # The deprecated database name templates still name the database they describe.
            legacy = names.NameTemplates(
                service_container=self.database_container_name_template,
                service_volume=self.database_volume_name_template,
            )
            resolved.services[names.LEGACY_DATABASE_SERVICE] = names.service_names(
                legacy, fields, names.LEGACY_DATABASE_SERVICE
            )
        return resolved

    @property
    def resource_names(self) -> names.ResourceNames:
        """The names of this server's objects: those it was started with (kept in its state, so a changed
        template or service list never loses a running server's objects), else those the settings give now."""
        if self._names is not None:
            return self._names
        resolved = self._names_for(self.service_specs())
        # A running server keeps the container name it was started with, whatever the template says now.
        if self.object_name and self.object_name != resolved.container:
            resolved = names.ResourceNames(self.object_name, resolved.home_volume, resolved.network, resolved.services)
        return resolved

    async def _names_kept_through_rename(self, resources: names.ResourceNames) -> names.ResourceNames:
        """A user renamed in the hub keeps their volumes: those made for them (by id and creation time) under
        their earlier name."""
        try:
            return inventory.names_kept_through_rename(
                resources,
                await cleanup.volumes_of(self.gateway, self.owner()),
                home_server=self._home_server(),
                server=self.name or "",
            )
        except ValueError as e:
            raise SpawnFailed(str(e)) from None

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        if self._names is not None:
            state[STATE_NAMES] = self._names.as_state()
        if self._stop_note is not None:
            state[STATE_STOP_NOTE] = self._stop_note.as_state()
        if self.user is not None:
            owner = self.owner()  # for gc: see names.STATE_USER_ID
            state[names.STATE_USER_ID], state[names.STATE_USER_CREATED] = owner.user_id, owner.user_created
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if state.get(STATE_NAMES):
            self._names = names.ResourceNames.from_state(state[STATE_NAMES])
        self._stop_note = stop_notes.StopNote.from_state(state.get(STATE_STOP_NOTE))

    def clear_state(self) -> None:
        # the stop note outlives the server it is about: it is cleared once the next start has told the user
        super().clear_state()
        self._names = None

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        namespace = self.template_namespace()
        for key, value in self.environment.items():
            if isinstance(value, str):
                env[key] = fill_template(value, namespace)
        if self.user_id_env:
            env[self.user_id_env] = fill_template(self.user_id_template, namespace)
        env.update(self._service_environment)
        return env

    # -- the engine -----------------------------------------------------------------------------------------------

    @property
    def backend(self) -> LocalEngine:
        pool = None
        if self.network_address_pool:
            key = (self.network_address_pool, self.network_subnet_size)
            if key not in self._address_pools:
                self._address_pools[key] = network.AddressPool(*key)
            pool = self._address_pools[key]
        return LocalEngine(self.gateway, self.hub_container_name, pool, self.stop_timeout, self.owner())

    def owner(self, server: str | None = None) -> names.Owner:
        """Whose this server's objects are: this hub (its prefix is its identity), this user by name and by id,
        and this server (or ``server``: ``""`` for what the user's servers share)."""
        return names.Owner(
            hub=self.prefix,
            user=self.user.name,
            # ``prepare`` knows no id (the hub's API does not show it): it records what it knows
            user_id="" if self.user.id is None else str(self.user.id),
            server=(self.name or "") if server is None else server,
            # as the hub's API writes it, so that ``prepare`` (which reads it there) records the same string
            user_created=isoformat(getattr(self.user, "created", None)) or "",
        )

    def _server_network(self, resources: names.ResourceNames) -> str:
        """A private network of its own, unless the admin opened it up and the server has no services."""
        if self.private_network or resources.services:
            return resources.network
        return self.network_name

    def _on_private_network(self, resources: names.ResourceNames) -> bool:
        """Whether the server runs on a network of its own, which the spawner makes, joins and removes."""
        return self._server_network(resources) == resources.network

    # -- start ---------------------------------------------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        # The hub cancels start() when the user stops a server that is still starting, then calls stop() a second
        # later. A Docker call under way cannot be called back, and a service interrupted in its first
        # initialisation is broken for good, so the work runs in its own task: a cancel only asks it to stop at its
        # next step (at once, while it merely waits) and undo what it made; stop() waits for that.
        self._cancel_requested = False
        # made here, not in the task: the hub may ask for progress before the task first runs
        self._progress = SpawnProgress()
        self._tell_why_the_last_server_stopped(self._progress)
        self._start_task = task = asyncio.ensure_future(self._start(self._progress))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # its error is the spawn's, not a leak
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._cancel_requested = True
            if self._waiting:
                task.cancel()
            raise

    def _tell_why_the_last_server_stopped(self, progress: SpawnProgress) -> None:
        if self._stop_note is not None:
            progress.report(0, self._stop_note.user_message())
            self._stop_note = None

    def _checkpoint(self) -> None:
        if self._cancel_requested:
            raise SpawnCancelled("the spawn was cancelled")

    async def prepare(self) -> PreparedServer:
        """Make this server's volumes ready ahead of its first start, exactly as its next spawn would: the image, the
        home (owned by the image's user) and each new service volume, initialised by one run of its service. Then
        the services and the network go again: nothing keeps running and no notebook starts."""
        await self._start(SpawnProgress(), notebook=False)
        return PreparedServer(self._home_created, tuple(sorted(self._new_service_volumes)))

    async def _start(self, progress: SpawnProgress, notebook: bool = True) -> tuple[str, int]:
        """Spawn the server; with ``notebook=False`` (see :meth:`prepare`), only initialise what it keeps."""
        self.check_settings()
        specs = self.service_specs()
        self._names = resources = self._names_for(specs)
        self._new_service_volumes = set()
        self._settled_services = set()
        self._service_environment = {}
        created: list[tuple[str, str]] = []  # (kind, name) made by this attempt, undone if it fails
        docker_steps: list[asyncio.Future] = []  # what changes Docker objects in the background, landed before an undo
        instances: list[plan.ServiceInstance] = []
        try:
            self._names = resources = await self._names_kept_through_rename(resources)
            image_info = await self._ensure_image(progress)
            extra_create = await self._admin_extra(self.extra_create_kwargs)  # one evaluation, for every use
            image_user = self._container_user(image_info, extra_create)
            self._check_user(image_user)
            self._checkpoint()
            # Home, network and each service's volume are independent: made side by side. A service starts as
            # soon as the network and its own volume exist; the notebook also needs its home and the services'
            # passwords (kept on their volumes), then starts beside them. The hub joins the network meanwhile:
            # only the readiness checks need it there.
            network_ready = asyncio.ensure_future(self._prepare_network(resources, created, progress))
            hub_joined = asyncio.ensure_future(self._join_network(network_ready, resources))
            volumes = [asyncio.ensure_future(self._prepare_service_volume(spec, resources)) for spec in specs]
            service_starts = [
                asyncio.ensure_future(
                    self._start_service(volume, network_ready, resources, created, progress, only_new=not notebook)
                )
                for volume in volumes
            ]
            docker_steps = [*service_starts, hub_joined]
            await gather_all([self._prepare_home(resources, image_info, image_user, progress), network_ready, *volumes])
            instances = [volume.result() for volume in volumes]
            self._service_environment = plan.notebook_service_environment(instances, self.template_namespace())
            self._checkpoint()
            if not notebook:
                # A volume that exists was initialised by an earlier run: only new ones need their service.
                instances = [i for i in instances if i.spec.key in self._new_service_volumes]
                await gather_all(docker_steps)
                await gather_all([self._wait_for_service(i, resources, progress) for i in instances])
                await self._undo(created, instances)  # prepared: what this run started goes again
                return "", 0
            await self._start_notebook(resources, image_info, extra_create, created, progress)
            await gather_all(docker_steps)
            self._checkpoint()
            await self._waiting_for(gather_all([self._wait_for_service(i, resources, progress) for i in instances]))
            if self.post_start_cmd:
                await self.post_start_exec()
            ip, port = await self.get_ip_and_port()
            self._checkpoint()
            progress.stage("server-starting", "Waiting for the server to listen")
            await self._waiting_for(self._wait_until_listening(resources.container, ip, port))
        except BaseException as error:
            # let every step's Docker calls land, so that the undo below sees (and removes) what they made
            await asyncio.gather(*docker_steps, return_exceptions=True)
            # Asked before the undo: while an engine stops its containers it still takes requests, and a network
            # removal its shutdown cuts short can keep Docker 20.10 from starting again (docs/operations.md).
            engine_stopping = await self._engine_stopping_under(error)
            await self._undo(created, instances)
            if isinstance(error, DockerGatewayError | readiness.ServiceNotReady):
                raise SpawnFailed(engine_stopping_message(error) if engine_stopping else str(error)) from error
            engine_failure = docker_failure_message(error)
            if engine_failure:
                raise SpawnFailed(engine_failure) from error
            raise
        self._started_at = time.monotonic()
        return ip, port

    async def _engine_stopping_under(self, error: BaseException) -> bool:
        """Whether the spawn failed because the Docker engine is stopping: it stops every container (they die of
        SIGTERM) before it goes away, so all the spawn sees is a workload that stopped by a signal."""
        exited = next((e for e in causes(error) if isinstance(e, WorkloadExited)), None)
        return exited is not None and exited.stopped_by_a_signal and await self.gateway.engine_stopping()

    async def _wait_until_listening(self, container: str, ip: str, port: int) -> bool:
        """Wait for the notebook to listen, failing (with its last words) if it stops first; an engine seam."""
        return await startup.wait_until_listening(self.gateway, container, ip, port, self.http_timeout)

    async def _waiting_for(self, wait: Any) -> None:
        """Run a step that only waits (no Docker object is made in it), so a cancelled spawn may interrupt it."""
        self._waiting = True
        try:
            await wait
        finally:
            self._waiting = False

    async def _ensure_image(self, progress: SpawnProgress) -> dict[str, Any]:
        image_option = self.user_options.get("image")
        if image_option:
            self.image = await self.check_allowed(image_option)
        image = self.image
        progress.stage("image", f"Checking image {image}")
        info = None if self.pull_policy.lower() == "always" else await self.gateway.inspect_image(image)
        if info is None:
            if self.pull_policy.lower() in ("never", "skip"):
                raise SpawnFailed(
                    f"image {image} is not on this Docker host and pull_policy is {self.pull_policy!r}: "
                    "an admin must build or pull it"
                )
            await self.gateway.pull_image(image, self._pull_reporter(image, progress))
            info = await self.gateway.inspect_image(image)
            if info is None:
                raise SpawnFailed(f"image {image} is missing even after pulling it")
        progress.stage("pulled", f"Image {image} is ready")
        return info

    def _pull_reporter(self, image: str, progress: SpawnProgress):
        loop = asyncio.get_running_loop()
        layers: dict[str, tuple[int, int]] = {}

        def on_record(record: dict[str, Any]) -> None:  # runs in the pool thread
            detail = record.get("progressDetail") or {}
            if record.get("id") and detail.get("total"):
                layers[record["id"]] = (detail.get("current", 0), detail["total"])
            done = sum(current for current, _ in layers.values())
            total = sum(total for _, total in layers.values())
            message = f"Pulling {image}: {done / 1e6:.0f} of {total / 1e6:.0f} MB"
            loop.call_soon_threadsafe(progress.report, pull_percent(done, total), message)

        return on_record

    async def _prepare_home(
        self, resources: names.ResourceNames, image_info: dict[str, Any], image_user: str, progress: SpawnProgress
    ) -> None:
        if not resources.home_volume:
            return
        created = await home.ensure_home_volume(
            self.gateway,
            volume=resources.home_volume,
            owner=self.owner(server=self._home_server()),
            image=self.image,
            image_id=image_info["Id"],
            image_user=image_user,
            mount_path=self.home_mount_path,
            fix_ownership=self.fix_home_ownership,
        )
        self._home_created = created
        verb = "Created" if created else "Found"
        progress.stage("volume", f"{verb} home volume {resources.home_volume}")

    async def _prepare_network(
        self, resources: names.ResourceNames, created: list[tuple[str, str]], progress: SpawnProgress
    ) -> None:
        if not self._on_private_network(resources):
            return
        made = await self.backend.ensure_network(plan.network_plan(resources.network, self.owner()))
        if made:
            created.append(("network", resources.network))
        progress.stage("network", f"Private network {resources.network} is ready")

    async def _join_network(self, network_ready: asyncio.Future, resources: names.ResourceNames) -> None:
        """Join the hub's container to the server's private network, once it exists. This runs while the
        workloads start, because Docker joins one container to one network at a time, and joining an overlay
        takes about half a second: a class's spawns would otherwise wait in one queue before starting anything."""
        await gather_all([network_ready])
        if self._on_private_network(resources):
            await self.backend.join_network(resources.network)

    async def _prepare_service_volume(
        self, spec: services.ServiceSpec, resources: names.ResourceNames
    ) -> plan.ServiceInstance:
        """The service's volume (made with a new password if missing); without a volume, a password for this run."""
        service_names = resources.services[spec.key]
        if not spec.volume:
            return plan.ServiceInstance(spec, service_names, services.new_password())
        volume = plan.service_volume_plan(spec, service_names.volume, self.owner())
        labels, made = await self.backend.ensure_volume(volume)
        password = plan.password_of_volume(labels)
        if not password:
            raise DockerGatewayError(
                f"volume {service_names.volume} of service {spec.key!r} exists but was not made by "
                "multiuser-spawner (it has no password label), so its password is unknown. Rename or remove it "
                "to start the service anew."
            )
        if made:
            self._new_service_volumes.add(spec.key)
        return plan.ServiceInstance(spec, service_names, password)

    def _security(self, cap_drop: Iterable[str], cap_add: Iterable[str]) -> plan.Security:
        """The hardening every workload of the server shares; only the capabilities differ."""
        return plan.Security(
            no_new_privileges=self.no_new_privileges,
            cap_drop=tuple(cap_drop),
            cap_add=tuple(cap_add),
            pids_limit=self.pids_limit or None,
            init=self.use_init,
        )

    async def _start_service(
        self,
        volume: asyncio.Future,
        network_ready: asyncio.Future,
        resources: names.ResourceNames,
        created: list[tuple[str, str]],
        progress: SpawnProgress,
        only_new: bool = False,
    ) -> None:
        await gather_all([network_ready, volume])
        instance: plan.ServiceInstance = volume.result()
        self._checkpoint()
        if only_new and instance.spec.key not in self._new_service_volumes:
            return
        spec = instance.spec
        if await self.gateway.inspect_image(spec.image) is None:
            raise SpawnFailed(
                f"image {spec.image} of service {spec.key!r} is not on this Docker host: an admin must build or pull it"
            )
        workload = plan.service_workload(
            instance,
            network=resources.network,
            owner=self.owner(),
            hub_fields=self.template_namespace(),
            security=self._security(cap_drop=["ALL"], cap_add=spec.cap_add),
        )
        created.append(("service", instance.names.container))
        await self.backend.start_workload(workload)
        progress.stage("service-started", f"Service {spec.key} started ({instance.names.container})")

    async def _wait_for_service(
        self, instance: plan.ServiceInstance, resources: names.ResourceNames, progress: SpawnProgress
    ) -> None:
        await self._service_ready(instance, resources)
        progress.stage("service-ready", f"Service {instance.spec.key} is ready")

    async def _service_ready(self, instance: plan.ServiceInstance, resources: names.ResourceNames) -> None:
        container = instance.names.container
        began = time.monotonic()
        backend = self.backend
        try:
            await readiness.wait_until_ready(
                plan.readiness_probe(instance, self.template_namespace()),
                f"service {instance.spec.key} (container {container})",
                instance.spec.ready_timeout,
                address_of=lambda: self._service_address(backend, instance, resources.network, began),
                run_inside=lambda command: backend.run_inside(container, command),
                logs_tail=lambda: backend.logs_tail(container),
            )
        except readiness.ServiceNotReady:
            self._settled_services.add(instance.spec.key)  # given up on: waiting again in the undo is no use
            raise
        # A cancelled wait is not settled: the undo still lets a first initialisation finish.
        self._settled_services.add(instance.spec.key)

    async def _service_address(
        self, backend: LocalEngine, instance: plan.ServiceInstance, network_name: str, since: float
    ) -> str:
        try:
            return await backend.address(instance.names.container, network_name, since)
        except DockerGatewayError as e:
            logs = await backend.logs_tail(instance.names.container)
            raise readiness.ServiceNotReady(f"service {instance.spec.key}", str(e), logs) from e

    async def _start_notebook(
        self,
        resources: names.ResourceNames,
        image_info: dict[str, Any],
        extra_create: dict[str, Any],
        created: list[tuple[str, str]],
        progress: SpawnProgress,
    ) -> None:
        workload = await self._notebook_workload(resources, image_info, extra_create)
        if not self.remove:
            existing = await self.gateway.inspect_container(resources.container)
            if existing is not None and self.backend.claims(existing):
                # DockerSpawner's remove=False: the kept container starts again, with the token it was made with
                self.object_id = existing["Id"]
                self._reuse_api_token(existing)
                self.object_name = resources.container
                await self.gateway.start_container(self.object_id)
                progress.stage("container-started", f"Started container {resources.container}")
                return
        created.append(("container", resources.container))
        self.object_id = await self.backend.start_workload(workload)
        self.object_name = resources.container
        progress.stage("container-started", f"Started container {resources.container}")

    def _reuse_api_token(self, container: dict[str, Any]) -> None:
        """A kept container still holds the token it was created with; the hub must use that one."""
        for line in container["Config"]["Env"] or []:
            if line.startswith("JUPYTERHUB_API_TOKEN="):
                self.api_token = line.split("=", 1)[1]

    def _check_user(self, user: str) -> None:
        if not self.allow_root and container_spec.is_root_user(user):
            raise SpawnFailed(
                f"image {self.image} runs as root ({user or 'no USER set'}); set a non-root user in the image or "
                "extra_create_kwargs, or allow it with c.MultiUserSpawner.allow_root = True"
            )

    async def _notebook_workload(
        self, resources: names.ResourceNames, image_info: dict[str, Any], extra_create: dict[str, Any]
    ) -> plan.Workload:
        mounts = [
            plan.Mount(source, bind["bind"], read_only=bind.get("mode", "rw").startswith("ro"))
            for source, bind in self.volume_binds.items()
            # a ``volumes`` entry on the home path is the home volume itself (see _names_for), mounted once below
            if not (resources.home_volume and same_path(bind["bind"], self.home_mount_path))
        ]
        if resources.home_volume:
            mounts.append(plan.Mount(resources.home_volume, self.home_mount_path))
        command = (self.cmd or image_info["Config"].get("Cmd") or []) + self.get_args()
        return plan.Workload(
            name=resources.container,
            image=self.image,
            command=tuple(command),
            environment=self.get_env(),
            labels=self.owner().labels(names.ROLE_NOTEBOOK),
            network=self._server_network(resources),
            mounts=tuple(mounts),
            ports=(self.port,),
            resources=plan.Resources(
                cpu_limit=self.cpu_limit,
                cpu_guarantee=self.cpu_guarantee,
                mem_limit=self.mem_limit,
                mem_guarantee=self.mem_guarantee,
            ),
            security=self._security(cap_drop=self.cap_drop, cap_add=self.cap_add),
            engine_extras={
                container_spec.EXTRA_CREATE: extra_create,
                container_spec.EXTRA_HOST_CONFIG: await self._admin_extra(self.extra_host_config),
                container_spec.EXTRA_MOUNTS: self.mount_binds,
                container_spec.EXTRA_LINKS: self.links or None,
                container_spec.EXTRA_PUBLISH_ON: None if self.use_internal_ip else self.host_ip,
            },
        )

    async def _admin_extra(self, value: Any) -> dict[str, Any]:
        value = self._eval_if_callable(value)
        if asyncio.iscoroutine(value):
            value = await value
        return self._render_templates(value or {})

    def _container_user(self, image_info: dict[str, Any], extra_create: dict[str, Any]) -> str:
        return str(extra_create.get("user") or image_info["Config"].get("User") or "")

    def get_network_ip(self, network_settings: dict[str, Any]) -> str:
        wanted = self._server_network(self.resource_names)
        networks = network_settings["Networks"]
        if wanted not in networks:
            raise SpawnFailed(f"container {self.object_name} is not on network {wanted}")
        return networks[wanted]["IPAddress"]

    async def get_ip_and_port(self) -> tuple[str, int]:
        if self.use_internal_ip and not self.use_internal_hostname:
            info = await self.gateway.inspect_container(self.object_id)
            if info is None:
                raise SpawnFailed(f"container {self.object_name} disappeared while starting")
            return self.get_network_ip(info["NetworkSettings"]), self.port
        return await super().get_ip_and_port()

    async def _undo(self, created: list[tuple[str, str]], instances: list[plan.ServiceInstance]) -> None:
        """Remove what a failed or cancelled spawn made, newest first. A service gets a clean shutdown, and one with
        a volume that has not yet said it is ready is let get there first: it may be in its first initialisation,
        and a database killed half-way through that could never start again. Whether its volume is new says nothing
        here: an earlier attempt, cancelled before the service ever ran, may have made it."""
        backend = self.backend
        first_runs = {
            i.names.container: i for i in instances if i.spec.volume and i.spec.key not in self._settled_services
        }
        for kind, name in reversed(created):
            try:
                if kind == "service":
                    if name in first_runs:
                        await self._let_service_initialise(first_runs[name])
                    await backend.stop_workload(name, self.stop_timeout, remove=True)
                elif kind == "container":
                    await backend.remove_workload(name)  # only ours: a stranger under our name stays
                elif kind == "network":
                    await backend.remove_network(name)
            except Exception:
                self.log.exception("Could not clean up %s %s after a failed spawn", kind, name)
        self.object_id = ""

    async def _let_service_initialise(self, instance: plan.ServiceInstance) -> None:
        try:
            await self._service_ready(instance, self.resource_names)
        except (DockerGatewayError, readiness.ServiceNotReady) as e:
            self.log.warning("Service %s did not finish its first start: %s", instance.names.container, e)

    # -- progress, poll, stop ------------------------------------------------------------------------------------

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        if self._progress is None:
            return
        async for event in self._progress.follow():
            yield event.as_dict()

    async def poll(self) -> int | None:
        """None while the notebook runs, else its exit code (0 when it is gone). Reads the shared container
        list, so a hundred servers' polls cost one Docker request per refresh.

        When the notebook has died (a crash, its memory limit), the hub never calls ``stop()``: the server's
        services and network are released here, so they do not run on, holding memory and an address range."""
        if self._start_task is not None and not self._start_task.done():
            # a start, or the undoing of a cancelled one, is still at work: report it running so the hub's stop()
            # comes and waits for it instead of leaving its objects behind
            return None
        status = await self._notebook_status()
        if status is None:
            await self._rejoin_hub_container()
        else:
            try:
                await self._tear_down(self.resource_names, self.stop_timeout, notebook=False)
            except (DockerGatewayError, ValueError) as e:
                self.log.warning("Could not release the services of %s's stopped server: %s", self._log_name, e)
        return status

    async def _rejoin_hub_container(self) -> None:
        """Join the hub's container to a running server's private network, once per hub process.

        A hub container made anew (``docker compose up`` after an upgrade or a config change) is on none of the
        networks its predecessor joined. The hub polls each server it finds running before it checks that it can
        reach it, and shuts down those it cannot: joining here keeps them."""
        if not self.hub_container_name or self._hub_container_joined:
            return
        resources = self.resource_names
        if self._on_private_network(resources):
            try:
                await self.backend.join_network(resources.network)
            except DockerGatewayError as e:
                self.log.warning("Could not join the hub to the network of %s's server: %s", self._log_name, e)
                return
        self._hub_container_joined = True

    async def _notebook_status(self) -> int | None:
        name = self.object_name
        if not name or not self.object_id:
            # No start was ever recorded: a hub killed mid-spawn left, at most, a container it never handed over.
            # Calling that running would make the restarted hub wait for a server URL that was never set; as
            # stopped, the hub calls stop(), which removes what the spawn made.
            return 0
        summary = await self.gateway.view.state(name, not_older_than=self._started_at)
        if summary is not None and summary.get("State") == "running":
            return None
        # Not running or not listed: rare, so ask about this one container precisely.
        info = await self.gateway.inspect_container(name)
        if info is None:
            self.object_id = ""
            return 0
        state = info["State"]
        if state["Running"]:
            return None
        self._note_why_it_stopped(info)
        return int(state.get("ExitCode") or 0)

    def _note_why_it_stopped(self, info: dict[str, Any]) -> None:
        """Keep (and log, once) that the notebook was killed by its memory limit; the hub saves the note with the
        server's state when it marks the server stopped."""
        note = stop_notes.from_container(info)
        if note is not None and note != self._stop_note:
            self._stop_note = note
            self.log.warning(note.log_message(self.user.name))

    async def stop(self, now: bool = False) -> None:
        if self._start_task is not None and not self._start_task.done():
            # a cancelled start is still undoing what it made: let it finish first
            await asyncio.gather(self._start_task, return_exceptions=True)
        try:
            await self._tear_down(self.resource_names, 0 if now else self.stop_timeout)
        except DockerGatewayError as e:
            # JupyterHub drops a failed stop's error without a word: say here what Docker refused.
            self.log.error("Could not stop %s's server: %s", self._log_name, e)
            raise
        if self.remove:
            self.object_id = ""
        self.clear_state()

    async def _tear_down(self, resources: names.ResourceNames, timeout: int, notebook: bool = True) -> None:
        """Stop the server's containers (only those that carry our label: after a spawn refused because a stranger
        holds one of our names, the stranger must be left alone); with ``remove``, remove them and the network."""
        backend = self.backend
        containers = [s.container for s in resources.services.values()]
        if notebook:
            containers.append(resources.container)
        await gather_all([backend.stop_workload(c, timeout, remove=self.remove or not notebook) for c in containers])
        if self.remove:
            await backend.remove_network(resources.network)

    async def delete_forever(self) -> None:
        """The hub deletes this server (or its user): remove its containers and network, and its volumes only
        when ``remove_volumes_on_delete`` says so. Only this hub's objects of this user (by hub and user id labels,
        see :func:`.inventory.is_owned_by`) are touched."""
        removed = await cleanup.delete_user_resources(
            self.gateway,
            self.owner(),
            self._templates(),
            remove_volumes=self.remove_volumes_on_delete,
            hub_container=self.hub_container_name,
            servername=self.name or "",
            stop_timeout=self.stop_timeout,
        )
        self.log.info("Deleted %s: %s", self._log_name, ", ".join(removed) or "nothing was left")


async def gather_all(steps: list[Any]) -> None:
    """Run ``steps`` side by side and let every one finish (so what they made is known to the undo), then raise the
    first failure."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def causes(error: BaseException) -> Iterable[BaseException]:
    """``error`` and what it was raised from, outermost first."""
    while error is not None:
        yield error
        error = error.__cause__


def engine_stopping_message(error: BaseException) -> str:
    return (
        f"the Docker engine stopped during the spawn and took its containers with it ({error}); "
        "start again once Docker is back"
    )


def docker_failure_message(error: BaseException) -> str | None:
    """The sentence for a Docker error that reached the spawn unwrapped (an engine that stopped mid-spawn, a call
    DockerSpawner's inherited code made); None for any other error. Without it the user reads a bare
    "('Connection aborted.', ...)" that does not even say Docker."""
    if isinstance(error, requests.ConnectionError):
        return f"the Docker engine could not be reached: it stopped or restarted during the spawn ({error})"
    if isinstance(error, requests.RequestException | docker.errors.DockerException):
        return f"a request to the Docker engine failed: {error}"
    return None


def check_timeouts(specs: list[services.ServiceSpec], start_timeout: float) -> None:
    """Every service must be given up on before the hub gives up on the spawn, so its own error is what is shown."""
    for spec in specs:
        if spec.ready_timeout + START_TIMEOUT_MARGIN > start_timeout:
            raise ValueError(
                f"c.MultiUserSpawner.services[{spec.key!r}].ready_timeout ({spec.ready_timeout:g} s) must be at "
                f"least {START_TIMEOUT_MARGIN} s shorter than c.Spawner.start_timeout ({start_timeout:g} s), "
                "or the hub gives up before the service can say what went wrong"
            )


def same_path(a: str, b: str) -> bool:
    """Whether two container paths name the same directory (``/home/jovyan/`` is ``/home/jovyan``)."""
    return posixpath.normpath(a) == posixpath.normpath(b)


def entry_on_path(volumes: Mapping[str, Any], path: str, render: Callable[[str], str]) -> tuple[str, str] | None:
    """The entry of a DockerSpawner ``volumes`` dict (source -> mount path, or -> ``{"bind": path, ...}``) mounted
    on ``path``, as (its source template, the source ``render`` makes of it); None when there is none."""
    for source, bind in volumes.items():
        target = bind["bind"] if isinstance(bind, dict) else bind
        if same_path(render(target), path):
            return source, render(source)
    return None


def uses_server_field(template: str) -> bool:
    """Whether a name template has a field of the server's (ours: ``{server}``, DockerSpawner's: ``{servername}``),
    so that the object it names belongs to one server rather than to the user."""
    return any(field and "server" in field for _, field, _, _ in string.Formatter().parse(template))


def fill_template(value: str, fields: dict[str, str]) -> str:
    """Fill ``{field}`` placeholders; a string that is not a template for these fields (JSON, say) stays as is."""
    try:
        return value.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError):
        return value
