"""Schemathesis fuzzes the admin API against its own OpenAPI schema on a real Tollway:
no 500 anywhere, every response (errors included) matching the schema, auth never ignored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from pydantic import SecretStr
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tollway.core.throttle import FailureThrottle

from .fixtures_gateway import Stack

SECRET = "fuzz-admin-secret-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("fuzz"), admin_secret=SecretStr(SECRET))
    # Schemathesis sends hundreds of wrong secrets on purpose (each must be a 401): no
    # lock-out here (the throttle has its own tests in test_admin_proxy.py).
    runtime = s.gateway.app.runtime
    assert runtime is not None
    runtime.admin_failures = FailureThrottle(max_failures=10**9)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def admin_schema(fuzz_stack: Stack) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(fuzz_stack.url + "/admin/api/openapi.json")


schema = schemathesis.pytest.from_fixture("admin_schema")


# Calls that reach out to an upstream's base URL would send fuzzed URLs onto the network;
# tests/test_admin_upstreams.py covers them against fake upstreams.
@schema.exclude(path_regex=r"^/upstreams/(\{upstream_id\}/test|refresh-balance)$").parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_admin_api_conforms_to_its_schema(case: schemathesis.Case) -> None:
    # Every check but "schema-valid data is accepted": OpenAPI cannot say "start before end"
    # or "at most 10,000 points", so those valid-looking requests rightly get a 422.
    case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])
