"""Idle servers go, work stays: jupyterhub-idle-culler as a service the hub starts and stops itself.

The culler asks the hub's REST API which servers have been idle longer than a timeout and stops them, as the user
would from the home page: the spawner's ``stop()`` removes the server's containers and network and keeps its
volumes, so the next start finds every file and row. This module only builds the hub's settings for it.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

CULLER_MODULE = "jupyterhub_idle_culler"
CULLER_PACKAGE = "jupyterhub-idle-culler"

#: what the culler needs to find idle servers and stop them (JupyterHub's role scopes)
CULLER_SCOPES = ("list:users", "read:users:activity", "read:servers", "delete:servers")
#: needed only to delete idle *users* as well (``cull_users``), which a classroom does not want
CULL_USERS_SCOPE = "admin:users"


def idle_culler(
    timeout: int,
    cull_every: int = 0,
    *,
    name: str = "idle-culler",
    cull_users: bool = False,
    extra_args: tuple[str, ...] = (),
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hub-managed service running the culler and the role giving it its scopes, to add to
    ``c.JupyterHub.services`` and ``c.JupyterHub.load_roles``.

    ``timeout``: seconds without activity after which a server is stopped; ``cull_every``: seconds between two
    checks (0: the culler's default, half the timeout). Raises ``ValueError`` naming the wrong argument, and when
    the culler is not installed in the hub's environment, so the hub stops at start instead of running without it.
    """
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
        raise ValueError(f"idle_culler(timeout={timeout!r}): the idle timeout must be a positive number of seconds")
    if not isinstance(cull_every, int) or isinstance(cull_every, bool) or cull_every < 0:
        raise ValueError(f"idle_culler(cull_every={cull_every!r}): must be a number of seconds, or 0 for timeout/2")
    if importlib.util.find_spec(CULLER_MODULE) is None:
        raise ValueError(
            f"idle_culler(): {CULLER_PACKAGE} is not installed in the hub's Python environment "
            f"({sys.executable}); install it with `pip install {CULLER_PACKAGE}` or `pip install "
            "multiuser-spawner[classroom]`"
        )
    command = [sys.executable, "-m", CULLER_MODULE, f"--timeout={timeout}"]
    if cull_every:
        command.append(f"--cull-every={cull_every}")
    if cull_users:
        command.append("--cull-users=true")
    command += list(extra_args)
    scopes = list(CULLER_SCOPES) + ([CULL_USERS_SCOPE] if cull_users else [])
    service = {"name": name, "command": command}
    role = {"name": name, "scopes": scopes, "services": [name]}
    return service, role
