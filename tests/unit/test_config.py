"""Config: the YAML contract, every problem named by its key path, secrets by reference only."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from receiver.cli import main
from receiver.config import load_config
from receiver.errors import ConfigError
from tests.support.provider_cases import CASES, NOW, sendgrid_public_key

SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
ENV = {"SW_SECRET": SECRET}

VALID = """
server: {host: 127.0.0.1, port: 8080, max_body_bytes: 1048576}
admin: {host: 127.0.0.1, port: 8081, token_env: RECEIVER_ADMIN_TOKEN}
storage: {path: data/receiver.db}
worker: {concurrency: 8, max_attempts: 10}
providers:
  billing:
    scheme: standard-webhooks
    secret_envs: [SW_SECRET]
    event_id: "header:webhook-id"
    payload_retention: 3d
    dedupe_retention: 30d
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "receiver.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ=ENV if env is None else env)
    return {p.path: p.message for p in info.value.problems}


def test_the_design_example_loads(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, VALID), environ=ENV)
    provider = config.providers["billing"]
    assert provider.scheme.name == "standard-webhooks"
    assert provider.event_id.expression == "header:webhook-id"
    assert provider.payload_retention_s == 3 * 86400
    assert provider.dedupe_retention_s == 30 * 86400
    assert config.settings.server.max_body_bytes == 1_048_576


def test_the_bundled_config_loads_as_is() -> None:
    config = load_config(Path("config/receiver.yaml"), environ={})
    assert "demo" in config.providers


def test_merge_keys_share_a_block_and_what_is_written_beside_them_wins(tmp_path: Path) -> None:
    text = (
        "providers:\n"
        "  a: &base {scheme: standard-webhooks, secret_envs: [SW_SECRET], tolerance_s: 60}\n"
        "  b:\n"
        "    <<: *base\n"
        "    tolerance_s: 10\n"
    )
    providers = load_config(_write(tmp_path, text), environ=ENV).settings.providers
    assert (providers["a"].tolerance_s, providers["b"].tolerance_s) == (60, 10)
    assert providers["b"].secret_envs == ["SW_SECRET"]
    repeated = text + "    tolerance_s: 20\n"
    with pytest.raises(ConfigError, match="duplicate key 'tolerance_s'"):
        load_config(_write(tmp_path, repeated), environ=ENV)
    twice = text + "    <<: *base\n"
    with pytest.raises(ConfigError, match="merge key '<<' given twice"):
        load_config(_write(tmp_path, twice), environ=ENV)


def test_a_merged_block_used_again_elsewhere_is_not_a_duplicate() -> None:
    """Merging rewrites a block's keys in place: checked afterwards, a block defined inside a
    merge, itself merging, read as holding its own key twice where it was used again."""
    from receiver.config import _UniqueKeyLoader

    text = "c: {<<: &b2 {<<: {x: 1}, x: 2}}\nd: *b2\n"
    doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    # Loaded, not refused. (What ``c`` gets from a merge of a merge is PyYAML's to decide,
    # and its releases differ: 6.0.3 gives 2, 6.0.4 gives 1.)
    assert doc["d"] == {"x": 2} and set(doc["c"]) == {"x"}


def test_the_search_index_is_on_unless_turned_off(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, VALID), environ=ENV).settings.storage.search_index
    off = VALID.replace("{path: data/receiver.db}", "{path: data/receiver.db, search_index: false}")
    assert not load_config(_write(tmp_path, off), environ=ENV).settings.storage.search_index
    wrong = off.replace("search_index: false", "search_index: nope")
    assert "storage.search_index" in _problems(tmp_path, wrong)


def test_unknown_keys_are_errors_with_their_path(tmp_path: Path) -> None:
    text = VALID.replace("concurrency: 8", "concurency: 8").replace(
        "    scheme: standard-webhooks", "    scheme: standard-webhooks\n    tolerence_s: 5"
    )
    problems = _problems(tmp_path, text)
    assert "worker.concurency" in problems
    assert "providers.billing.tolerence_s" in problems
    assert all("unknown key" in m for m in problems.values())


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = """
server: {port: 99999}
storage: {synchronous: SOMETIMES}
providers:
  a: {scheme: nope}
  b: {scheme: stripe}
  c:
    scheme: github
    secret_envs: [UNSET_VAR]
    handler: {kind: ftp}
"""
    problems = _problems(tmp_path, text, env={})
    assert "server.port" in problems
    assert "storage.synchronous" in problems
    assert "providers.c.handler" in problems
    assert len(problems) >= 3


