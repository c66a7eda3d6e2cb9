"""Shared test fixtures. Real servers on 127.0.0.1; fixture modules are plain plugins."""

pytest_plugins = [
    "tests.fixtures_db",
    "tests.fixtures_gateway",
    "tests.fixtures_pgbouncer",
    "tests.ui_fixtures",
]
