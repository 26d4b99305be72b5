"""Fixtures of the security tests: the API tests' clients, the e2e tests' real gateways."""

from tests.accounts.conftest import new_address
from tests.api.conftest import client_for, group
from tests.e2e.conftest import (
    _raise_open_file_limit,
    db_url,
    make_deployment,
    pytest_runtest_makereport,
    redis_server,
    smtp_server,
)

__all__ = [
    "_raise_open_file_limit",
    "client_for",
    "db_url",
    "group",
    "make_deployment",
    "new_address",
    "pytest_runtest_makereport",
    "redis_server",
    "smtp_server",
]