def test_a_provider_with_one_problem_still_has_its_others_reported(tmp_path: Path) -> None:
    """One run names everything: a bad scheme or a misspelt key does not hide an unset
    variable of the same provider until the first problem is fixed."""
    text = """
providers:
  github: {scheme: githubb, secret_envs: [UNSET_A]}
  typo: {scheme: stripe, secret_envs: [UNSET_B], secrets_env: [X], tolerance_s: soon}
"""
    problems = _problems(tmp_path, text, env={})
    assert "unknown scheme 'githubb'" in problems["providers.github.scheme"]
    assert "UNSET_A is not set" in problems["providers.github.secret_envs.0"]
    assert "unknown key" in problems["providers.typo.secrets_env"]
    assert "providers.typo.tolerance_s" in problems
    assert "UNSET_B is not set" in problems["providers.typo.secret_envs.0"]


def test_provider_problems_name_their_keys(tmp_path: Path) -> None:
    text = """
providers:
  a: {scheme: nope}
  b: {scheme: github}
  c: {scheme: github, secret_envs: [UNSET_VAR]}
  d: {scheme: none, event_id: "xml:id"}
  e: {scheme: none, event_id: body_sha256, payload_retention: 30d, dedupe_retention: 1d}
  f: {scheme: sendgrid, secret_envs: [F_KEY], on_conflict: reject}
"""
    problems = _problems(tmp_path, text, env={"F_KEY": sendgrid_public_key(0)})
    assert "unknown scheme 'nope'" in problems["providers.a.scheme"]
    assert "needs a secret" in problems["providers.b.secret_envs"]
    assert "UNSET_VAR is not set" in problems["providers.c.secret_envs.0"]
    assert "providers.d.event_id" in problems
    assert "providers.e.payload_retention" in problems
    assert "one event of a batch" in problems["providers.f.on_conflict"]


def test_secret_files_are_read_and_unreadable_ones_named(tmp_path: Path) -> None:
    secret_file = tmp_path / "sw.secret"
    secret_file.write_text(SECRET + "\n")
    ok = f"providers:\n  p: {{scheme: standard-webhooks, secret_files: [{secret_file}]}}\n"
    assert "p" in load_config(_write(tmp_path, ok), environ={}).providers
    missing = tmp_path / "missing.secret"
    bad = f"providers:\n  p: {{scheme: standard-webhooks, secret_files: [{missing}]}}\n"
    problems = _problems(tmp_path, bad, env={})
    assert str(missing) in problems["providers.p.secret_files.0"]


@pytest.mark.parametrize("kind", ["fifo", "directory", "huge", "not utf-8"])
def test_a_secret_file_that_is_not_a_small_text_file_is_named_not_read(
    tmp_path: Path, kind: str
) -> None:
    """A FIFO would block start-up and /dev/zero never ends: neither is read."""
    import os

    path = tmp_path / "odd.secret"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "huge":
        path.write_bytes(b"a" * (65 * 1024))
    else:
        path.write_bytes(b"\xff\xfe secret")
    text = f"providers:\n  p: {{scheme: standard-webhooks, secret_files: [{path}]}}\n"
    problems = _problems(tmp_path, text, env={})
    assert str(path) in problems["providers.p.secret_files.0"]


@pytest.mark.parametrize("value", ["   ", "\n", "\t \n"])
def test_a_blank_secret_variable_is_refused(tmp_path: Path, value: str) -> None:
    text = "providers:\n  p: {scheme: github, secret_envs: [GH_SECRET]}\n"
    problems = _problems(tmp_path, text, env={"GH_SECRET": value})
    assert "GH_SECRET is not set (or is empty or blank)" in problems["providers.p.secret_envs.0"]


