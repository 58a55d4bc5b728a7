"""``receiver sign`` prints exactly what the provider would send: the server accepts it."""

from __future__ import annotations

import asyncio
import os
import pty
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from receiver.cli import main
from tests.integration.conftest import Harness
from tests.support.factories import SECRET_ENV, TEST_SECRET, event_body


def _sign(capsys: pytest.CaptureFixture[str], config: Path, body_file: Path, *extra: str) -> str:
    code = main(
        ["sign", "--config", str(config), "--provider", "sw", "--body", str(body_file), *extra]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


@pytest.fixture
async def signing(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[Harness, Path]:
    """A receiver with the ``sw`` provider, its secret in the environment, and a body file."""
    monkeypatch.setenv(SECRET_ENV, TEST_SECRET)
    body_file = tmp_path / "event.json"
    body_file.write_bytes(event_body(1))
    return await make_harness(), body_file


async def test_signed_headers_are_accepted(
    signing: tuple[Harness, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    harness, body_file = signing
    out = _sign(capsys, harness.receiver.config.path, body_file, "--event-id", "msg_cli")
    headers = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert TEST_SECRET not in out
    resp = await harness.post("sw", body_file.read_bytes(), headers)
    answer = await resp.json()
    assert (answer["status"], answer["key"]) == ("accepted", "sw:msg_cli")


async def test_curl_line_carries_the_same_headers(
    signing: tuple[Harness, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    harness, body_file = signing
    argv = shlex.split(_sign(capsys, harness.receiver.config.path, body_file, "--curl"))
    assert argv[:4] == ["curl", "-sS", "-X", "POST"]
    assert argv[-1] == f"@{body_file}"
    headers = dict(argv[i + 1].split(": ", 1) for i, a in enumerate(argv) if a == "-H")
    resp = await harness.post("sw", body_file.read_bytes(), headers)
    assert (await resp.json())["status"] == "accepted"


def test_unknown_provider_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.factories import write_config

    monkeypatch.setenv(SECRET_ENV, TEST_SECRET)
    config = write_config(tmp_path)
    assert main(["sign", "--config", str(config), "--provider", "nope", "--body", "-"]) == 2
    assert "no provider named 'nope'" in capsys.readouterr().err


async def test_a_form_provider_is_signed_with_its_own_content_type(
    make_harness: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Twilio posts forms: a curl line that said ``application/json`` was refused 400."""
    from tests.support.factories import test_environ

    token = "twilio-auth-token-for-tests"
    harness: Harness = await make_harness(
        environ=test_environ(TW_TOKEN=token),
        providers={"tw": {"scheme": "twilio", "secret_envs": ["TW_TOKEN"]}},
    )
    body_file = tmp_path / "call.form"
    body_file.write_bytes(b"CallSid=CA1&Digits=1")
    url = str(harness.client.make_url("/webhooks/tw"))
    config = str(harness.receiver.config.path)
    argv = ["sign", "--config", config, "--provider", "tw", "--body", str(body_file)]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TW_TOKEN", token)
        code = main([*argv, "--url", url, "--curl"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    argv = shlex.split(captured.out)
    headers = dict(argv[i + 1].split(": ", 1) for i, a in enumerate(argv) if a == "-H")
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    resp = await harness.post("tw", body_file.read_bytes(), headers)
    assert resp.status == 200, await resp.text()


def test_signing_needs_only_that_providers_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.factories import write_config

    monkeypatch.setenv(SECRET_ENV, TEST_SECRET)
    monkeypatch.delenv("OTHER_PROVIDER_SECRET", raising=False)
    config = write_config(
        tmp_path,
        providers={
            "sw": {"scheme": "standard-webhooks", "secret_envs": [SECRET_ENV]},
            "other": {"scheme": "stripe", "secret_envs": ["OTHER_PROVIDER_SECRET"]},
        },
    )
    body = tmp_path / "b.json"
    body.write_bytes(event_body(1))
    code = main(["sign", "--config", str(config), "--provider", "sw", "--body", str(body)])
    assert code == 0, capsys.readouterr().err


def test_an_event_id_the_provider_does_not_read_is_said_to_be_unused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--event-id`` for Stripe (keyed on the body's ``id``) was silently ignored: two
    "different" deliveries were one event."""
    from tests.support.factories import write_config

    monkeypatch.setenv("STRIPE_TEST_SECRET", "whsec_test")
    config = write_config(
        tmp_path, providers={"stripe": {"scheme": "stripe", "secret_envs": ["STRIPE_TEST_SECRET"]}}
    )
    body = tmp_path / "evt.json"
    body.write_bytes(b'{"id": "evt_1", "type": "charge.succeeded"}')
    argv = ["sign", "--config", str(config), "--provider", "stripe", "--body", str(body)]
    assert main([*argv, "--event-id", "evt_other"]) == 0
    assert "--event-id is not sent: provider stripe reads its event ID from json:id" in (
        capsys.readouterr().err
    )
    assert main(argv) == 0
    assert capsys.readouterr().err == ""


async def test_a_header_keyed_provider_gets_its_id_header(
    make_harness: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ``hmac`` provider keyed on a header: the signed delivery lacked that header and was
    refused 400 missing_event_id."""
    from tests.support.factories import test_environ

    provider = {
        "scheme": "hmac",
        "secret_envs": ["WIDGET_SECRET"],
        "event_id": "header:X-Widget-Delivery",
        "options": {"header": "X-Widget-Signature", "algorithm": "sha256", "encoding": "hex"},
    }
    harness: Harness = await make_harness(
        environ=test_environ(WIDGET_SECRET="widget-secret"), providers={"w": provider}
    )
    body_file = tmp_path / "w.json"
    body_file.write_bytes(b'{"n": 1}')
    argv = ["sign", "--config", str(harness.receiver.config.path), "--provider", "w"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WIDGET_SECRET", "widget-secret")
        code = main([*argv, "--body", str(body_file), "--event-id", "d-1"])
    out = capsys.readouterr().out
    assert code == 0
    headers = dict(line.split(": ", 1) for line in out.strip().splitlines())
    resp = await harness.post("w", body_file.read_bytes(), headers)
    assert (await resp.json())["key"] == "w:d-1"


def test_a_curl_line_needs_a_body_file(
    signing: tuple[Harness, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    harness, _ = signing
    argv = ["sign", "--config", str(harness.receiver.config.path), "--provider", "sw", "--curl"]
    assert main(argv) == 2
    assert "--curl needs --body FILE" in capsys.readouterr().err


def _sign_provider(
    capsys: pytest.CaptureFixture[str], harness: Harness, name: str, body_file: Path, *extra: str
) -> tuple[int, dict[str, str], str]:
    argv = ["sign", "--config", str(harness.receiver.config.path), "--provider", name]
    code = main([*argv, "--body", str(body_file), *extra])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, dict(line.split(": ", 1) for line in lines), captured.err


async def test_a_signed_content_naming_headers_is_signed_with_them(
    make_harness: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ``hmac`` provider whose signed content names its ID header crashed ``sign`` with a
    traceback: the header was added only after signing. A header it names that nobody gave
    is one error line."""
    from tests.support.factories import test_environ

    options = {
        "header": "X-Sig",
        "algorithm": "sha256",
        "encoding": "hex",
        "signed_content": "{header:X-Id}.{header:X-Shop}.{body}",
    }
    provider = {
        "scheme": "hmac",
        "secret_envs": ["G_SECRET"],
        "event_id": "header:X-Id",
        "options": options,
    }
    harness: Harness = await make_harness(
        environ=test_environ(G_SECRET="g-secret"), providers={"g": provider}
    )
    body_file = tmp_path / "g.json"
    body_file.write_bytes(b'{"n": 1}')
    with pytest.MonkeyPatch.context() as env:
        env.setenv("G_SECRET", "g-secret")
        code, _, err = _sign_provider(capsys, harness, "g", body_file, "--event-id", "E1")
        assert code == 2
        assert err.startswith("error: cannot sign: the signed content needs the X-Shop header")
        assert "Traceback" not in err
        code, headers, err = _sign_provider(
            capsys, harness, "g", body_file, "--event-id", "E1", "--header", "X-Shop: s1"
        )
    assert code == 0, err
    assert (headers["X-Id"], headers["X-Shop"]) == ("E1", "s1")
    resp = await harness.post("g", body_file.read_bytes(), headers)
    assert (await resp.json())["key"] == "g:E1"


async def test_extra_headers_key_and_type_a_hand_made_delivery_as_a_real_one(
    make_harness: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """GitHub keys on the hook ID too and types on X-GitHub-Event: without them a hand-made
    delivery got a key and a type no real one has."""
    from tests.support.factories import test_environ

    provider = {"scheme": "github", "secret_envs": ["GH_SECRET"]}
    harness: Harness = await make_harness(
        environ=test_environ(GH_SECRET="gh-secret"), providers={"gh": provider}
    )
    body_file = tmp_path / "push.json"
    body_file.write_bytes(b'{"ref": "refs/heads/main"}')
    extra = ["--event-id", "d-1", "--header", "X-GitHub-Hook-ID: 42"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GH_SECRET", "gh-secret")
        code, headers, err = _sign_provider(
            capsys, harness, "gh", body_file, *extra, "--header", "X-GitHub-Event: push"
        )
        assert code == 0, err
        clash = ["--header", "X-GitHub-Delivery: my-guid"]
        code, _, err = _sign_provider(capsys, harness, "gh", body_file, *extra, *clash)
        assert code == 2 and "sign writes that header itself" in err  # not silently dropped
    resp = await harness.post("gh", body_file.read_bytes(), headers)
    answer = await resp.json()
    assert answer["key"] == "gh:42:d-1"
    with sqlite3.connect(harness.receiver.config.settings.storage.path) as conn:
        [(event_type,)] = conn.execute("SELECT event_type FROM events").fetchall()
    assert event_type == "push"


@pytest.mark.parametrize("line", ["no colon", "Bad Name: v", "X-A: v\r\nX-B: w"])
def test_a_header_that_is_not_a_header_line_is_a_usage_error(
    signing: tuple[Harness, Path], capsys: pytest.CaptureFixture[str], line: str
) -> None:
    harness, body_file = signing
    argv = ["sign", "--config", str(harness.receiver.config.path), "--provider", "sw"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--body", str(body_file), "--header", line])
    assert info.value.code == 2
    assert "not a header line" in capsys.readouterr().err


def test_an_ipv6_host_is_bracketed_in_the_urls_printed() -> None:
    from receiver.cli import _origin

    assert _origin("::1", 8080) == "http://[::1]:8080"
    assert _origin("127.0.0.1", 8080) == "http://127.0.0.1:8080"


def test_every_command_documents_its_config_option(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("serve", "check-config", "sign", "events", "replay", "purge"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--config PATH" in capsys.readouterr().out, command
    for action in ("list", "show"):  # the events actions' own --help, where it was hidden
        with pytest.raises(SystemExit):
            main(["events", action, "--help"])
        assert "--config PATH" in capsys.readouterr().out, action


def _sign_from_a_terminal(config: Path, typed: bytes) -> subprocess.CompletedProcess[bytes]:
    controller, terminal = pty.openpty()
    argv = [sys.executable, "-m", "receiver", "sign", "--config", str(config), "--provider", "sw"]
    try:
        proc = subprocess.Popen(
            argv,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(Path.cwd())},
        )
        os.write(controller, typed)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(controller)
        os.close(terminal)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


async def test_a_body_read_from_the_terminal_is_announced(signing: tuple[Harness, Path]) -> None:
    """``receiver sign --provider sw`` with no --body sat waiting on the terminal, silently."""
    harness, _ = signing
    config = harness.receiver.config.path
    done = await asyncio.to_thread(_sign_from_a_terminal, config, b'{"id": 1}\n\x04')  # Ctrl-D
    assert done.returncode == 0, done.stderr
    assert b"reading the body from the terminal; end it with Ctrl-D" in done.stderr
    assert b"webhook-signature: v1," in done.stdout
