"""Wires the layers together: one ASGI app, one lifespan that starts and stops the
background work. Nothing else knows how the pieces are assembled."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.core.errors import error_body
from tollway.core.ids import new_request_id, reseed
from tollway.core.server_secret import ensure_server_secret, server_secret
from tollway.core.settings import Settings, get_settings
from tollway.core.throttle import FailureThrottle
from tollway.core.types import KeyRecord
from tollway.gateway.asgi import Message, Receive, Scope, Send
from tollway.gateway.auth import KeyCache
from tollway.gateway.auth_throttle import InvalidKeyThrottle
from tollway.gateway.body_budget import BodyBudget
from tollway.gateway.cache import build_cache
from tollway.gateway.draining import DrainingServer, use_for_workers
from tollway.gateway.edge import EdgeLimits
from tollway.gateway.endpoint import Gateway
from tollway.gateway.http_server import TollwayHttpProtocol
from tollway.gateway.key_changes import KeyChangeFollower
from tollway.gateway.limits import Limiter
from tollway.gateway.pricing import PriceBook
from tollway.gateway.readiness import Readiness, Report, fleet_readiness
from tollway.gateway.realtime import PATH as REALTIME_PATH
from tollway.gateway.realtime import Realtime
from tollway.gateway.relay import Relay
from tollway.gateway.usage import UsageSink
from tollway.gateway.usage_process import UsageProcess
from tollway.observe import Observability
from tollway.services.admin_secret import AdminVerifier
from tollway.store import queries
from tollway.store.db import (
    create_engine,
    engine_options,
    is_sqlite,
    migrate_sync,
)
from tollway.upstreams.egress import egress_defaults
from tollway.upstreams.manager import UpstreamManager
from tollway.upstreams.pool import Pool
from tollway.wiring import (
    build_limiter,
    load_admin,
    load_prices,
    requests_settled,
    shared_state,
    start_sink,
    usage_writer,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from tollway.services.alert_monitor import AlertMonitor

log = logging.getLogger("tollway")


@dataclass
class Runtime:
    """Everything the running gateway holds; admin API and UI reach it through the app."""

    settings: Settings
    engine: AsyncEngine
    pool: Pool
    keys: KeyCache
    relay: Relay
    limiter: Limiter
    sink: UsageSink
    gateway: Gateway
    revisions: dict[str, int] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    upstreams: UpstreamManager | None = None  # sources, probes; fills `pool`
    admin: AdminVerifier | None = None  # checks the admin secret (API, UI)
    prices: PriceBook | None = None  # the gateway's price function; reloaded on change
    # Failed admin-secret attempts per client address (UI login and admin API alike).
    admin_failures: FailureThrottle = field(default_factory=FailureThrottle)
    readiness: Readiness | None = None  # /readyz
    key_changes: KeyChangeFollower | None = None  # forgets exactly the keys changed anywhere
    observe: Observability | None = None  # metrics, request log, traces (tollway/observe)
    alerts: AlertMonitor | None = None  # budget/expiry/upstream alerts to webhooks
    realtime: Realtime | None = None  # /v1/realtime WebSocket sessions


class TollwayApp:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.runtime: Runtime | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.web = _BuiltOnFirstUse(self._build_web)  # /v1 never needs it
        s = self.settings  # read by the HTTP protocol for its connection limits
        self.edge_limits = EdgeLimits(s.header_timeout, s.keep_alive_timeout, s.max_connections)
        self._proxied = _trusting_proxies(self._route, self.settings.forwarded_allow_ips)
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._proxied is None:
            await self._route(scope, receive, send)
        else:
            await self._proxied(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            assert self.runtime is not None, "lifespan did not run"
            await self.runtime.gateway(scope, receive, send)
        elif scope["type"] == "websocket" and scope["path"] == REALTIME_PATH:
            assert self.runtime is not None and self.runtime.realtime is not None
            await self.runtime.realtime(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == "/readyz":
            await self._readyz(send)  # raw: answers while the web side is still being built
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif (
            scope["type"] == "http"
            and scope["path"] == "/metrics"
            and await self._metrics(scope, send)
        ):
            return
        else:
            await self.web(scope, receive, _with_request_id(send))

    def begin_drain(self) -> float:
        """SIGTERM (see gateway/draining.py): /readyz says "draining" from now on; returns how
        long the listener should stay open so a load balancer notices first."""
        self.draining = True
        if self.runtime is not None and self.runtime.readiness is not None:
            self.runtime.readiness.draining = True
        return self.settings.shutdown_ready_delay

    async def _readyz(self, send: Send) -> None:
        rt = self.runtime
        if rt is None or rt.readiness is None:
            report = Report(False, {"startup": "not started"})
        else:
            rt.readiness.draining = rt.readiness.draining or self.draining
            report = await rt.readiness.report()
        await send(
            {
                "type": "http.response.start",
                "status": 200 if report.ready else 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": orjson.dumps(report.body())})

    async def _metrics(self, scope: Scope, send: Send) -> bool:
        rt = self.runtime
        if rt is None or rt.observe is None:
            return False
        return await rt.observe.serve_metrics(scope, send)

    # -- web side (health now; admin API and UI mount here) ---------------------------------

    def _build_web(self) -> ASGIApp:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Mount, Route

        async def healthz(request: Request) -> Response:
            return JSONResponse({"status": "ok"})

        async def not_found(request: Request, exc: Exception) -> Response:
            body = error_body(
                f"Unknown path {request.url.path}", "invalid_request_error", "not_found"
            )
            return Response(body, status_code=404, media_type="application/json")

        def admin_api() -> ASGIApp:
            from tollway.admin import build_admin_api

            return build_admin_api(lambda: self.runtime)

        def ui() -> ASGIApp:
            from tollway.ui.app import create_ui

            return create_ui(self.settings, lambda: self.runtime)

        return Starlette(
            routes=[
                Route("/healthz", healthz),
                Mount("/admin/api", app=_BuiltOnFirstUse(admin_api)),
                Mount("/", app=_BuiltOnFirstUse(ui)),
            ],
            exception_handlers={404: not_found},
        )

    # -- lifespan ----------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            await self.startup()
        except Exception as exc:
            log.exception("startup failed")
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        await self.shutdown()
        await send({"type": "lifespan.shutdown.complete"})

    async def startup(self) -> None:
        s = self.settings
        self.loop = asyncio.get_running_loop()
        reseed()  # a forked worker gets request ids of its own
        if is_sqlite(s.database_url):  # one host: the secret file lives beside the database
            created = ensure_server_secret(s)
            if created is not None:
                log.info("server secret created in %s (mode 0600)", created)
        server_secret(s)  # a secret file others can read stops the start (BadSecretFile)
        engine = create_engine(s.database_url, **engine_options(s))
        pool = Pool()
        upstreams = UpstreamManager(pool, s, engine, shared=shared_state(s, pool))
        await upstreams.start()

        async def load_keys(key_hashes: list[str]) -> dict[str, KeyRecord]:
            return await queries.load_keys_by_hash(engine, key_hashes)

        spool_dir = s.spool_path()
        writer = usage_writer(s, engine, spool_dir)

        keys = KeyCache(
            load_keys,
            s.key_cache_ttl,
            s.negative_cache_ttl,
            s.key_cache_size,
            s.negative_cache_size,
            InvalidKeyThrottle(s.invalid_key_limit, s.invalid_key_window),
        )
        relay = Relay(
            pool,
            s.upstream_connect_timeout,
            s.upstream_read_timeout,
            s.max_attempts,
            s.upstream_first_byte_timeout,
            egress_defaults(s),
        )
        await relay.start()
        prices = PriceBook(await load_prices(engine, s))
        limiter = build_limiter(s, engine)
        sink = await start_sink(s, writer, spool_dir)
        bodies = BodyBudget(s.max_buffered_body_bytes)
        gateway = Gateway(
            keys,
            pool,
            relay,
            limiter,
            sink,
            s.max_body_bytes,
            price=prices,
            bodies=bodies,
            cache=build_cache(s),
        )
        rt = Runtime(s, engine, pool, keys, relay, limiter, sink, gateway, upstreams=upstreams)
        rt.prices = prices
        rt.observe = Observability(s, pool, sink, lambda: gateway.refused)
        rt.observe.start()
        rt.realtime = Realtime(keys, pool, limiter, sink, prices, s.upstream_connect_timeout)
        rt.readiness = fleet_readiness(engine, pool, limiter, s.ready_timeout, s.ready_cache)
        rt.readiness.draining = self.draining
        rt.admin = await load_admin(engine, s)
        rt.key_changes = KeyChangeFollower(engine, keys.invalidate)
        await rt.key_changes.start()
        rt.revisions = await queries.read_revisions(engine)
        rt.tasks.append(asyncio.get_running_loop().create_task(self._watch_revisions(rt)))
        from tollway.services.alert_monitor import start_monitor  # httpx: only once serving
        from tollway.services.upstreams import upstream_status

        rt.alerts, alert_task = start_monitor(engine, s, lambda: upstream_status(pool))
        if alert_task is not None:
            rt.tasks.append(alert_task)
        self.runtime = rt
        _tune_gc()
        log.info(
            "Tollway ready: %d upstream(s), models: %s",
            len(pool.upstreams),
            ", ".join(pool.models()) or "(all)",
        )

    async def shutdown(self) -> None:
        rt = self.runtime
        if rt is None:
            return
        for task in rt.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if rt.alerts is not None:
            await rt.alerts.close()
        if rt.upstreams is not None:
            await rt.upstreams.stop()
        await requests_settled(rt.gateway)
        await rt.keys.close()
        await rt.sink.stop()
        if rt.observe is not None:
            await rt.observe.close()
        if isinstance(rt.sink.writer, UsageProcess):
            await rt.sink.writer.close()
        await rt.relay.close()
        if rt.gateway.cache is not None:
            await rt.gateway.cache.close()
        await rt.limiter.close()
        await rt.engine.dispose()
        self.runtime = None

    async def _watch_revisions(self, rt: Runtime) -> None:
        """Admin changes made anywhere (API, CLI, another instance) apply within a second."""
        while True:
            await asyncio.sleep(rt.settings.revision_poll_interval)
            try:
                current = await queries.read_revisions(rt.engine)
            except Exception:
                log.warning("could not read state revisions", exc_info=True)
                continue
            if current.get("keys") != rt.revisions.get("keys") and rt.key_changes is not None:
                try:
                    await rt.key_changes.catch_up()
                except Exception:
                    log.warning("could not read key changes", exc_info=True)
                    continue  # try again next poll
            if current.get("prices") != rt.revisions.get("prices") and rt.prices is not None:
                try:
                    rt.prices.replace(await load_prices(rt.engine, rt.settings))
                except Exception:
                    log.warning("could not reload prices", exc_info=True)
                    continue  # try again next poll
            if current.get("upstreams") != rt.revisions.get("upstreams") and rt.upstreams:
                try:
                    await rt.upstreams.reload_db()
                except Exception:
                    log.warning("could not reload upstreams", exc_info=True)
                    continue  # try again next poll
            rt.revisions = current


def _tune_gc() -> None:
    """What startup loaded (modules, settings, pools) lives as long as the process: freeze it,
    so the collector stops walking hundreds of thousands of objects in every full collection
    (those pauses were the p99 tail), and collect the young generation less often (a request
    leaves few cycles behind). Measured: about +15 % req/s and a much shorter p99."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


