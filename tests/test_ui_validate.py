"""The key form's plain-word checks and the unknown-model warning (no browser)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from starlette.datastructures import FormData

from tollway.ui.validate import FormErrors, key_form, service_errors, unknown_models
from tollway.upstreams.policy import PoolPolicy
from tollway.upstreams.pool import Pool
from tollway.upstreams.target import Upstream

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def form(**fields: str) -> FormData:
    return FormData({"name": "k", **fields})


def errors(**fields: str) -> dict[str, str]:
    with pytest.raises(FormErrors) as caught:
        key_form(form(**fields), now=NOW)
    return caught.value.fields


def test_bad_fields_are_named_in_plain_words() -> None:
    found = errors(rpm="-5", tpd="lots", token_quota=str(2**53 + 1), budget_usd="-1", name="")
    assert found["rpm"] == "A limit can't be negative. Leave it empty for no limit."
    assert found["tpd"].startswith("Enter a whole number")
    assert found["token_quota"].startswith("That is too large: at most 9,007,199,254,740,992")
    assert found["budget_usd"].startswith("A budget can't be negative")
    assert found["name"].startswith("Give the key a name")
    assert key_form(form(rpm="1,000", budget_usd="$2.50"), now=NOW)["rpm"] == 1000


def test_a_past_expiry_is_refused_unless_it_is_the_stored_one() -> None:
    assert "in the past" in errors(expires_at="2026-05-31T12:00")["expires_at"]
    stored = datetime(2026, 5, 31, 12, 0, tzinfo=UTC)
    kept = key_form(form(expires_at="2026-05-31T12:00"), stored_expiry=stored, now=NOW)
    assert kept["expires_at"] == stored
    later = key_form(form(expires_at="2026-06-02T00:00"), now=NOW)["expires_at"]
    assert later == NOW + timedelta(hours=12)


def test_service_messages_land_on_their_fields() -> None:
    assert service_errors("email: not an email address; something else") == {
        "email": "not an email address",
        "": "something else",
    }


def test_unknown_models_count_discovery_and_fallbacks() -> None:
    named = Upstream("a", "http://127.0.0.1:1/v1", models=frozenset({"gpt-x"}))
    every = Upstream("b", "http://127.0.0.1:2/v1")  # serves every model, nothing discovered
    pool = Pool([named, every], PoolPolicy(fallbacks={"big": ("gpt-x",)}))
    assert unknown_models(pool, ["gpt-y"]) == []  # b might serve it: nothing is unknown
    every.discovered_models = frozenset({"b-model"})
    assert unknown_models(pool, ["gpt-x", "b-model", "big", "gpt-y"]) == ["gpt-y"]
