"""The spawner's own address pool for private networks.

Docker's default pools hold about 30 bridge networks, and every running server needs one: the 31st user of a class
would fail to start. The spawner instead carves ``network_address_pool`` (say ``10.201.0.0/16``) into small
subnets (``/28``: the gateway, the notebook, its services and the hub's container) and gives each new network one,
so a stock engine holds thousands. Pure functions; :mod:`.network` asks Docker which subnets are taken.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Iterator

Subnet = ipaddress.IPv4Network


def parse_pool(pool: str, prefixlen: int) -> Subnet:
    """Check ``pool`` and the subnet size against each other; raise ValueError saying what is wrong."""
    try:
        network = ipaddress.IPv4Network(pool, strict=True)
    except ValueError as e:
        raise ValueError(f"{pool!r} is not an IPv4 network such as '10.201.0.0/16': {e}") from None
    if not network.prefixlen <= prefixlen <= 29:
        raise ValueError(
            f"subnets of /{prefixlen} do not fit {pool}: the size must be between /{network.prefixlen} and /29"
        )
    return network


def subnets_of(pool: Subnet, prefixlen: int, start_at: int = 0) -> Iterator[Subnet]:
    """Every subnet of ``pool`` of that size, beginning with the ``start_at``-th and wrapping around."""
    count = 2 ** (prefixlen - pool.prefixlen)
    size = 2 ** (32 - prefixlen)
    base = int(pool.network_address)
    for i in range(count):
        index = (start_at + i) % count
        yield ipaddress.IPv4Network((base + index * size, prefixlen))


def first_choice(network_name: str, pool: Subnet, prefixlen: int) -> int:
    """Where a network's search starts: spread by its name, so a class starting at once does not race for the
    same subnets."""
    count = 2 ** (prefixlen - pool.prefixlen)
    return int.from_bytes(hashlib.sha256(network_name.encode()).digest()[:8], "big") % count


def free_subnet(pool: Subnet, prefixlen: int, taken: Iterable[str], start_at: int = 0) -> Subnet | None:
    """The first subnet (from ``start_at``) that overlaps none of ``taken`` (CIDR strings); None when full."""
    taken_networks = []
    for cidr in taken:
        try:
            taken_networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            continue
    relevant = [t for t in taken_networks if t.version == 4 and t.overlaps(pool)]
    for candidate in subnets_of(pool, prefixlen, start_at):
        if not any(candidate.overlaps(t) for t in relevant):
            return candidate
    return None


def subnets_in_use(networks: Iterable[dict]) -> list[str]:
    """The subnets of Docker's networks, as ``GET /networks`` lists them."""
    found = []
    for network in networks:
        for config in (network.get("IPAM") or {}).get("Config") or []:
            if config.get("Subnet"):
                found.append(config["Subnet"])
    return found
