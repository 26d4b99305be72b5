"""The client's address, as the login lockout and the sign-up throttle count it.

`REMOTE_ADDR` unless `API_NUM_PROXIES` says how many proxies in front of the gateways
to trust: then the `X-Forwarded-For` entry the outermost trusted proxy wrote (the
entries before it are the client's to forge), if the connection came from one of
`API_TRUSTED_PROXIES` (a process that reaches the gateway directly cannot pick its
address). The same rule as DRF's `NUM_PROXIES`, plus uvicorn's `--forwarded-allow-ips`.

This is the only place the address is read from headers: gateways run uvicorn with
`--no-proxy-headers` (and `chatsite.gateway.http` turns uvicorn's reading off should a
command line forget it), so `REMOTE_ADDR` is always the peer of the TCP connection,
under uvicorn as under Daphne.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest
from rest_framework.request import Request

# What an address that cannot be read counts as (one shared bucket, never a free pass).
UNKNOWN = "unknown"


def client_address(request: HttpRequest | Request) -> str:
    """Return the client's IP address, normalized (IPv4-mapped IPv6 as IPv4)."""
    remote = str(request.META.get("REMOTE_ADDR") or "")
    chosen = remote
    proxies = int(settings.API_NUM_PROXIES)
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if proxies > 0 and forwarded and _trusted(remote):
        entries = [e.strip() for e in str(forwarded).split(",")]
        chosen = entries[-min(proxies, len(entries))]
    return _normalized(chosen) or _normalized(remote) or UNKNOWN


def _trusted(remote: str) -> bool:
    """Return whether a connection from `remote` is one of `API_TRUSTED_PROXIES`."""
    allowed = list(settings.API_TRUSTED_PROXIES)
    if "*" in allowed:
        return True
    address = _normalized(remote)
    if not address:
        return False
    ip = ipaddress.ip_address(address)
    for entry in allowed:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # not an address or network: trusts nothing
    return False


def address_group(address: str) -> str:
    """Return what a budget per address counts: an IPv4 address, an IPv6 /64 network.

    One IPv6 subscriber usually holds a whole /64; counting its addresses one by one
    would give it 2**64 budgets.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64] or UNKNOWN
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip), 64), strict=False))
    return str(ip)


def _normalized(text: str) -> str:
    """Return `text` as an IP address string ("" if it is none), dropping a port."""
    candidate = text.strip()
    if candidate.startswith("[") and "]" in candidate:
        candidate = candidate[1 : candidate.index("]")]  # [v6]:port
    elif candidate.count(":") == 1:
        candidate = candidate.partition(":")[0]  # v4:port
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:
        return ""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)
