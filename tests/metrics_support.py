"""Reading `/metrics` in tests: fetch with the token, parse with prometheus-client's parser,
sum the samples that match some labels."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "metrics-token-SECRET-0123456789"


def scrape(url: str, token: str = TOKEN) -> str:
    answer = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


def value(text: str, sample: str, **labels: str) -> float:
    """The sum of every sample named `sample` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def label_values(text: str, sample: str, label: str) -> set[str]:
    found = set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and label in s.labels:
                found.add(s.labels[label])
    return found
