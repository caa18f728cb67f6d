"""Checking a hub's configuration before any user spawns."""

from __future__ import annotations

from traitlets.config import Config


def validate_config(config: Config) -> None:
    """Raise, naming the setting, if ``config`` holds a value MultiUserSpawner cannot use.

    JupyterHub builds a spawner only when a user starts a server, so on its own a wrong setting would surface at
    the first spawn. Ending ``jupyterhub_config.py`` with ``validate_config(c)`` stops the hub at start instead.
    """
    from .spawner import MultiUserSpawner
    from .swarm_spawner import MultiUserSwarmSpawner

    # the Swarm spawner has checks of its own: use it when the hub does
    chosen = config.JupyterHub.get("spawner_class") if "JupyterHub" in config else None
    swarm = chosen in ("multiuser-swarm", MultiUserSwarmSpawner) or (
        isinstance(chosen, str) and chosen.endswith("MultiUserSwarmSpawner")
    )
    spawner = (MultiUserSwarmSpawner if swarm else MultiUserSpawner)(config=config)
    spawner.check_settings()
