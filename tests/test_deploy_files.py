"""The deployment files (deploy/) name commands, paths and settings that exist, and their linter
fails on broken files. No container runtime here: the image's commands are run as the image
would run them (its ENV, ENTRYPOINT, CMD and HEALTHCHECK script), on the host."""

from __future__ import annotations

import http.server
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tollway.core.settings import Settings

from .fake_upstream import FakeUpstream
from .fixtures_gateway import write_config
from .servers import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
TOLLWAY = Path(sys.executable).parent / "tollway"  # the console script the image runs


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile's last stage, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    last_from = max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM "))
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines[last_from:]]


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instr, args in _dockerfile():
        if instr == "ENV":
            for pair in shlex.split(args):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def _json_form(instr: str) -> list[str]:
    args = next(a for i, a in _dockerfile() if i == instr)
    if instr == "HEALTHCHECK":  # options, then CMD [...]
        args = args.split(" CMD ", 1)[1]
    return list(yaml.safe_load(args))


def _manifests() -> list[dict[str, object]]:
    docs = yaml.safe_load_all((DEPLOY / "kubernetes" / "tollway.yaml").read_text())
    return [d for d in docs if d]


def _container(kind: str) -> dict[str, object]:
    doc = next(d for d in _manifests() if d["kind"] == kind)
    spec = doc["spec"]["template"]["spec"]  # type: ignore[index]
    container: dict[str, object] = spec["containers"][0]
    return container


def _systemd(key: str) -> str:
    text = (DEPLOY / "systemd" / "tollway.service").read_text()
    return re.search(rf"^{key}=(.+)$", text, re.M).group(1)  # type: ignore[union-attr]


@pytest.fixture()
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream("deploy", "sk-upstream-SECRET-deploy").start()
    yield up
    up.stop()


def _healthcheck(port: int) -> int:
    """The image's HEALTHCHECK command, with its script taken from where COPY takes it."""
    cmd = _json_form("HEALTHCHECK")
    copied = {dst: src for i, a in _dockerfile() if i == "COPY" for src, dst in [a.split()[-2:]]}
    script = ROOT / copied[cmd[-1]]
    env = {**os.environ, "TOLLWAY_PORT": str(port)}
    return subprocess.run([sys.executable, str(script)], env=env, timeout=30).returncode


def test_the_image_commands_migrate_serve_and_pass_every_probe(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    entry, cmd = _json_form("ENTRYPOINT"), _json_form("CMD")
    assert entry == ["tollway"] and cmd == ["serve"]
    image_env = _image_env()
    assert image_env["TOLLWAY_HOST"] == "0.0.0.0"  # inside the container only
    data = Path(image_env["TOLLWAY_DATABASE_URL"].split("///", 1)[1]).parent
    # The image's environment, with its data directory moved under tmp and 127.0.0.1 bound.
    port = free_port()
    db_url = image_env["TOLLWAY_DATABASE_URL"].replace(str(data), str(tmp_path))
    env = {
        **os.environ,
        **image_env,
        "PATH": f"{TOLLWAY.parent}:{os.environ['PATH']}",
        "TOLLWAY_HOST": "127.0.0.1",
        "TOLLWAY_PORT": str(port),
        "TOLLWAY_DATABASE_URL": db_url,
        "TOLLWAY_CONFIG": str(
            write_config(
                tmp_path / "tollway.yaml",
                [{"name": "u", "base_url": upstream.base_url, "api_key": upstream.api_key}],
            )
        ),
    }
    # The one-off migration of compose, the Helm hook Job and systemd's ExecStartPre.
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    job = next(d for d in _manifests() if d["kind"] == "Job")
    migrate_args = job["spec"]["template"]["spec"]["containers"][0]["args"]  # type: ignore[index]
    assert compose["services"]["migrate"]["command"] == migrate_args == ["migrate"]
    assert _systemd("ExecStartPre").split()[1:] == ["migrate"]
    assert _systemd("ExecStart").split()[1:] == cmd == _container("Deployment")["args"]
    done = subprocess.run([*entry, *migrate_args], env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 0 and (tmp_path / "tollway.db").is_file()

    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([*entry, *cmd], env=env, cwd=tmp_path, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, 30)
        # Kubernetes' probes, by the paths and the port the manifests name.
        container = _container("Deployment")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}  # type: ignore[attr-defined]
        assert ports["http"] == int(image_env["TOLLWAY_PORT"])
        for probe in ("readinessProbe", "livenessProbe"):
            path = container[probe]["httpGet"]["path"]  # type: ignore[index]
            assert httpx.get(url + path, timeout=5).status_code == 200, probe
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # type: ignore[index]
        assert _healthcheck(port) == 0
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    # The server secret was created beside the database, in the data volume, mode 0600.
    secret = tmp_path / "tollway.db.secret"
    assert secret.is_file() and secret.stat().st_mode & 0o077 == 0


class _Unready(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.end_headers()
        self.wfile.write(b'{"status": "unready"}')

    def log_message(self, *args: object) -> None:
        pass


def test_the_healthcheck_fails_when_readyz_is_503_or_nothing_listens() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unready)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert _healthcheck(server.server_address[1]) == 1
    finally:
        server.shutdown()
        server.server_close()
    assert _healthcheck(free_port()) == 1


def test_compose_runs_two_instances_scraped_by_prometheus_and_grafana_loads_the_dashboard() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    instances = sorted(n for n in services if n.startswith("tollway-"))
    assert instances == ["tollway-1", "tollway-2"]
    assert {"postgres", "redis", "migrate", "prometheus", "grafana"} <= set(services)
    for name in instances:
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["TOLLWAY_REDIS_URL"].startswith("redis://redis:")
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == [f"{n}:8000" for n in instances]
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "tollway.yml").read_text()
    )
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    dashboards = provider["providers"][0]["options"]["path"]
    assert mounts["./grafana/tollway-dashboard.json"].startswith(dashboards + "/")