class _BuiltOnFirstUse:
    """An ASGI app built on its first request: the web side (Starlette; the admin API with
    FastAPI, the UI with Jinja2) takes ~0.5 s to import, which would otherwise delay every
    start and every worker.

    The build runs in a thread, so /v1 requests keep flowing meanwhile; the lock makes
    concurrent first requests (on any loop or thread) wait for one build."""

    def __init__(self, build: Callable[[], ASGIApp]) -> None:
        self._build = build
        self._app: ASGIApp | None = None
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        if app is None:
            app = await asyncio.to_thread(self._get)
        await app(scope, receive, send)

    def _get(self) -> ASGIApp:
        with self._lock:
            if self._app is None:
                self._app = self._build()
            return self._app


def _trusting_proxies(app: Callable[[Scope, Receive, Send], Any], allow: str) -> Any:
    """uvicorn's ProxyHeadersMiddleware over the whole app (/v1 included) when proxies are
    listed: X-Forwarded-For/-Proto from those addresses set the client address and scheme;
    from any other address they are ignored. None when no proxy is trusted (the default)."""
    hosts = [h.strip() for h in allow.split(",") if h.strip()]
    if not hosts:
        return None
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    return ProxyHeadersMiddleware(app, trusted_hosts=hosts)  # type: ignore[arg-type]


