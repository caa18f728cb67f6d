"""Example hub configuration, used by ``bash scripts/demo``.

Two tiers of users share one image: students get a small share of the machine, staff a bigger one and three
private services each (Postgres, Redis, RabbitMQ). Environment variables: ``DEMO_PASSWORD`` (default ``demo``),
``DEMO_IMAGE``, ``DEMO_POSTGRES_IMAGE``, ``DEMO_REDIS_IMAGE``, ``DEMO_RABBITMQ_IMAGE``, ``HUB_CONNECT_IP`` (the
host's docker0 address; scripts/demo finds it) and ``IDLE_TIMEOUT`` (seconds before an idle server is stopped,
default 3600).
"""

import os

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

# State files go in one ignored directory, so a demo run leaves the checkout clean and `rm -rf .demo` resets it.
os.makedirs(".demo", exist_ok=True)
c.JupyterHub.db_url = "sqlite:///.demo/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = ".demo/jupyterhub_cookie_secret"
c.ConfigurableHTTPProxy.pid_file = ".demo/jupyterhub-proxy.pid"

# Only this machine can open the demo: the shared password below is no protection on a network.
c.JupyterHub.bind_url = "http://127.0.0.1:8000"

# Containers call the hub's API. Listening on the docker0 bridge address reaches them without exposing the API on
# every interface, as hub_ip = "0.0.0.0" would.
hub_connect_ip = os.environ.get("HUB_CONNECT_IP", "172.17.0.1")
c.JupyterHub.hub_ip = hub_connect_ip
c.JupyterHub.hub_connect_ip = hub_connect_ip

# Demo logins: one shared password, and only the listed users may log in. Use a real authenticator in production.
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ.get("DEMO_PASSWORD", "demo")
c.Authenticator.allowed_users = {"student1", "staff1"}
c.Authenticator.admin_users = {"admin"}

# Hub groups decide each user's tier (group_overrides below); a real deployment would get them from its
# authenticator or manage them in the admin page.
c.JupyterHub.load_groups = {
    "students": {"users": ["student1"]},
    "staff": {"users": ["staff1"]},
}

# One image for everyone; each user gets their own container and a home volume that outlives it.
c.JupyterHub.spawner_class = "multiuser"
c.MultiUserSpawner.image = os.environ.get("DEMO_IMAGE", "multiuser-spawner/singleuser:latest")

# The services a tier may have (turned on per tier below). The presets fill in everything else; these images are
# built offline by images/build.sh, and the official postgres, redis and rabbitmq images work as well.
staff_services = {
    "db": {"preset": "postgres", "image": os.environ.get("DEMO_POSTGRES_IMAGE", "multiuser-spawner/postgres:15")},
    "cache": {"preset": "redis", "image": os.environ.get("DEMO_REDIS_IMAGE", "multiuser-spawner/redis:7")},
    "queue": {"preset": "rabbitmq", "image": os.environ.get("DEMO_RABBITMQ_IMAGE", "multiuser-spawner/rabbitmq:3")},
}

# Tiers by group. Limits are hard caps; guarantees are what a user keeps when the machine is busy. Overrides apply
# in key order, so a user in both groups ends up with the staff tier.
c.MultiUserSpawner.group_overrides = {
    "10-students": {
        "groups": ["students"],
        "spawner_override": {
            "cpu_limit": 0.5,
            "mem_limit": "512M",
            "cpu_guarantee": 0.25,
            "mem_guarantee": "256M",
        },
    },
    "20-staff": {
        "groups": ["staff"],
        "spawner_override": {
            "cpu_limit": 1.0,
            "mem_limit": "1G",
            "cpu_guarantee": 0.5,
            "mem_guarantee": "512M",
            # each staff server gets its own Postgres, Redis and RabbitMQ, reachable as db, cache and queue
            "services": staff_services,
        },
    },
}

# Idle servers go, work stays: the hub runs jupyterhub-idle-culler beside itself, which stops every server idle for
# longer than IDLE_TIMEOUT (an hour by default; activity is what the notebook server reports to the hub: requests
# from the user's browser, kernels running code). Stopping removes the server's containers and network; its home
# and service volumes stay, so the next start finds every file and row. The role gives the culler only the scopes
# it needs (see docs/classroom.md).
from multiuser_spawner.culler import idle_culler  # noqa: E402

culler_service, culler_role = idle_culler(timeout=int(os.environ.get("IDLE_TIMEOUT", "3600")))
c.JupyterHub.services = [culler_service]
c.JupyterHub.load_roles = [culler_role]

# Check the spawner settings now: a mistake stops the hub at start, naming the setting, not at a user's first spawn.
from multiuser_spawner import validate_config  # noqa: E402 - after the settings it checks

validate_config(c)
