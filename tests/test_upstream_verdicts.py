"""The verdict rules on their own: which error answers park our key or take the account out.
Free text never counts; structured codes and statuses do."""

from __future__ import annotations

import orjson
import pytest

from tollway.upstreams.verdict import CREDIT_CODES, key_rejected, out_of_credit


def err(**error: object) -> bytes:
    return orjson.dumps({"error": error})


@pytest.mark.parametrize(
    ("status", "body", "parks"),
    [
        (401, err(message="Incorrect API key provided", code="invalid_api_key"), True),
        (401, orjson.dumps({"type": "error", "error": {"type": "authentication_error"}}), True),
        (401, err(message="bad", type="invalid_authentication_error"), True),
        (401, err(message="User not found.", code=401), True),  # OpenRouter: no string code
        (401, b"", True),
        (401, b"<html>401 Authorization Required</html>", True),
        (401, err(message="Missing scopes: model.request", type="invalid_request_error"), False),
        (401, err(message="invalid_api_key", code="mismatched_organization"), False),
        (403, err(message="Invalid API key", code="invalid_api_key"), False),
        (403, b"", False),
        (400, err(message="invalid_api_key", code="invalid_api_key"), False),
    ],
)
def test_key_rejected_only_on_a_401_about_our_key(status: int, body: bytes, parks: bool) -> None:
    assert key_rejected(status, body) is parks


@pytest.mark.parametrize(
    ("status", "body", "out"),
    [
        (402, b"", True),
        (402, b"Payment Required", True),
        (429, err(message="You exceeded your current quota", type="insufficient_quota"), True),
        (429, err(message="x", code="INSUFFICIENT_QUOTA"), True),
        (400, err(message="x", code="billing_hard_limit_reached"), True),
        (403, err(message="x", type="insufficient_balance"), True),
        (
            400,
            err(message="Invalid prompt: 'insufficient funds, exceeded your current quota'"),
            False,
        ),
        (429, err(message="insufficient_quota: credit balance is too low", type="requests"), False),
        (403, b"insufficient_quota", False),
        (400, orjson.dumps({"error": "insufficient_quota"}), False),  # a bare string: free text
        (401, err(code="insufficient_quota"), False),
        (500, err(code="insufficient_quota"), False),
        (429, err(code="insufficient_quota", message="x" * 70_000), False),  # not an error object
    ],
)
def test_out_of_credit_only_on_402_or_a_structured_code(
    status: int, body: bytes, out: bool
) -> None:
    assert out_of_credit(status, body) is out


def test_every_documented_credit_code_counts() -> None:
    for code in CREDIT_CODES:
        assert out_of_credit(429, err(code=code)) and out_of_credit(400, err(type=code))
