"""Run Tollway for real: uvicorn on a real 127.0.0.1 socket, in a thread of the test process
(so coverage sees it), or as a separate `tollway serve` process."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tollway.app import TollwayApp
from tollway.core.settings import Settings
from tollway.gateway.http_server import TollwayHttpProtocol


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


READY_SECONDS = 60


def wait_ready(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not become ready")


class GatewayThread:
    """TollwayApp under uvicorn (uvloop + httptools) in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.model_copy(update={"port": free_port()})
        self.app = TollwayApp(self.settings)
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def start(self) -> GatewayThread:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.settings.port,
            loop="uvloop",
            http=TollwayHttpProtocol,
            ws="websockets-sansio",  # as `tollway serve`
            lifespan="on",
            access_log=False,
            log_level="warning",
            proxy_headers=False,  # as `tollway serve`: TOLLWAY_FORWARDED_ALLOW_IPS decides
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="tollway", daemon=True)
        self.thread.start()
        wait_ready(self.url)
        return self

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the gateway's own event loop (to inspect or poke its state)."""
        assert self.app.loop is not None
        loop = self.app.loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(30)


class GatewayProcess:
    """`tollway serve` as a child process, for multi-process and CLI-level tests."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            **env,
            "TOLLWAY_PORT": str(self.port),
            "TOLLWAY_HOST": "127.0.0.1",
        }
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = cwd / f"tollway-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        out = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tollway", "serve"],
            env=self.env,
            cwd=self.cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        # 60 s: processes started together on a loaded 2-core box each import, migrate (under
        # the migration lock, one after the other) and warm up; a hang still fails here.
        try:
            wait_ready(self.url, READY_SECONDS)
        except RuntimeError:
            self.stop()
            log = self.log.read_text()
            raise RuntimeError(f"not ready in {READY_SECONDS} s; its log:\n{log}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