def _with_request_id(send: Send) -> Send:
    """Every response carries an x-request-id, the web side's too."""
    request_id = new_request_id().encode()

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
        await send(message)

    return wrapped


def create_app(settings: Settings | None = None) -> TollwayApp:
    return TollwayApp(settings)


def serve(settings: Settings | None = None) -> None:
    """`tollway serve`: migrate, then run under uvicorn (uvloop + httptools)."""
    import uvicorn

    from tollway.observe.log_format import configure

    s = settings or get_settings()
    configure(s.log_level, s.log_format)
    if s.workers > 1 and not s.redis_url:
        # Each process would count its own share of every key's limits: N times the limit.
        raise SystemExit(
            "TOLLWAY_WORKERS > 1 needs TOLLWAY_REDIS_URL: the worker processes share the "
            "limits' counters through Redis. Set it, or run one worker."
        )
    migrate_sync(s.database_url, pgbouncer=s.db_pgbouncer)
    metrics_dir = None
    if s.workers > 1:
        if s.metrics_token is not None:  # before anything imports prometheus_client
            from tollway.observe.multiprocess import prepare

            metrics_dir = prepare(s.metrics_dir)
        fork_workers()
    # What is loaded so far (the imports) lives as long as the process: frozen now, startup's
    # _tune_gc collects only what startup made (a full collection costs ~50 ms; here it would
    # find nothing), and forked workers share these pages instead of copying them.
    gc.freeze()
    config = uvicorn.Config(
        "tollway.app:create_app",
        factory=True,
        host=s.host,
        port=s.port,
        workers=s.workers,
        loop="uvloop",
        http=TollwayHttpProtocol,
        ws="websockets-sansio",  # /v1/realtime
        lifespan="on",
        access_log=False,
        # Forwarded headers are honoured by TollwayApp itself, and only from
        # TOLLWAY_FORWARDED_ALLOW_IPS (uvicorn's own default would trust 127.0.0.1).
        proxy_headers=False,
        log_level=s.log_level,
        # JSON logs: uvicorn's loggers go through the root handler (configure above).
        log_config=None if s.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        # On SIGTERM: stop accepting, let open requests run this long, then cancel them
        # (streams get a final `server_shutting_down` error event; see endpoint).
        timeout_graceful_shutdown=s.shutdown_drain_seconds,
    )
    # uvicorn.run, with a server that drains (/readyz "draining") before closing its listener.
    if s.workers > 1:
        from uvicorn.supervisors import Multiprocess

        use_for_workers()
        try:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        finally:
            if metrics_dir is not None:
                metrics_dir.cleanup()
        return
    server = DrainingServer(config)
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE


