"""The client address that the login lockout and the sign-up throttle count."""

from typing import Any

import pytest
from django.test import RequestFactory

from chatsite.clientaddr import address_group, client_address


def request_from(remote: str, forwarded: str | None = None) -> Any:
    request = RequestFactory().get("/", REMOTE_ADDR=remote)
    if forwarded is not None:
        request.META["HTTP_X_FORWARDED_FOR"] = forwarded
    return request


def test_without_trusted_proxies_a_forged_forwarded_for_is_ignored(settings: Any) -> None:
    settings.API_NUM_PROXIES = 0

    assert client_address(request_from("192.0.2.7", "198.51.100.1")) == "192.0.2.7"


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (1, "198.51.100.1", "198.51.100.1"),
        (1, "203.0.113.9, 198.51.100.1", "198.51.100.1"),
        (2, "203.0.113.9, 198.51.100.1, 10.0.0.2", "198.51.100.1"),
        (2, "198.51.100.1", "198.51.100.1"),
        (1, "198.51.100.1:4711", "198.51.100.1"),
        (1, "[2001:db8::5]:4711", "2001:db8::5"),
        (1, "::ffff:198.51.100.1", "198.51.100.1"),
        (1, "unknown", "192.0.2.7"),
    ],
)
def test_trusted_proxies_pick_the_entry_the_outermost_one_wrote(
    settings: Any, proxies: int, forwarded: str, expected: str
) -> None:
    settings.API_NUM_PROXIES = proxies
    settings.API_TRUSTED_PROXIES = ["192.0.2.0/24"]

    assert client_address(request_from("192.0.2.7", forwarded)) == expected


@pytest.mark.parametrize("trusted", [["127.0.0.1", "::1"], ["198.51.100.0/24"], ["nonsense"], []])
def test_forwarded_for_from_a_peer_that_is_no_trusted_proxy_is_ignored(
    settings: Any, trusted: list[str]
) -> None:
    # A process that reaches the gateway directly, not through the proxy, forges the header.
    settings.API_NUM_PROXIES = 1
    settings.API_TRUSTED_PROXIES = trusted

    assert client_address(request_from("192.0.2.7", "203.0.113.9")) == "192.0.2.7"


def test_a_star_trusts_forwarded_for_from_any_peer(settings: Any) -> None:
    settings.API_NUM_PROXIES = 1
    settings.API_TRUSTED_PROXIES = ["*"]

    assert client_address(request_from("192.0.2.7", "203.0.113.9")) == "203.0.113.9"


def test_an_ipv6_address_counts_as_its_64_network_and_ipv4_as_itself() -> None:
    assert address_group("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_group("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_group("198.51.100.1") == "198.51.100.1"
