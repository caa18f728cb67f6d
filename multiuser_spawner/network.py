"""A user's private network: created before the user's containers, removed after them.

With the hub itself in a container, the hub container joins every user network, so the hub and the notebook
reach each other there while other users' notebooks do not.
"""

from __future__ import annotations

from .container_spec import network_config
from .docker_gateway import DockerGateway, DockerGatewayError
from .names import ROLE_NETWORK, labels

# Docker's own words when its address pools are used up. Its default pools hold about 30 bridge networks, and
# every running server with a database needs one: a class of 40 runs out.
POOLS_EXHAUSTED = "non-overlapping IPv4 address pool"
POOLS_HINT = (
    "Docker has no address range left for another network, and each running server with a database needs one "
    "(Docker's default pools hold about 30). Give Docker more, smaller ranges in /etc/docker/daemon.json, e.g. "
    '"default-address-pools": [{"base": "10.200.0.0/16", "size": 24}] (256 networks), and restart Docker.'
)


async def ensure_user_network(
    gateway: DockerGateway, name: str, username: str, servername: str, hub_container: str
) -> bool:
    """Make the network (if missing) and join the hub's container to it; True when the network is new."""
    try:
        created = await gateway.ensure_network(
            network_config(name=name, labels=labels(ROLE_NETWORK, username, servername))
        )
    except DockerGatewayError as e:
        if POOLS_EXHAUSTED in str(e):
            raise DockerGatewayError(f"{e}. {POOLS_HINT}") from e
        raise
    if hub_container:
        await gateway.connect_network(name, hub_container)
    return created


async def remove_user_network(gateway: DockerGateway, name: str, hub_container: str) -> None:
    """Remove the network once its users are gone; the hub's container leaves it first."""
    if hub_container:
        await gateway.disconnect_network(name, hub_container)
    await gateway.remove_network(name)
