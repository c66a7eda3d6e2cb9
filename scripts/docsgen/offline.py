"""The built site must work offline: no page or stylesheet may load anything from another host."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

# Attributes that make a browser fetch or navigate. (`xmlns` and the like are names, not fetches.)
FETCHING = {"src", "href", "srcset", "data", "poster", "action", "formaction", "xlink:href"}
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*((?:https?:)?//[^'")\s]+)""", re.I)


def _foreign(url: str) -> bool:
    url = url.strip()
    if not re.match(r"(?i)^(https?:)?//", url):
        return False
    host = re.sub(r"(?i)^(https?:)?//", "", url).split("/", 1)[0].split("@")[-1]
    return not any(host == h or host.startswith(h + ":") for h in LOCAL_HOSTS)


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in FETCHING and value:
                urls = (
                    [part.split()[0] for part in value.split(",")] if name == "srcset" else [value]
                )
                self.found += [f"<{tag} {name}={u}>" for u in urls if u and _foreign(u)]
            elif name == "style" and value:
                self.found += CSS_URL.findall(value)


def foreign_references(site: Path) -> list[str]:
    """Every reference to another host in the built HTML and CSS, as `file: reference`."""
    found: list[str] = []
    for file in sorted(site.rglob("*")):
        if file.suffix == ".html":
            parser = _Refs()
            parser.feed(file.read_text(errors="replace"))
            found += [f"{file.relative_to(site)}: {r}" for r in parser.found]
        elif file.suffix == ".css":
            refs = CSS_URL.findall(file.read_text(errors="replace"))
            found += [f"{file.relative_to(site)}: {r}" for r in refs]
    return found
