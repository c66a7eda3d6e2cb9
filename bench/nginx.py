"""nginx configurations: the fake upstream, and the bare `proxy_pass` hop in front of it.

Each runs as its own nginx master (one worker), so the hop's CPU and memory are measured apart
from the upstream's.
"""

from __future__ import annotations

from pathlib import Path

from fake_upstream import CHAT_COMPLETION, CHAT_COMPLETION_SSE, STREAM_HEADER
from proc import HOST


def nginx_string(text: str) -> str:
    """Quote a literal for nginx `return`: single quotes; `$` would start a variable."""
    assert "'" not in text and "$" not in text and "\\" not in text
    return f"'{text}'"


def _common(prefix: Path) -> str:
    for sub in ("temp/body", "temp/proxy", "temp/fastcgi", "temp/uwsgi", "temp/scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    return f"""
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
"""


def _http_common(prefix: Path) -> str:
    return f"""
    access_log off;
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_max_body_size 64m;  # long prompts (bench/long_context.py): 1 MB and more
"""


def _canned_locations() -> str:
    """The fake upstream's answers (the same on every port that serves them)."""
    header_var = "$http_" + STREAM_HEADER.replace("-", "_")
    return f"""
        location = /v1/chat/completions {{
            # `{STREAM_HEADER}: 1` selects the SSE variant (proxies forward it unchanged).
            if ({header_var} = "1") {{ rewrite ^ /_sse last; }}
            default_type application/json;
            return 200 {nginx_string(CHAT_COMPLETION)};
        }}
        location = /_sse {{
            internal;
            default_type text/event-stream;
            return 200 {nginx_string(CHAT_COMPLETION_SSE)};
        }}
"""


def upstream_conf(prefix: Path, port: int) -> Path:
    """The fake upstream: a fixed completion, or with `x-bench-stream: 1` a fixed SSE body."""
    conf = prefix / "nginx.conf"
    prefix.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        _common(prefix)
        + f"""
http {{
{_http_common(prefix)}
    server {{
        listen {HOST}:{port};
{_canned_locations()}
    }}
}}
"""
    )
    return conf


def tls_upstream_conf(
    prefix: Path, port: int, tls_port: int, status_port: int, cert: Path, key: Path
) -> Path:
    """The same answers on a plain port and an HTTPS port, plus `stub_status` on a third.

    The status page's `accepts` counts every connection nginx accepted: during a run only one
    target sends (to its upstream), so its delta is that target's new upstream connections,
    and on the HTTPS port each one is one TLS handshake."""
    conf = prefix / "nginx.conf"
    prefix.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        _common(prefix)
        + f"""
http {{
{_http_common(prefix)}
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:bench:1m;
    server {{
        listen {HOST}:{port};
{_canned_locations()}
    }}
    server {{
        listen {HOST}:{tls_port} ssl;
{_canned_locations()}
    }}
    server {{
        listen {HOST}:{status_port};
        location = /status {{ stub_status; }}
    }}
}}
"""
    )
    return conf


def hop_conf(prefix: Path, port: int, upstream_port: int) -> Path:
    """The least one proxy hop costs: proxy_pass with pooled keep-alive upstream connections.

    Buffering is off so a stream is passed on as it arrives, as a gateway must."""
    conf = prefix / "nginx.conf"
    prefix.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        _common(prefix)
        + f"""
http {{
{_http_common(prefix)}
    upstream fake {{
        server {HOST}:{upstream_port};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen {HOST}:{port};
        location / {{
            proxy_pass http://fake;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""
    )
    return conf


def nginx_cmd(nginx: str, conf: Path) -> list[str]:
    prefix = conf.parent
    return [nginx, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)]
