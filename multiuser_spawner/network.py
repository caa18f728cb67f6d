"""A user's private network: created before the user's containers, removed after them.

With the hub itself in a container, the hub container joins every user network, so the hub and the notebook
reach each other there while other users' notebooks do not.
"""

from __future__ import annotations

from .container_spec import network_config
from .docker_gateway import DockerGateway
from .names import ROLE_NETWORK, labels


async def ensure_user_network(
    gateway: DockerGateway, name: str, username: str, servername: str, hub_container: str
) -> bool:
    """Make the network (if missing) and join the hub's container to it; True when the network is new."""
    created = await gateway.ensure_network(network_config(name=name, labels=labels(ROLE_NETWORK, username, servername)))
    if hub_container:
        await gateway.connect_network(name, hub_container)
    return created


async def remove_user_network(gateway: DockerGateway, name: str, hub_container: str) -> None:
    """Remove the network once its users are gone; the hub's container leaves it first."""
    if hub_container:
        await gateway.disconnect_network(name, hub_container)
    await gateway.remove_network(name)
