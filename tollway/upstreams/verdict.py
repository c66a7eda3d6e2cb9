"""Reading an upstream's error answer: is *our key* invalid, is the account out of credit?

Only structured evidence counts. A client chooses its prompt, its path and what it asks
for, so any free text in an error (an echoed prompt, a moderation message, a permission
refusal) could be made to say "insufficient funds" or "invalid key": reading it would let
one client take upstreams out of rotation for every other client.
"""

from __future__ import annotations

import orjson

# `error.code` / `error.type` values that say our key itself was refused (OpenAI
# `invalid_api_key`, Anthropic and Vercel `authentication_error`, Moonshot and others
# `invalid_authentication`/`invalid_authentication_error`). Only on a 401.
AUTH_CODES = frozenset(
    {
        "invalid_api_key",
        "authentication_error",
        "invalid_authentication",
        "invalid_authentication_error",
        "unauthenticated",
    }
)
# `error.code` / `error.type` values that say the account has no credit left (OpenAI
# `insufficient_quota` on a 429, its older `billing_hard_limit_reached`/`billing_not_active`,
# and the spellings other providers use). HTTP 402 needs no code.
CREDIT_CODES = frozenset(
    {
        "insufficient_quota",
        "billing_hard_limit_reached",
        "billing_not_active",
        "insufficient_balance",
        "insufficient_funds",
        "insufficient_credits",
        "credit_balance_too_low",
        "exceeded_current_quota_error",
        "payment_required",
    }
)
# Statuses whose body is read for a verdict (others are decided by status alone).
CREDIT_STATUSES = frozenset({400, 402, 403, 429})
JUDGED_STATUSES = CREDIT_STATUSES | {401}
MAX_JUDGED_BODY = 65536  # an error body larger than this is not an error object we know


def error_codes(body: bytes) -> frozenset[str] | None:
    """The string `error.code` and `error.type` of an OpenAI- or Anthropic-shaped error
    body (lower-cased); None when the body is not a JSON object with an `error` object."""
    if not body or len(body) > MAX_JUDGED_BODY:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None
    return frozenset(
        v.strip().lower() for v in (error.get("code"), error.get("type")) if isinstance(v, str)
    )


def out_of_credit(status: int, body: bytes) -> bool:
    """HTTP 402, or a structured out-of-credit code on a 400/403/429."""
    if status == 402:
        return True
    if status not in CREDIT_STATUSES:
        return False
    codes = error_codes(body)
    return codes is not None and not codes.isdisjoint(CREDIT_CODES)


def key_rejected(status: int, body: bytes) -> bool:
    """A 401 that is about our key: an authentication code, or nothing structured at all
    (a bare 401 from a proxy in front of the provider: our key is the only credential we
    send). A 401 with another structured code (a missing scope, an organisation mismatch)
    is about the request and passes through. Never a 403."""
    if status != 401:
        return False
    codes = error_codes(body)
    return not codes or not codes.isdisjoint(AUTH_CODES)
