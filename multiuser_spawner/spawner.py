"""MultiUserSpawner: the orchestration. Each step is a call into a focused module:

- :mod:`.names`: what every object is called and labelled;
- :mod:`.container_spec`: what the containers look like (pure);
- :mod:`.docker_gateway`: the only code that talks to Docker;
- :mod:`.home`, :mod:`.network`, :mod:`.sidecar`: the home volume, the private network, the database;
- :mod:`.progress`: what the spawn page shows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from dockerspawner import DockerSpawner
from tornado import web
from traitlets import default

from . import cleanup, container_spec, home, names, network, profiles, sidecar, startup
from .docker_gateway import DockerGateway, DockerGatewayError, ensure_ours, is_ours
from .progress import SpawnProgress, pull_percent
from .settings import MultiUserSettings


class SpawnCancelled(RuntimeError):
    """The user stopped the server while it was starting."""


class SpawnFailed(RuntimeError):
    """A spawn step failed. The message (shown to the user on the spawn page) says which and why."""

    def __init__(self, message: str):
        super().__init__(message)
        # JupyterHub shows this instead of "Internal Server Error" when a spawn fails within its request
        self.jupyterhub_message = message


class MultiUserSpawner(MultiUserSettings, DockerSpawner):
    """One image, many users: a container, a home volume, limits and an optional private database per user."""

    _gateways: ClassVar[dict[type, DockerGateway]] = {}

    _progress: SpawnProgress | None = None
    _started_at: float = float("-inf")
    _db_credentials: sidecar.DatabaseCredentials | None = None
    _start_task: asyncio.Task | None = None
    _cancel_requested = False
    _waiting = False
    _database_ready = False
    _database_volume_new = False

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

    def check_settings(self) -> None:
        """Checks that need more than one setting, or DockerSpawner's; single settings check themselves."""
        try:
            names.validate_prefix(self.prefix)
        except ValueError as e:
            raise ValueError(f"c.MultiUserSpawner.prefix: {e}") from None
        self._profiles()

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
            self._gateways[cls] = DockerGateway.connect(
                self.client_kwargs, self.docker_api_concurrency, max_age, tls_config=self.tls_config
            )
        return self._gateways[cls]

    @property
    def client(self):
        return self.gateway.client

    def docker(self, method: str, *args: Any, **kwargs: Any) -> asyncio.Future:
        """DockerSpawner's by-name entry point, kept for its inherited helpers and for subclasses."""
        return asyncio.ensure_future(self.gateway.call(method, *args, **kwargs))

    # -- names and environment ----------------------------------------------------------------------------------

    def template_namespace(self) -> dict[str, str]:
        namespace = super().template_namespace()
        namespace.update(names.template_fields(self.prefix, self.user.name, self.name or ""))
        return namespace

    @default("object_name")
    def _object_name_default(self) -> str:
        if self.user is None:  # a spawner made only to check the configuration (validate_config)
            return ""
        return names.render_name(self.name_template, self.template_namespace(), "name_template")

    @property
    def resource_names(self) -> names.ResourceNames:
        templates = names.NameTemplates(
            container=self.name_template,
            home_volume=self.home_volume_name_template,
            network=self.network_name_template,
            database_container=self.database_container_name_template,
            database_volume=self.database_volume_name_template,
        )
        resolved = names.resource_names(templates, self.template_namespace())
        # A running server keeps the container name it was started with, whatever the template says now.
        if self.object_name and self.object_name != resolved.container:
            resolved = names.ResourceNames(
                self.object_name,
                resolved.home_volume,
                resolved.network,
                resolved.database_container,
                resolved.database_volume,
            )
        return resolved

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        namespace = self.template_namespace()
        for key, value in self.environment.items():
            if isinstance(value, str):
                env[key] = fill_template(value, namespace)
        if self.user_id_env:
            env[self.user_id_env] = fill_template(self.user_id_template, namespace)
        if self._db_credentials is not None:
            env.update(sidecar.notebook_environment(self._db_credentials))
        return env

    # -- start ---------------------------------------------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        # The hub cancels start() when the user stops a server that is still starting, then calls stop() a second
        # later. A Docker call under way cannot be called back, and a database interrupted in its first
        # initialisation is broken for good, so the work runs in its own task: a cancel only asks it to stop at its
        # next step (at once, while it merely waits) and undo what it made; stop() waits for that.
        self._cancel_requested = False
        # made here, not in the task: the hub may ask for progress before the task first runs
        self._progress = SpawnProgress()
        self._start_task = task = asyncio.ensure_future(self._start(self._progress))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # its error is the spawn's, not a leak
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._cancel_requested = True
            if self._waiting:
                task.cancel()
            raise

    def _checkpoint(self) -> None:
        if self._cancel_requested:
            raise SpawnCancelled("the spawn was cancelled")

    async def _start(self, progress: SpawnProgress) -> tuple[str, int]:
        self._database_ready = False
        self._database_volume_new = False
        self.check_settings()
        resources = self.resource_names
        created: list[tuple[str, str]] = []  # (kind, name) made by this attempt, undone if it fails
        database_task: asyncio.Task | None = None
        try:
            image_info = await self._ensure_image(progress)
            self._checkpoint()
            # Home volume, network and database volume are independent: make them side by side. The database
            # starts as soon as its network and volume exist; the notebook also needs its home and the database's
            # credentials (kept on the data volume), then starts beside the database.
            preparations = [self._prepare_home(resources, image_info, progress)]
            if self.database_enabled:
                database_prepared = asyncio.ensure_future(self._prepare_database(resources, created, progress))
                database_task = asyncio.ensure_future(
                    self._start_database(database_prepared, resources, created, progress)
                )
                preparations.append(database_prepared)
            await gather_all(preparations)
            self._checkpoint()
            await self._start_notebook(resources, image_info, created, progress)
            if database_task is not None:
                await database_task
                self._checkpoint()
                await self._waiting_for(self._wait_for_database(resources, progress))
            if self.post_start_cmd:
                await self.post_start_exec()
            ip, port = await self.get_ip_and_port()
            self._checkpoint()
            progress.stage("server-starting", "Waiting for the server to listen")
            await self._waiting_for(
                startup.wait_until_listening(self.gateway, resources.container, ip, port, self.http_timeout)
            )
        except BaseException as error:
            if database_task is not None:
                # let its Docker calls land, so that the undo below sees (and removes) what they made
                await asyncio.gather(database_task, return_exceptions=True)
            await self._undo(created, resources)
            if isinstance(error, DockerGatewayError):
                raise SpawnFailed(str(error)) from error
            raise
        self._started_at = time.monotonic()
        return ip, port

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
        self, resources: names.ResourceNames, image_info: dict[str, Any], progress: SpawnProgress
    ) -> None:
        if not resources.home_volume:
            return
        created = await home.ensure_home_volume(
            self.gateway,
            volume=resources.home_volume,
            username=self.user.name,
            servername=self.name if "{server" in self.home_volume_name_template else "",
            image=self.image,
            image_id=image_info["Id"],
            image_user=self._container_user(image_info),
            mount_path=self.home_mount_path,
            fix_ownership=self.fix_home_ownership,
        )
        verb = "Created" if created else "Found"
        progress.stage("volume", f"{verb} home volume {resources.home_volume}")

    async def _prepare_database(
        self, resources: names.ResourceNames, created: list[tuple[str, str]], progress: SpawnProgress
    ) -> None:
        await gather_all(
            [self._prepare_private_network(resources, created, progress), self._prepare_database_volume(resources)]
        )

    async def _prepare_private_network(
        self, resources: names.ResourceNames, created: list[tuple[str, str]], progress: SpawnProgress
    ) -> None:
        made = await network.ensure_user_network(
            self.gateway, resources.network, self.user.name, self.name or "", self.hub_container_name
        )
        if made:
            created.append(("network", resources.network))
        progress.stage("network", f"Private network {resources.network} is ready")

    async def _prepare_database_volume(self, resources: names.ResourceNames) -> None:
        password, self._database_volume_new = await sidecar.ensure_data_volume(
            self.gateway, resources.database_volume, self.user.name, self.name or ""
        )
        self._db_credentials = sidecar.DatabaseCredentials(
            host=self.database_hostname,
            port=self.database_port,
            user=self.database_user,
            password=password,
            name=self.database_name,
            scheme=self.database_url_scheme,
        )

    async def _start_database(
        self,
        prepared: asyncio.Future,
        resources: names.ResourceNames,
        created: list[tuple[str, str]],
        progress: SpawnProgress,
    ) -> None:
        await prepared  # its network and data volume (with the credentials)
        self._checkpoint()
        credentials = self._db_credentials
        spec = container_spec.database_container(
            name=resources.database_container,
            image=self.database_image,
            environment=sidecar.render_database_env(self.database_env, credentials),
            labels=names.labels(names.ROLE_DATABASE, self.user.name, self.name or ""),
            network=resources.network,
            hostname_alias=self.database_hostname,
            data_volume=resources.database_volume,
            data_path=self.database_data_path,
            resources=container_spec.Resources(cpu_limit=self.database_cpu_limit, mem_limit=self.database_mem_limit),
            security=self._security(cap_drop=["ALL"], cap_add=self.database_cap_add),
            stop_signal=self.database_stop_signal,
        )
        if await self.gateway.inspect_image(self.database_image) is None:
            raise SpawnFailed(
                f"database image {self.database_image} is not on this Docker host: an admin must build or pull it"
            )
        created.append(("container", resources.database_container))
        await sidecar.start_database(self.gateway, spec, recreate=self.remove)
        progress.stage("database-started", f"Database {resources.database_container} started")

    async def _wait_for_database(self, resources: names.ResourceNames, progress: SpawnProgress) -> None:
        await sidecar.wait_until_ready(
            self.gateway, resources.database_container, self._database_readiness(), self.database_ready_timeout
        )
        self._database_ready = True
        progress.stage("database-ready", "Database is accepting connections")

    def _database_readiness(self) -> sidecar.ReadinessCheck:
        """The admin's ready command, run in the container; without one, Postgres asked by the hub itself."""
        if not self.database_ready_command:
            return sidecar.postgres_readiness(self._db_credentials)
        fields = self._db_credentials.template_fields()
        command = tuple(fill_template(part, fields) for part in self.database_ready_command)
        return sidecar.ReadinessCheck(port=self.database_port, command=command)

    async def _start_notebook(
        self,
        resources: names.ResourceNames,
        image_info: dict[str, Any],
        created: list[tuple[str, str]],
        progress: SpawnProgress,
    ) -> None:
        existing = await self.gateway.inspect_container(resources.container)
        if existing is not None:
            ensure_ours(existing)
        if existing is not None and self.remove:
            self.log.warning("Removing leftover container %s", resources.container)
            await self.gateway.remove_container(resources.container)
            existing = None
        if existing is None:
            spec = await self._notebook_spec(resources, image_info)
            created.append(("container", resources.container))
            self.object_id = await self.gateway.create_container(spec)
            progress.stage("container-created", f"Created container {resources.container}")
        else:
            self.object_id = existing["Id"]
            self._reuse_api_token(existing)
        self.object_name = resources.container
        await self.gateway.start_container(self.object_id)
        progress.stage("container-started", f"Started container {resources.container}")

    def _reuse_api_token(self, container: dict[str, Any]) -> None:
        """A kept container still holds the token it was created with; the hub must use that one."""
        for line in container["Config"]["Env"] or []:
            if line.startswith("JUPYTERHUB_API_TOKEN="):
                self.api_token = line.split("=", 1)[1]

    async def _notebook_spec(
        self, resources: names.ResourceNames, image_info: dict[str, Any]
    ) -> container_spec.ContainerSpec:
        user = self._container_user(image_info)
        if not self.allow_root and container_spec.is_root_user(user):
            raise SpawnFailed(
                f"image {self.image} runs as root ({user or 'no USER set'}); set a non-root user in the image or "
                "extra_create_kwargs, or allow it with c.MultiUserSpawner.allow_root = True"
            )
        binds = dict(self.volume_binds)
        if resources.home_volume:
            binds[resources.home_volume] = {"bind": self.home_mount_path, "mode": "rw"}
        command = (self.cmd or image_info["Config"].get("Cmd") or []) + self.get_args()
        return container_spec.notebook_container(
            name=resources.container,
            image=self.image,
            command=command,
            environment=self.get_env(),
            labels=names.labels(names.ROLE_NOTEBOOK, self.user.name, self.name or ""),
            port=self.port,
            network=self._server_network(resources),
            binds=binds,
            mounts=self.mount_binds,
            resources=container_spec.Resources(
                cpu_limit=self.cpu_limit,
                cpu_guarantee=self.cpu_guarantee,
                mem_limit=self.mem_limit,
                mem_guarantee=self.mem_guarantee,
            ),
            security=self._security(cap_drop=self.cap_drop, cap_add=self.cap_add),
            publish_on=None if self.use_internal_ip else self.host_ip,
            links=self.links or None,
            extra_create=await self._admin_extra(self.extra_create_kwargs),
            extra_host_config=await self._admin_extra(self.extra_host_config),
        )

    def _security(self, cap_drop: list[str], cap_add: list[str]) -> container_spec.Security:
        return container_spec.Security(
            no_new_privileges=self.no_new_privileges,
            cap_drop=tuple(cap_drop),
            cap_add=tuple(cap_add),
            pids_limit=self.pids_limit or None,
            init=self.use_init,
        )

    async def _admin_extra(self, value: Any) -> dict[str, Any]:
        value = self._eval_if_callable(value)
        if asyncio.iscoroutine(value):
            value = await value
        return self._render_templates(value or {})

    def _container_user(self, image_info: dict[str, Any]) -> str:
        extra = self.extra_create_kwargs if isinstance(self.extra_create_kwargs, dict) else {}
        return str(extra.get("user") or image_info["Config"].get("User") or "")

    def _server_network(self, resources: names.ResourceNames) -> str:
        return resources.network if self.database_enabled else self.network_name

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

    async def _undo(self, created: list[tuple[str, str]], resources: names.ResourceNames) -> None:
        """Remove what a failed or cancelled spawn made, newest first. The database gets a clean shutdown, and a
        first initialisation is let finish: a database killed half-way through it could never start again."""
        for kind, name in reversed(created):
            try:
                if kind == "container" and not await self._is_our_container(name):
                    continue  # a stranger under our name (the spawn failed on it): never touch it
                if kind == "container" and name == resources.database_container:
                    if self._database_volume_new and not self._database_ready:
                        await self._let_database_initialise(name)
                    await self.gateway.stop_container(name, self.stop_timeout)
                    await self.gateway.remove_container(name)
                elif kind == "container":
                    await self.gateway.remove_container(name)
                elif kind == "network":
                    await network.remove_user_network(self.gateway, name, self.hub_container_name)
            except Exception:
                self.log.exception("Could not clean up %s %s after a failed spawn", kind, name)
        self.object_id = ""

    async def _is_our_container(self, name: str) -> bool:
        info = await self.gateway.inspect_container(name)
        return info is not None and is_ours(info)

    async def _let_database_initialise(self, container: str) -> None:
        try:
            await sidecar.wait_until_ready(
                self.gateway, container, self._database_readiness(), self.database_ready_timeout
            )
        except DockerGatewayError as e:
            self.log.warning("Database %s did not finish its first start: %s", container, e)

    # -- progress, poll, stop ------------------------------------------------------------------------------------

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        if self._progress is None:
            return
        async for event in self._progress.follow():
            yield event.as_dict()

    async def poll(self) -> int | None:
        """None while the container runs, else its exit code (0 when it is gone). Reads the shared container
        list, so a hundred servers' polls cost one Docker request per refresh."""
        if self._start_task is not None and not self._start_task.done():
            # a start, or the undoing of a cancelled one, is still at work: report it running so the hub's stop()
            # comes and waits for it instead of leaving its objects behind
            return None
        name = self.object_name
        if not name:
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
        if state.get("OOMKilled"):
            self.log.warning("Container %s was killed by its memory limit (%s bytes)", name, self.mem_limit)
        return int(state.get("ExitCode") or 0)

    async def stop(self, now: bool = False) -> None:
        if self._start_task is not None and not self._start_task.done():
            # a cancelled start is still undoing what it made: let it finish first
            await asyncio.gather(self._start_task, return_exceptions=True)
        resources = self.resource_names
        timeout = 0 if now else self.stop_timeout
        # Only what carries our label: after a spawn refused because a stranger holds one of our names, the hub
        # calls stop(), and the stranger must be left alone.
        found = await asyncio.gather(
            self.gateway.inspect_container(resources.container),
            self.gateway.inspect_container(resources.database_container),
        )
        ours = [info["Id"] for info in found if info is not None and is_ours(info)]
        await asyncio.gather(*(self.gateway.stop_container(c, timeout) for c in ours))
        if self.remove:
            await asyncio.gather(*(self.gateway.remove_container(c) for c in ours))
            user_network = await self.gateway.inspect_network(resources.network)
            if user_network is not None and is_ours(user_network):
                await network.remove_user_network(self.gateway, resources.network, self.hub_container_name)
            self.object_id = ""
        self.clear_state()

    async def delete_forever(self) -> None:
        """The hub deletes this server (or its user): remove its containers and network, and its volumes only
        when ``remove_volumes_on_delete`` says so. Only this hub's objects (by name prefix) are touched."""
        removed = await cleanup.delete_user_resources(
            self.gateway,
            self.user.name,
            remove_volumes=self.remove_volumes_on_delete,
            hub_container=self.hub_container_name,
            servername=self.name or "",
            name_prefix=f"{self.prefix}-",
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


def fill_template(value: str, fields: dict[str, str]) -> str:
    """Fill ``{field}`` placeholders; a string that is not a template for these fields (JSON, say) stays as is."""
    try:
        return value.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError):
        return value