def fork_workers() -> None:
    """Start uvicorn's workers with fork instead of spawn.

    A spawned worker starts a new interpreter and imports everything again (~1 s on a busy
    2-core machine, after the master did the same). Forked, it starts with the master's
    imports in a few ms, as gunicorn's workers do. Safe here: at that point the master has
    no threads, no event loop and no open connections (migrate_sync disposed its engine),
    and every worker's lifespan creates its own (`reseed()` gives it its own request ids)."""
    import multiprocessing
    import os
    import signal

    from uvicorn import _subprocess
    from uvicorn.supervisors.multiprocess import SIGNALS

    if not hasattr(_subprocess, "spawn"):  # uvicorn's context for workers (a test checks)
        return
    # What each worker's server imports first: once here rather than once per worker.
    with contextlib.suppress(ImportError):
        import uvicorn.lifespan.on
        import uvicorn.protocols.http.httptools_impl  # noqa: F401
        import uvloop  # noqa: F401
    # The supervisor queues these signals for itself; a worker must not inherit that (a
    # SIGTERM before its server installs handlers would be lost), so it gets ours back.
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def restore_signals() -> None:
        for sig, handler in before.items():
            if handler is not None:
                signal.signal(sig, handler)

    os.register_at_fork(after_in_child=restore_signals)
    _subprocess.spawn = multiprocessing.get_context("fork")  # type: ignore[assignment]
