"""The drain window: at least WS_DRAIN_SECONDS, long enough for WS_DRAIN_RATE, capped."""

from pytest_django.fixtures import SettingsWrapper

from chatsite.gateway.drain import drain_window


def test_the_window_grows_with_the_sockets_to_keep_the_reconnect_rate(
    settings: SettingsWrapper,
) -> None:
    settings.WS_DRAIN_SECONDS = 20.0
    settings.WS_DRAIN_RATE = 100.0
    settings.WS_DRAIN_MAX_SECONDS = 120.0

    assert drain_window(0) == 20.0
    assert drain_window(1_500) == 20.0  # 75 a second: under the rate
    assert drain_window(5_000) == 50.0  # 100 a second
    assert drain_window(50_000) == 120.0  # capped: systemd's stop timeout must cover it


def test_a_rate_of_zero_means_the_fixed_window(settings: SettingsWrapper) -> None:
    settings.WS_DRAIN_SECONDS = 20.0
    settings.WS_DRAIN_RATE = 0.0

    assert drain_window(50_000) == 20.0
