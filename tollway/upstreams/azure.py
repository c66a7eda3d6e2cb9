"""Azure OpenAI upstreams (`provider: azure`): the key goes in an `api-key` header, and
requests go to deployment paths with an `api-version` query
(`/openai/deployments/{deployment}/chat/completions?api-version=...`), or, with
`api_version: v1`, to the newer `/openai/v1/...` API (which takes the deployment as the
body's model). Everything here is computed once per upstream; the relay only calls `path`."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

V1 = "v1"
DEFAULT_API_VERSION = "2024-10-21"  # Azure's GA data-plane version when none is given


@dataclass(frozen=True, slots=True)
class AzureRoute:
    api_version: str = DEFAULT_API_VERSION
    deployments: dict[str, str] = field(default_factory=dict)  # model -> deployment
    _prefixes: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)
    _query: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        prefixes = {
            model: b"/openai/deployments/" + quote(dep, safe="").encode()
            for model, dep in self.deployments.items()
        }
        object.__setattr__(self, "_prefixes", prefixes)
        version = quote(self.api_version, safe="").encode()
        object.__setattr__(self, "_query", b"api-version=" + version)

    @property
    def v1(self) -> bool:
        return self.api_version == V1

    def path(self, path: bytes, model: str | None) -> bytes:
        """The Azure path for an OpenAI-style one (`/chat/completions?x=1`, after `/v1`):
        the model's deployment (the model's own name when none is mapped), the request's
        query kept and `api-version` added unless the client sent one."""
        if self.v1:
            return b"/openai/v1" + path
        if model is None:  # files, batches...: resource-level paths
            head = b"/openai" + path
        else:
            prefix = self._prefixes.get(model)
            if prefix is None:
                prefix = b"/openai/deployments/" + quote(model, safe="").encode()
            head = prefix + path
        if b"api-version=" in path:
            return head
        return head + (b"&" if b"?" in path else b"?") + self._query

    def models_path(self) -> str:
        """Where the resource lists its models (health checks, discovery)."""
        if self.v1:
            return "/openai/v1/models"
        return "/openai/models?" + self._query.decode()