def test_a_secret_variable_is_stripped_like_a_secret_file(tmp_path: Path) -> None:
    text = "providers:\n  p: {scheme: github, secret_envs: [GH_SECRET]}\n"
    config = load_config(_write(tmp_path, text), environ={"GH_SECRET": "s3cret\n"})
    import hashlib
    import hmac

    from receiver.models import InboundRequest

    body = b'{"zen": "x"}'
    mac = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    request = InboundRequest(
        provider="p",
        method="POST",
        url="http://127.0.0.1/webhooks/p",
        headers={"x-hub-signature-256": f"sha256={mac}", "x-github-delivery": "d1"},
        body=body,
    )
    config.providers["p"].verifier.verify(request, now_s=0)  # keyed without the newline


def test_a_malformed_secret_is_an_error_that_does_not_echo_it(tmp_path: Path) -> None:
    text = "providers:\n  p: {scheme: standard-webhooks, secret_envs: [SW_SECRET]}\n"
    canary = "whsec_%%%not-base64-CANARY%%%"
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={"SW_SECRET": canary})
    assert "CANARY" not in str(info.value)


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    text = VALID + "  billing:\n    scheme: none\n    event_id: body_sha256\n"
    with pytest.raises(ConfigError, match="duplicate key 'billing'"):
        load_config(_write(tmp_path, text), environ=ENV)


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(_write(tmp_path, "providers: [unclosed"), environ={})
    assert f'in "{tmp_path / "receiver.yaml"}"' in str(info.value)  # not "<unicode string>"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml", environ={})


@pytest.mark.parametrize("encoded", ["latin-1", "utf-16"])
def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path: Path, encoded: str) -> None:
    """A Latin-1 comment or a file saved as UTF-16 ended in a traceback (exit 1)."""
    path = tmp_path / "receiver.yaml"
    path.write_bytes(("# réception\n" + VALID).encode(encoded))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path, environ=ENV)
    assert main(["check-config", "--config", str(path)]) == 2


def test_a_secret_file_with_a_byte_order_mark_holds_the_same_secret(tmp_path: Path) -> None:
    """An editor's byte-order mark became part of a key used as text (Stripe's): every real
    delivery was refused, while ``sign``, with the same wrong key, agreed."""
    stripe = next(c for c in CASES if c.id == "stripe")
    secret_file = tmp_path / "stripe.secret"
    secret_file.write_bytes(("\ufeff" + stripe.secret(0) + "\r\n").encode())
    text = f"providers:\n  p: {{scheme: stripe, secret_files: [{secret_file}]}}\n"
    verifier = load_config(_write(tmp_path, text), environ={}).providers["p"].verifier
    verifier.verify(stripe.request(0), now_s=NOW)


def test_scheme_none_warns(tmp_path: Path) -> None:
    config = load_config(
        _write(tmp_path, "providers:\n  t: {scheme: none, event_id: body_sha256}\n"), environ={}
    )
    assert any("NOT verified" in w for w in config.warnings)


def test_a_window_on_a_scheme_that_signs_no_time_warns(tmp_path: Path) -> None:
    """``tolerance_s: 300`` on GitHub read as "old replays are refused", and changed nothing."""
    text = (
        "providers:\n"
        "  gh: {scheme: github, secret_envs: [GH], tolerance_s: 300}\n"
        "  gl: {scheme: gitlab, secret_envs: [GL], tolerance_s: 300}\n"
        "  sw: {scheme: standard-webhooks, secret_envs: [SW_SECRET], tolerance_s: 60}\n"
    )
    env = {"GH": "gh-secret", "GL": SECRET, "SW_SECRET": SECRET}
    warnings = load_config(_write(tmp_path, text), environ=env).warnings
    assert [w for w in warnings if "tolerance_s has no effect" in w] == [
        "provider gh: tolerance_s has no effect, scheme github signs no timestamp here (an old "
        "delivery replayed cannot be told by its age)"
    ]


