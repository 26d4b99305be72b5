"""One HTTP POST to a push service that cannot be aimed inside our network (no SSRF).

A push endpoint is a URL a client gave us. Before each request the host is resolved
once; every address it resolves to must be public (not loopback, private, link-local,
multicast, reserved or otherwise special), unless the endpoint's origin is listed in
`PUSH_ENDPOINT_ALLOW`. The connection goes to the address that was checked (no second
lookup: a name that resolves differently the next time cannot slip through), TLS checks
the certificate against the host name, redirects are not followed, and at most
`MAX_RESPONSE_BYTES` of the answer are read.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_RESPONSE_BYTES = 64 * 1024


class Refused(Exception):
    """The endpoint may not be contacted (its address or scheme); nothing was sent."""


class TransportError(Exception):
    """The endpoint could not be reached or did not answer in time (maybe transient)."""


@dataclass(frozen=True)
class Answer:
    """What the push service answered."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def origin_of(url: str) -> str:
    """Return `scheme://host[:port]` of a URL, lower-cased (a VAPID `aud`, an allow entry)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


def resolve(host: str, port: int, *, allowed: bool) -> str:
    """Return the address to connect to, or raise Refused / TransportError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TransportError(f"cannot resolve {host}: {exc}") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise TransportError(f"{host} resolves to nothing")
    if not allowed:
        for address in addresses:
            if not _public(address):
                raise Refused(f"{host} resolves to a non-public address ({address})")
    return addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        context = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    allow: Sequence[str] = (),
) -> Answer:
    """POST `body` to `url` under the rules of the module docstring."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError as exc:
        raise Refused(f"bad port in {url!r}") from exc
    host = parts.hostname or ""
    allowed = origin_of(url) in {origin_of(a) for a in allow}
    if not host or parts.username or parts.password:
        raise Refused("the endpoint has no host, or carries credentials")
    if parts.scheme == "https":
        port = port or 443
    elif parts.scheme == "http" and allowed:
        port = port or 80
    else:
        raise Refused(f"the endpoint's scheme {parts.scheme!r} is not allowed")
    address = resolve(host, port, allowed=allowed)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = _PinnedHTTPSConnection(host, port, address, timeout)
    else:
        connection = _PinnedHTTPConnection(host, port, address, timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request("POST", path, body=body, headers=dict(headers))
        response = connection.getresponse()
        data = response.read(MAX_RESPONSE_BYTES)
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    except (OSError, http.client.HTTPException) as exc:
        raise TransportError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        connection.close()
