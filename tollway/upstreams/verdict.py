"""Reading an upstream's error answer: is the key's account out of credit?"""

from __future__ import annotations

import re

# Said by providers when the account has no credit left: OpenAI's `insufficient_quota` (a 429),
# "insufficient funds/balance/credits", Anthropic's "credit balance is too low", and the like.
_OUT_OF_CREDIT = re.compile(
    rb"insufficient[_ ]?(?:quota|funds|balance|credits?)"
    rb"|credit balance is too low|out of credits?|exceeded your current quota"
    rb"|billing[_ ]hard[_ ]limit|requires more credits|payment[_ ]required",
    re.IGNORECASE,
)
# Statuses whose body is worth reading for that (others are decided by status alone).
CREDIT_STATUSES = frozenset({400, 402, 403, 429})


def out_of_credit(status: int, body: bytes) -> bool:
    if status == 402:
        return True
    return status in CREDIT_STATUSES and _OUT_OF_CREDIT.search(body[:8192]) is not None