def test_risky_but_valid_settings_warn(tmp_path: Path) -> None:
    """A dedupe window shorter than the provider redelivers for, and a credential written in
    the YAML, passed check-config without a word."""
    text = (
        "providers:\n"
        "  st: {scheme: stripe, secret_envs: [ST], dedupe_retention: 1d}\n"
        "  long: {scheme: stripe, secret_envs: [ST], dedupe_retention: 60d}\n"
        "  h: {scheme: hmac, secret_envs: [ST], event_id: 'json:id', dedupe_retention: 1h,"
        " options: {header: X-Sig}}\n"
        "  fwd:\n"
        "    scheme: github\n"
        "    secret_envs: [ST]\n"
        "    handler:\n"
        "      kind: http\n"
        "      url: http://127.0.0.1:9/hook\n"
        "      headers: {Authorization: Bearer abc, X-Team: payments}\n"
        "      header_envs: {X-Api-Key: ST}\n"
    )
    warnings = load_config(_write(tmp_path, text), environ={"ST": "whsec_x"}).warnings
    assert [w for w in warnings if "dedupe_retention" in w] == [
        "provider st: dedupe_retention 1d is shorter than the stripe preset's 30d, which covers"
        " its redeliveries: one that comes later is a new event, and its handler runs again"
    ]
    assert [w for w in warnings if "header_envs" in w] == [
        "provider fwd: handler.headers.Authorization is written in the config file, like a"
        " credential: name the environment variable that holds it in handler.header_envs"
    ]


def test_a_url_signed_without_public_url_warns(tmp_path: Path) -> None:
    """Without public_url the signed URL is the request's, Host header and all: a delivery
    signed for another URL of the same account passed."""
    text = (
        "providers:\n"
        "  tw: {scheme: twilio, secret_envs: [TW]}\n"
        "  tw2: {scheme: twilio, secret_envs: [TW], public_url: 'https://hooks.example/tw2'}\n"
        "  h: {scheme: hmac, secret_envs: [TW], event_id: 'json:id',"
        " options: {header: X-Sig, signed_content: '{url}{body}'}}\n"
        "  h2: {scheme: hmac, secret_envs: [TW], event_id: 'json:id', options: {header: X-Sig}}\n"
    )
    warnings = load_config(_write(tmp_path, text), environ={"TW": "tok"}).warnings
    assert [w.split(":")[0] for w in warnings if "Host header" in w] == [
        "provider tw",
        "provider h",
    ]


def test_a_secret_two_providers_share_warns(tmp_path: Path) -> None:
    """Most schemes do not sign the URL: a delivery signed for one provider passed at the
    other's URL, stored under that name."""
    text = (
        "providers:\n"
        "  a: {scheme: github, secret_envs: [A]}\n"
        "  b: {scheme: github, secret_envs: [B, C]}\n"
        "  c: {scheme: github, secret_envs: [C]}\n"
    )
    env = {"A": "same-secret", "B": " same-secret\n", "C": "its-own"}
    warnings = load_config(_write(tmp_path, text), environ=env).warnings
    assert [w for w in warnings if "share a secret" in w] == [
        "providers a and b share a secret: a delivery signed for either passes at both URLs,"
        " stored under the name it was sent to; give each endpoint its own secret",
        "providers b and c share a secret: a delivery signed for either passes at both URLs,"
        " stored under the name it was sent to; give each endpoint its own secret",
    ]
    assert "same-secret" not in "".join(warnings)


def test_a_payload_window_past_a_presets_dedupe_window_names_it(tmp_path: Path) -> None:
    text = "providers:\n  gh: {scheme: github, secret_envs: [GH], payload_retention: 14d}\n"
    with pytest.raises(ConfigError) as raised:
        load_config(_write(tmp_path, text), environ={"GH": "gh-secret"})
    assert "must not be longer than dedupe_retention (1w, the github preset's:" in str(raised.value)


def test_a_window_of_zero_warns_that_the_check_is_off(tmp_path: Path) -> None:
    text = (
        "providers:\n"
        "  gh: {scheme: github, secret_envs: [GH], tolerance_s: 0}\n"
        "  sw: {scheme: standard-webhooks, secret_envs: [SW_SECRET], tolerance_s: 0}\n"
        # Neither signs a time as configured: a plain GitLab token, hmac without a timestamp.
        "  gl: {scheme: gitlab, secret_envs: [GL], tolerance_s: 0}\n"
        "  h: {scheme: hmac, secret_envs: [GH], tolerance_s: 0, event_id: 'json:id',"
        " options: {header: X-Sig}}\n"
    )
    env = {"GH": "gh-secret", "SW_SECRET": SECRET, "GL": "gitlab-token"}
    warnings = load_config(_write(tmp_path, text), environ=env).warnings
    assert [w for w in warnings if "tolerance_s" in w] == [
        "provider sw: tolerance_s 0 turns the signed timestamp's check off: an old delivery"
        " replayed is told apart only while its key is kept (dedupe_retention)"
    ]