def test_kubernetes_pods_run_unprivileged_and_systemd_outwaits_the_drain() -> None:
    for kind in ("Deployment", "Job"):
        ctx = _container(kind)["securityContext"]
        assert ctx["runAsNonRoot"] and ctx["readOnlyRootFilesystem"]  # type: ignore[index]
        assert not ctx["allowPrivilegeEscalation"]  # type: ignore[index]
    kinds = {d["kind"] for d in _manifests()}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "Job"} <= kinds
    assert {"PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    job = next(d for d in _manifests() if d["kind"] == "Job")
    assert "pre-upgrade" in job["metadata"]["annotations"]["helm.sh/hook"]  # type: ignore[index]
    defaults = Settings()
    drain = defaults.shutdown_ready_delay + defaults.shutdown_drain_seconds
    assert int(_systemd("TimeoutStopSec")) > drain
    assert _systemd("ProtectSystem") == "strict" and _systemd("DynamicUser") == "yes"


def test_every_tollway_variable_in_deploy_is_a_setting() -> None:
    known = {f"TOLLWAY_{name.upper()}" for name in Settings.model_fields}
    named: set[str] = set()
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix not in {".json"}:
            named |= set(re.findall(r"\bTOLLWAY_[A-Z0-9_]+\b", path.read_text()))
    assert named, "no TOLLWAY_* variable found: the scan is broken"
    assert named - known == set()


def test_the_build_context_leaves_secrets_and_databases_out() -> None:
    rules = [
        ln.strip()
        for ln in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert rules[0] == "*"  # everything out, then only what the image needs back in
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "README.md",
        "requirements/runtime.lock",  # installed with --require-hashes
        "tollway",
        "deploy/docker",
    }
    for pattern in ("**/*.db", "**/*.secret", "**/.env", "**/tollway-spool"):
        assert pattern in rules
    copied = [a.split()[0] for i, a in _dockerfile() if i == "COPY" and "--from" not in a]
    assert all(src.startswith("deploy/docker/") for src in copied)


def _tools_present() -> bool:
    bins = [TOLLWAY.parent / t for t in ("hadolint", "yamllint", "kubernetes-validate")]
    return all(b.exists() for b in bins) and shutil.which("systemd-analyze") is not None


def test_the_deploy_lint_fails_on_each_kind_of_broken_file(tmp_path: Path) -> None:
    if not _tools_present():
        if os.environ.get("CI") == "true":
            pytest.fail("the deploy linters are not installed")
        pytest.skip("the deploy linters are not installed")
    broken = tmp_path / "deploy"
    shutil.copytree(DEPLOY, broken)
    edit = {
        # root as the last user; a typo in a compose key; a misspelt probe field; a bad
        # systemd value; the chart changed without its render.
        "Dockerfile": ("USER 10001:10001", "USER root"),
        "docker-compose.yml": ("    restart: unless-stopped\n", "    restrat: unless-stopped\n"),
        "kubernetes/tollway.yaml": ("periodSeconds: 5", "periodSecond: 5"),
        "systemd/tollway.service": ("ProtectSystem=strict", "ProtectSystem=sometimes"),
        "helm/tollway/values.yaml": ("minAvailable: 1", "minAvailable: 2"),
        "prometheus/prometheus.yml": ("scrape_interval: 15s", "scrape_interval: 15s   "),
    }
    for name, (old, new) in edit.items():
        path = broken / name
        assert old in path.read_text(), name
        path.write_text(path.read_text().replace(old, new, 1))
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "lint-deploy"), str(broken)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = done.stderr.split("deploy lint FAILED:")[-1]
    print(summary)
    assert done.returncode == 1
    checks = (
        "hadolint",
        "yamllint",
        "compose schema",
        "kubernetes-validate",
        "systemd-analyze verify",
    )
    for check in checks:
        assert f"- {check}" in summary, check
    if (ROOT / ".venv" / "deploy-tools" / "helm").exists():
        assert "- kubernetes/tollway.yaml is the chart's render" in summary
    # The real files pass (scripts/test runs the same script on them).
    clean = subprocess.run(
        ["bash", str(ROOT / "scripts" / "lint-deploy")], capture_output=True, timeout=300
    )
    assert clean.returncode == 0, clean.stderr.decode()
