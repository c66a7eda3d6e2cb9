"""A real webhook receiver on 127.0.0.1 for alert tests: counts deliveries, can refuse the
first ones, and checks each signature with the webhook's secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, secret: str, fail_first: int = 0) -> None:
        self.secret = secret
        self.fail_first = fail_first
        self.posts: list[tuple[dict[str, str], bytes]] = []  # every POST, refused ones too
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                with receiver.lock:
                    receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    refuse = len(receiver.posts) <= receiver.fail_first
                self.send_response(500 if refuse else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook/T0KEN-in-the-path"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def verified(self, headers: dict[str, str], body: bytes) -> bool:
        ts = headers["x-tollway-timestamp"]
        mac = hmac.new(self.secret.encode(), ts.encode() + b"." + body, hashlib.sha256)
        return hmac.compare_digest(headers["x-tollway-signature"], "sha256=" + mac.hexdigest())

    def taken(self) -> list[dict[str, Any]]:
        """The alerts delivered (answered 200), each checked against its signature."""
        with self.lock:
            posts = list(self.posts)[self.fail_first :]
        out = []
        for headers, body in posts:
            assert self.verified(headers, body), "bad signature"
            out.append(json.loads(body))
        return out

    def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.taken()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        got = self.taken()
        assert len(got) >= count, f"{len(got)} of {count} alerts arrived"
        return got