def test_check_config_prints_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SW_SECRET", SECRET)
    assert main(["check-config", "--config", str(_write(tmp_path, VALID))]) == 0
    out = capsys.readouterr().out
    assert "billing: scheme=standard-webhooks" in out
    assert "dedupe_retention=30d" in out
    assert SECRET not in out


def test_check_config_fails_with_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SW_SECRET", raising=False)
    text = VALID.replace("concurrency: 8", "concurency: 8")
    assert main(["check-config", "--config", str(_write(tmp_path, text))]) == 2
    err = capsys.readouterr().err
    assert "worker.concurency: unknown key" in err
    assert "providers.billing.secret_envs.0: environment variable SW_SECRET is not set" in err


def test_the_body_memory_budget_must_hold_one_body_at_the_cap(tmp_path: Path) -> None:
    text = VALID.replace(
        "max_body_bytes: 1048576", "max_body_bytes: 1048576, body_memory_bytes: 1000"
    )
    problems = _problems(tmp_path, text)
    assert "body_memory_bytes must be at least max_body_bytes" in problems["server"]


@pytest.mark.parametrize("text", ["? [a, b]\n: 1\n", "providers:\n  ? {x: 1}\n  : 2\n"])
def test_a_list_or_mapping_as_a_key_is_a_config_error(tmp_path: Path, text: str) -> None:
    """Not a raw TypeError traceback: the file is named and check-config exits 2."""
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), environ={})
    assert "not valid YAML" in str(info.value) and "plain value" in str(info.value)
    assert main(["check-config", "--config", str(tmp_path / "receiver.yaml")]) == 2


def test_yaml_switches_and_infinities_are_not_numbers(tmp_path: Path) -> None:
    """``port: true`` used to load as port 1 and ``concurrency: yes`` as one slot, silently."""
    text = (
        VALID.replace("port: 8080", "port: true").replace("concurrency: 8", "concurrency: yes")
        + "    requeue_dead: 1\n    max_attempts: on\n"
    )
    text = text.replace("worker: {", "worker: {lease_s: .inf, ")
    problems = _problems(tmp_path, text)
    for path in (
        "server.port",
        "worker.concurrency",
        "worker.lease_s",
        "providers.billing.requeue_dead",
        "providers.billing.max_attempts",
    ):
        assert path in problems, problems


def test_what_serve_would_refuse_is_a_problem_of_the_file(tmp_path: Path) -> None:
    text = VALID.replace("port: 8081", "port: 8080").replace(
        "path: data/receiver.db", f"path: {tmp_path}"
    )
    problems = _problems(tmp_path, text)
    assert "ingest listener's port" in problems["admin.port"]
    assert "not a directory" in problems["storage.path"]
    blank_token_env = VALID.replace("token_env: RECEIVER_ADMIN_TOKEN", "token_env: ''")
    assert "admin.token_env" in _problems(tmp_path, blank_token_env)


def test_check_config_refuses_an_exposed_admin_api_without_its_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve refuses to start so (DESIGN §3); check-config said OK to the same file."""
    monkeypatch.setenv("SW_SECRET", SECRET)
    monkeypatch.delenv("RECEIVER_ADMIN_TOKEN", raising=False)
    path = _write(tmp_path, VALID.replace("admin: {host: 127.0.0.1", "admin: {host: 0.0.0.0"))
    assert main(["check-config", "--config", str(path)]) == 2
    assert "admin.host" in capsys.readouterr().err
    monkeypatch.setenv("RECEIVER_ADMIN_TOKEN", "a-long-enough-admin-token-for-tests")
    assert main(["check-config", "--config", str(path)]) == 0


def test_check_config_names_a_file_problem_and_an_exposed_admin_api_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SW_SECRET", SECRET)
    monkeypatch.delenv("RECEIVER_ADMIN_TOKEN", raising=False)
    text = VALID.replace("admin: {host: 127.0.0.1", "admin: {host: 0.0.0.0").replace(
        "concurrency: 8", "concurrency: 0"
    )
    assert main(["check-config", "--config", str(_write(tmp_path, text))]) == 2
    err = capsys.readouterr().err
    assert "worker.concurrency" in err and "admin.host" in err


def test_a_section_that_failed_is_not_read_at_its_defaults_across_sections(
    tmp_path: Path,
) -> None:
    """``server.port: 8081`` beside an invalid admin section was reported as sharing a port
    with admin's default 8081."""
    text = VALID.replace("port: 8080", "port: 8081").replace(
        "token_env: RECEIVER_ADMIN_TOKEN", "token_env: BAD-NAME"
    )
    problems = _problems(tmp_path, text)
    assert "admin.token_env" in problems
    assert "admin.port" not in problems


