"""The hub's configuration in a container, for ``deploy/compose.yaml`` (one Docker host, see docs/compose.md) and
``deploy/stack.yaml`` (a Docker Swarm, see docs/swarm.md).

Compose (or ``docker stack deploy``) mounts this file into the hub's container; edit it, then restart the hub.
Settings that differ between sites come from the environment, set in compose.yaml or an ``.env`` file beside it
(stack.yaml: the deploying shell's environment):

- ``MUS_SPAWNER``: ``multiuser`` (the default: users' containers on this Docker host) or ``multiuser-swarm``
  (users' services anywhere on the swarm; stack.yaml sets it);
- ``HUB_CONTAINER_NAME``: the hub container's name (compose.yaml sets it from ``container_name``; on a swarm the hub
  launcher, ``multiuser_spawner.hub_launcher``, names the container it runs the hub in);
- ``GITHUB_CLIENT_ID``, ``GITHUB_CLIENT_SECRET``, ``OAUTH_CALLBACK_URL``: the GitHub OAuth app users log in with;
- ``GITHUB_ALLOWED_ORGANIZATIONS``, ``HUB_ALLOWED_USERS``, ``HUB_ADMIN_USERS``: comma-separated GitHub organisations
  whose members may log in, GitHub accounts that may log in, and the hub's admins among them;
- ``HUB_ADMIN_API_TOKEN``: when set, a service ``admin-api`` with that token may manage users and servers through
  the REST API (scripts, the tests); leave it empty to have no such token;
- ``MUS_PREFIX``: the prefix of every Docker object the spawner makes (default ``jupyter``);
- ``MUS_SINGLEUSER_IMAGE``, ``MUS_POSTGRES_IMAGE``: the notebook's and the database's images.
"""

import os

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

spawner_class = os.environ.get("MUS_SPAWNER", "multiuser")
if spawner_class not in ("multiuser", "multiuser-swarm"):
    raise ValueError(f"MUS_SPAWNER is {spawner_class!r}: it must be multiuser (one host) or multiuser-swarm")
hub_container = os.environ.get("HUB_CONTAINER_NAME", "jupyterhub")

# -- the hub's own state: on the volume compose mounts on /srv/jupyterhub/data, so it outlives the container --------
c.JupyterHub.db_url = "sqlite:////srv/jupyterhub/data/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "/srv/jupyterhub/data/jupyterhub_cookie_secret"
c.ConfigurableHTTPProxy.pid_file = "/srv/jupyterhub/data/jupyterhub-proxy.pid"

# -- networking -----------------------------------------------------------------------------------------------------
# The proxy (started by the hub, in this container) serves users on port 8000; compose publishes it.
c.JupyterHub.bind_url = "http://:8000"
# The hub joins each server's private network (on a swarm: its overlay), where the notebook reaches it by this
# container's name.
c.MultiUserSpawner.hub_container_name = hub_container
c.JupyterHub.hub_ip = "0.0.0.0"
c.JupyterHub.hub_connect_ip = hub_container
# Restarting or upgrading the hub's container must not stop the users' servers: the new hub finds them running.
c.JupyterHub.cleanup_servers = False


# -- who may log in: GitHub accounts, through OAuthenticator ----------------------------------------------------------
# Register an OAuth app on GitHub (docs/compose.md) and put its id and secret in deploy/.env. Any other
# OAuthenticator (GitLab, Google, Azure AD, a generic OpenID Connect provider) is configured the same way.
def names_in(variable: str, default: str = "") -> set[str]:
    return {name.strip() for name in os.environ.get(variable, default).split(",") if name.strip()}


for variable in ("GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET", "OAUTH_CALLBACK_URL"):
    if not os.environ.get(variable):
        raise ValueError(
            f"{variable} is not set: register an OAuth app on GitHub and set GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET "
            "and OAUTH_CALLBACK_URL in deploy/.env (see docs/compose.md)"
        )
c.JupyterHub.authenticator_class = "github"
c.GitHubOAuthenticator.oauth_callback_url = os.environ["OAUTH_CALLBACK_URL"]
# who may log in: these GitHub accounts, and the members of these organisations
c.GitHubOAuthenticator.allowed_organizations = names_in("GITHUB_ALLOWED_ORGANIZATIONS")
c.Authenticator.allowed_users = names_in("HUB_ALLOWED_USERS")
c.Authenticator.admin_users = names_in("HUB_ADMIN_USERS")

# An API token for scripts, only when one is given.
admin_api_token = os.environ.get("HUB_ADMIN_API_TOKEN", "")
if admin_api_token:
    c.JupyterHub.services = [{"name": "admin-api", "api_token": admin_api_token}]
    c.JupyterHub.load_roles = [
        {
            "name": "admin-api",
            "scopes": ["admin:users", "admin:servers", "admin:groups", "access:servers", "list:users"],
            "services": ["admin-api"],
        }
    ]

# -- the users' servers ---------------------------------------------------------------------------------------------
c.JupyterHub.spawner_class = spawner_class
c.MultiUserSpawner.prefix = os.environ.get("MUS_PREFIX", "jupyter")
c.MultiUserSpawner.image = os.environ.get("MUS_SINGLEUSER_IMAGE", "multiuser-spawner/singleuser:latest")
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 60

# Tiers by hub group (made and filled in the admin page, /hub/admin): everyone gets the students' share; members
# of "databases" also get a private Postgres, reachable from their notebook as "db" with PG* variables set.
c.MultiUserSpawner.cpu_limit = 1.0
c.MultiUserSpawner.mem_limit = "1G"
c.MultiUserSpawner.group_overrides = {
    "10-databases": {
        "groups": ["databases"],
        "spawner_override": {
            "services": {
                "db": {
                    "preset": "postgres",
                    "image": os.environ.get("MUS_POSTGRES_IMAGE", "multiuser-spawner/postgres:15"),
                }
            }
        },
    },
}

# Check the spawner settings now: a mistake stops the hub at start, naming the setting.
from multiuser_spawner import validate_config  # noqa: E402 - after the settings it checks

validate_config(c)
