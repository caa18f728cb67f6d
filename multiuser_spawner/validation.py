"""Checking a hub's configuration before any user spawns."""

from __future__ import annotations

from traitlets.config import Config


def validate_config(config: Config) -> None:
    """Raise, naming the setting, if ``config`` holds a value MultiUserSpawner cannot use.

    JupyterHub builds a spawner only when a user starts a server, so on its own a wrong setting would surface at
    the first spawn. Ending ``jupyterhub_config.py`` with ``validate_config(c)`` stops the hub at start instead.
    """
    from .spawner import MultiUserSpawner

    spawner = MultiUserSpawner(config=config)
    spawner.check_settings()
