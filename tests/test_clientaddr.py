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

    assert client_address(request_from("192.0.2.7", forwarded)) == expected


def test_an_ipv6_address_counts_as_its_64_network_and_ipv4_as_itself() -> None:
    assert address_group("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_group("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_group("198.51.100.1") == "198.51.100.1"