_PASTED_SECRET = "whsec_PASTEDsecret4f9a8b7c6d5e"  # a variable name's characters, a secret's look
_PASTED_TOKEN = "Bearer pasted-downstream-token-42"


@pytest.mark.parametrize(
    ("old", "new", "pasted"),
    [
        ("secret_envs: [SW_SECRET]", f"secret_envs: [{_PASTED_SECRET}]", _PASTED_SECRET),
        (
            "secret_envs: [SW_SECRET]",
            "secret_envs: [SW_SECRET]\n    handler: {kind: http, url: 'http://127.0.0.1:9/h',"
            f" header_envs: {{Authorization: '{_PASTED_TOKEN}'}}}}",
            _PASTED_TOKEN,
        ),
    ],
    ids=["secret_envs", "header_envs"],
)
def test_a_secret_pasted_where_a_variable_name_belongs_is_never_echoed(
    tmp_path: Path, old: str, new: str, pasted: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, VALID.replace(old, new)), environ=ENV)
    assert "not an environment variable name" in str(info.value)
    assert pasted not in str(info.value)


def test_a_lowercase_variable_name_is_a_name(tmp_path: Path) -> None:
    """A heuristic for pasted secrets refused names like github_webhook_secret_v2."""
    text = VALID.replace("secret_envs: [SW_SECRET]", "secret_envs: [github_webhook_secret_v2]")
    load_config(_write(tmp_path, text), environ={"github_webhook_secret_v2": SECRET})


@pytest.mark.parametrize(
    "pasted",
    [
        "Tr0ub4dor3xyz",
        "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",  # a Shopify app's secret
        "lin_wh_3d9f0a7c2e1b",  # a Linear webhook secret
        "ABC_8F2A91C04BE7D3A65F10C9E2B74D8A13",
    ],
)
def test_an_unset_variable_is_named_only_when_it_looks_like_a_name(
    tmp_path: Path, pasted: str
) -> None:
    """A short secret pasted in place of a name is a valid name too: never printed back."""
    text = VALID.replace("secret_envs: [SW_SECRET]", f"secret_envs: [{pasted}, SW_UNSET]")
    problems = _problems(tmp_path, text, env={})
    assert pasted not in problems["providers.billing.secret_envs.0"]
    assert "is not set" in problems["providers.billing.secret_envs.0"]
    assert "SW_UNSET is not set" in problems["providers.billing.secret_envs.1"]
    # README's example lists the previous secret of a rotation: unset, the error says what it is.
    assert "list it only while rotating" in problems["providers.billing.secret_envs.1"]


@pytest.mark.parametrize(
    "pasted", [_PASTED_SECRET, "Tr0ub4dor3xyz", "q2Zr/8kPx+Tm3Yb9Lw7Vn4Hs1Gd6Fa0E=", "/8kPx+Tm3Y="]
)
def test_a_secret_pasted_where_a_secret_files_path_belongs_is_never_echoed(
    tmp_path: Path, pasted: str
) -> None:
    text = VALID.replace("secret_envs: [SW_SECRET]", f"secret_files: [{pasted}]")
    problems = _problems(tmp_path, text)
    assert "cannot read the file named there" in problems["providers.billing.secret_files.0"]
    assert pasted not in str(problems)


