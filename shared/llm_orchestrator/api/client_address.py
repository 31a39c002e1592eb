"""The client's IP address: the TCP peer, unless the peer is a configured trusted proxy.

``X-Forwarded-For`` is written by whoever sends the request, so it is believed only from
peers listed in ``LLMO_TRUSTED_PROXIES`` (addresses or CIDR networks, comma separated; empty
by default: nobody). From such a peer the header is read right to left, skipping trusted
proxies: the first address that is not one is the client (what a trusted proxy appended
is true; anything to its left may be forged). On Lambda, Mangum takes the peer from API
Gateway's request context (``identity.sourceIp``), which the client cannot set.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from fastapi import Request

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
UNKNOWN = "unknown"


@lru_cache(maxsize=16)
def parse_trusted_proxies(spec: str) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, 127.0.0.1"`` → networks; raises ``ValueError`` naming a bad entry."""
    networks: list[IPNetwork] = []
    for entry in spec.split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(f"not an IP address or network: {entry!r}") from exc
    return tuple(networks)


def _address(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # 192.0.2.1:443
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in networks)


def client_ip(request: Request, trusted_proxies: str = "") -> str:
    peer_text = request.client.host if request.client else None
    if not peer_text:
        return UNKNOWN
    networks = parse_trusted_proxies(trusted_proxies)
    if not networks:
        return peer_text  # nobody trusted (the default): the peer, without parsing it
    peer = _address(peer_text)
    if peer is None or not _trusted(peer, networks):
        return peer_text
    hops = [
        hop
        for header in request.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return peer_text  # garbage from a trusted proxy: believe only the peer
        if not _trusted(address, networks):
            return str(address)
    return peer_text
