"""A server's private network: created before its containers, removed after them.

Every server has one, with or without services: the notebook and its services sit on it, no other user's
notebook does, so students cannot reach each other's servers. The hub on the host reaches each network through its
bridge; a hub in a container joins every network.
"""

from __future__ import annotations

from . import addresses
from .container_spec import network_config
from .docker_gateway import DockerGateway, DockerGatewayError, is_ours
from .plan import NetworkPlan

# Docker's own words when its address pools are used up, or when a chosen subnet was taken meanwhile.
POOLS_EXHAUSTED = "non-overlapping IPv4 address pool"
SUBNET_TAKEN = "overlaps"
POOLS_HINT = (
    "Docker has no address range left for another network, and each running server needs one (Docker's default "
    "pools hold about 30). Set c.MultiUserSpawner.network_address_pool (e.g. '10.201.0.0/16') so the spawner "
    "gives each server a small subnet of its own, or give Docker more, smaller ranges in /etc/docker/daemon.json, "
    'e.g. "default-address-pools": [{"base": "10.200.0.0/16", "size": 24}], and restart Docker.'
)
MAX_SUBNET_TRIES = 8


class AddressPool:
    """Subnets for new networks from one pool. Subnets chosen by this hub but not yet listed by Docker are held
    back, so concurrent spawns do not pick the same one."""

    def __init__(self, pool: str, prefixlen: int):
        self.pool = addresses.parse_pool(pool, prefixlen)
        self.prefixlen = prefixlen
        self._pending: set[str] = set()

    async def create(self, gateway: DockerGateway, plan: NetworkPlan) -> bool:
        """Create the network on a free subnet; True when made now, False when it appeared meanwhile."""
        start_at = addresses.first_choice(plan.name, self.pool, self.prefixlen)
        refused: list[str] = []
        for _ in range(MAX_SUBNET_TRIES):
            taken = addresses.subnets_in_use(await gateway.list_networks([]))
            subnet = addresses.free_subnet(self.pool, self.prefixlen, [*taken, *self._pending, *refused], start_at)
            if subnet is None:
                raise DockerGatewayError(
                    f"creating network {plan.name} failed: network_address_pool {self.pool} has no free /"
                    f"{self.prefixlen} left; give it a larger range or smaller subnets (network_subnet_size)"
                )
            cidr = str(subnet)
            self._pending.add(cidr)
            try:
                return await gateway.ensure_network(network_config(name=plan.name, labels=plan.labels, subnet=cidr))
            except DockerGatewayError as e:
                if SUBNET_TAKEN not in str(e):
                    raise
                refused.append(cidr)  # another engine user took it between our listing and our create
            finally:
                self._pending.discard(cidr)
        raise DockerGatewayError(f"creating network {plan.name} failed: every subnet tried was taken meanwhile")


async def ensure_user_network(gateway: DockerGateway, plan: NetworkPlan, pool: AddressPool | None = None) -> bool:
    """Make the network (if missing); True when it is new. A network of that name that we did not make is refused,
    as a container would be."""
    existing = await gateway.inspect_network(plan.name)
    if existing is not None and not is_ours(existing):
        raise DockerGatewayError(
            f"the network name {plan.name} is taken by a network multiuser-spawner did not create; "
            "an admin must rename or remove that network"
        )
    created = False
    if existing is None:
        try:
            if pool is not None:
                created = await pool.create(gateway, plan)
            else:
                created = await gateway.ensure_network(network_config(name=plan.name, labels=plan.labels))
        except DockerGatewayError as e:
            if POOLS_EXHAUSTED in str(e):
                raise DockerGatewayError(f"{e}. {POOLS_HINT}") from e
            raise
    return created


async def join_hub(gateway: DockerGateway, name: str, hub_container: str) -> None:
    """Join the hub's container (if the hub runs in one) to the network, so the hub reaches its servers."""
    if hub_container:
        await gateway.connect_network(name, hub_container)


async def remove_user_network(gateway: DockerGateway, name: str, hub_container: str) -> None:
    """Remove the network once its users are gone; the hub's container leaves it first."""
    if hub_container:
        await gateway.disconnect_network(name, hub_container)
    await gateway.remove_network(name)