def test_a_secret_file_holding_two_lines_is_refused(tmp_path: Path) -> None:
    """Current and previous secrets in one file became one key with a line break: every delivery
    failed its signature, and check-config said OK."""
    secret = tmp_path / "github-secrets"
    secret.write_text("first-secret\nsecond-secret\n", encoding="utf-8")
    text = f"providers:\n  gh: {{scheme: github, secret_files: ['{secret}']}}\n"
    problems = _problems(tmp_path, text, env={})
    assert "line break" in problems["providers.gh"]
    assert "first-secret" not in str(problems)


def test_a_relative_secret_file_that_is_missing_says_where_it_was_looked_for(
    tmp_path: Path,
) -> None:
    """Run from another folder, ``config/demo-webhook-secret`` was "No such file", nothing more."""
    text = VALID.replace("secret_envs: [SW_SECRET]", "secret_files: [nowhere/secret]")
    problem = _problems(tmp_path, text)["providers.billing.secret_files.0"]
    assert "a relative path, read from the working directory" in problem


def test_an_admin_token_pasted_as_the_variables_name_is_never_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``check-config`` and ``serve`` repeated ``admin.token_env`` in the exposed-admin error."""
    monkeypatch.setenv("SW_SECRET", SECRET)
    text = VALID.replace(
        "admin: {host: 127.0.0.1, port: 8081, token_env: RECEIVER_ADMIN_TOKEN}",
        "admin: {host: 0.0.0.0, port: 8081, token_env: Tr0ub4dor3xyz}",
    )
    path = _write(tmp_path, text)
    assert main(["check-config", "--config", str(path)]) == 2
    assert main(["serve", "--config", str(path)]) != 0
    err = capsys.readouterr().err
    assert "admin.host" in err and "is not set" in err
    assert "Tr0ub4dor3xyz" not in err


def test_an_exposed_admin_host_is_named_even_beside_a_typo_in_its_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SW_SECRET", SECRET)
    monkeypatch.delenv("RECEIVER_ADMIN_TOKEN", raising=False)
    text = VALID.replace("admin: {host: 127.0.0.1", "admin: {prot: 1, host: 0.0.0.0")
    assert main(["check-config", "--config", str(_write(tmp_path, text))]) == 2
    err = capsys.readouterr().err
    assert "admin.prot" in err and "admin.host" in err


def test_values_that_would_only_fail_later_are_refused_now(tmp_path: Path) -> None:
    """Each of these passed check-config and serve, then failed every Twilio delivery, made
    stored events unreadable (an expiry past the year 9999), or made backoff meaningless."""
    text = """
server: {public_base_url: hooks.example.com}
worker: {backoff_base_s: 100, backoff_max_s: 1}
providers:
  a: {scheme: none, event_id: body_sha256, dedupe_retention: 100000000w}
  b: {scheme: twilio, secret_envs: [TW], public_url: "  "}
"""
    problems = _problems(tmp_path, text, env={"TW": "twilio-token"})
    assert "absolute http(s) URL" in problems["server.public_base_url"]
    assert "absolute http(s) URL" in problems["providers.b.public_url"]
    assert "at most 3650d" in problems["providers.a.dedupe_retention"]
    assert "backoff_base_s must not be more than backoff_max_s" in problems["worker"]


@pytest.mark.parametrize(
    "base", ["https://hooks.example.com/in?x=1", "https://hooks.example.com#a"]
)
def test_a_base_url_with_a_query_or_fragment_is_refused(tmp_path: Path, base: str) -> None:
    """``/webhooks/NAME`` was appended after it: ``…/in?x=1/webhooks/tw`` matched nothing."""
    text = f"server: {{public_base_url: '{base}'}}\n" + VALID.split("\n", 2)[2]
    assert "without a query or a fragment" in _problems(tmp_path, text)["server.public_base_url"]


def test_scheme_options_are_as_strict_as_the_rest(tmp_path: Path) -> None:
    """``require_signature: "yes"`` was read as true; a notification URL without a scheme or
    with a trailing space failed every Square delivery."""
    text = """
providers:
  gl: {scheme: gitlab, secret_envs: [GL], options: {require_signature: "yes"}}
  sq: {scheme: square, secret_envs: [SQ], options: {notification_url: "hooks.example.com/sq "}}
"""
    problems = _problems(tmp_path, text, env={"GL": SECRET, "SQ": "square-key"})
    assert "providers.gl.options.require_signature" in problems
    assert "absolute http(s) URL" in problems["providers.sq.options.notification_url"]


def test_a_database_path_under_the_home_directory_is_expanded(tmp_path: Path) -> None:
    """``~/receiver/r.db`` made a folder named "~" in the working directory."""
    text = VALID.replace("storage: {path: data/receiver.db}", "storage: {path: ~/rcv/r.db}")
    config = load_config(_write(tmp_path, text), environ=ENV)
    assert config.settings.storage.path == Path.home() / "rcv" / "r.db"
    nobody = VALID.replace("storage: {path: data/receiver.db}", "storage: {path: ~nosuchuser/r.db}")
    problems = _problems(tmp_path, nobody)  # was a traceback
    assert "home directory that does not exist" in problems["storage.path"]


def test_an_hmac_event_id_from_a_header_the_signature_leaves_out_warns(tmp_path: Path) -> None:
    """A captured delivery resent with a new ID header was a new event, silently."""
    text = """
providers:
  a:
    scheme: hmac
    secret_envs: [K]
    options: {header: X-Sig, signed_content: "{body}"}
    event_id: "header:X-Delivery"
  b:
    scheme: hmac
    secret_envs: [K]
    options: {header: X-Sig, signed_content: "{header:X-Delivery}.{body}"}
    event_id: "header:x-delivery"
  c:
    scheme: hmac
    secret_envs: [K]
    options: {header: X-Sig, signed_content: "{id}.{body}", id_header: X-Delivery}
    event_id: "header:X-Delivery"
  d:
    scheme: hmac
    secret_envs: [K]
    options: {header: X-Sig, signed_content: "{body}"}
    event_id: "json:id"
"""
    warnings = load_config(_write(tmp_path, text), environ={"K": "k"}).warnings
    assert [w.split(":")[0] for w in warnings if "does not cover" in w] == ["provider a"]


@pytest.mark.parametrize(
    "handler",
    [
        "{kind: http, url: 'http://127.0.0.1:9/x', headers: {X-A: '1', x-a: '2'}}",
        "{kind: http, url: 'http://127.0.0.1:9/x', headers: {authorization: 'Bearer yaml'},"
        " header_envs: {Authorization: DOWN_AUTH}}",
    ],
)
def test_a_header_set_twice_in_another_case_is_refused(tmp_path: Path, handler: str) -> None:
    """Both passed check-config; only one value went on the wire, the other dropped silently."""
    text = VALID.replace(
        "    dedupe_retention: 30d\n", f"    dedupe_retention: 30d\n    handler: {handler}\n"
    )
    problems = _problems(tmp_path, text, env={**ENV, "DOWN_AUTH": "Bearer env"})
    assert any("is set twice" in message for message in problems.values()), problems


def test_a_cap_under_the_default_base_makes_the_base_the_cap(tmp_path: Path) -> None:
    """``backoff_max_s: 5`` was valid while the base defaulted to 1 s; when it became 10 s,
    the file failed to load, naming a key it does not have."""
    text = VALID.replace("max_attempts: 10}", "max_attempts: 10, backoff_max_s: 5}")
    worker = load_config(_write(tmp_path, text), environ=ENV).settings.worker
    assert (worker.backoff_base_s, worker.backoff_max_s) == (5.0, 5.0)


def test_handler_mistakes_are_told_in_plain_words(tmp_path: Path) -> None:
    """Pydantic's words ("String should match pattern '^[A-Za-z_][\\w.]*:…'", "Unable to
    extract tag using discriminator 'kind'") were what a developer got."""
    text = """
providers:
  dotted: {scheme: none, event_id: 'json:id', handler: {kind: python, target: hooks.mod.handle}}
  kindless: {scheme: none, event_id: 'json:id', handler: {url: 'http://127.0.0.1:9/x'}}
"""
    problems = _problems(tmp_path, text, env={})
    assert problems["providers.dotted.handler.target"] == (
        "write it as package.module:function (a colon before the function)"
    )
    assert problems["providers.kindless.handler"] == "a handler needs kind: http, python or command"
