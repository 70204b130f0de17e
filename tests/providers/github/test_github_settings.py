"""GitHub's settings (DESIGN §10): read and validated at start, secrets from files, never shown; a malformed App key
stops `chainer web` with one line naming the variable and not the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chainer import providers
from chainer.errors import ConfigError
from chainer.settings import Secret, Settings
from tests.providers.github.support import TOKEN, key_pair

REPO = Path(__file__).resolve().parents[3]


def test_defaults_and_values() -> None:
    empty = Settings.from_env({})
    assert (empty.github_url, empty.github_webhook_secrets, empty.github_token) == ("https://api.github.com", (), None)
    assert (empty.github_app_id, empty.github_app_private_key) == (None, None)
    private, _ = key_pair()
    s = Settings.from_env(
        {
            "CHAINER_GITHUB_WEBHOOK_SECRETS": " old , new ,",
            "CHAINER_GITHUB_APP_ID": "123456",
            "CHAINER_GITHUB_APP_PRIVATE_KEY": private.replace("\n", "\\n"),  # as a one-line CI variable holds it
            "CHAINER_GITHUB_URL": "https://ghe.example.org/api/v3/",
        }
    )
    assert s.github_webhook_secrets == (Secret("old"), Secret("new"))
    assert (s.github_app_id, s.github_url) == ("123456", "https://ghe.example.org/api/v3")
    assert s.github_app_private_key == Secret(private.strip())
    assert Settings.from_env({"CHAINER_GITHUB_TOKEN": TOKEN}).github_token == Secret(TOKEN)
    assert Settings.from_env({"CHAINER_GITHUB_APP_ID": "Iv23liAbC.def", "CHAINER_GITHUB_APP_PRIVATE_KEY": private})


def test_secrets_and_the_app_come_from_files_and_never_show(tmp_path: Path) -> None:
    private, _ = key_pair()
    files = {
        "CHAINER_GITHUB_WEBHOOK_SECRETS": "whsec-a,whsec-b",
        "CHAINER_GITHUB_APP_ID": "42",
        "CHAINER_GITHUB_APP_PRIVATE_KEY": private,
    }
    env = {}
    for name, value in files.items():
        (tmp_path / name).write_text(value + "\n")
        env[f"{name}_FILE"] = str(tmp_path / name)
    s = Settings.from_env(env)
    assert (s.github_app_id, len(s.github_webhook_secrets)) == ("42", 2)
    body = private.strip().splitlines()[1]
    for text in (repr(s), str(s)):
        assert "whsec-a" not in text and body not in text
    scrubbed = [x.reveal() for x in providers.secrets(s)]
    assert "whsec-a" in scrubbed and "whsec-b" in scrubbed and private.strip() in scrubbed
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    assert Settings.from_env({"CHAINER_GITHUB_TOKEN_FILE": str(token_file)}).github_token == Secret(TOKEN)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CHAINER_GITHUB_URL": "api.github.com"}, "CHAINER_GITHUB_URL: 'api.github.com' is not a URL"),
        ({"CHAINER_GITHUB_APP_ID": "1"}, "CHAINER_GITHUB_APP_PRIVATE_KEY: must be set together"),
        ({"CHAINER_GITHUB_APP_PRIVATE_KEY": "KEY"}, "CHAINER_GITHUB_APP_ID: must be set together"),
        (
            {"CHAINER_GITHUB_APP_ID": "app one", "CHAINER_GITHUB_APP_PRIVATE_KEY": "KEY"},
            "CHAINER_GITHUB_APP_ID: 'app one'",
        ),
        (
            {
                "CHAINER_GITHUB_APP_ID": "1",
                "CHAINER_GITHUB_APP_PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----\nS3CR3T\n"
                "-----END RSA PRIVATE KEY-----",
            },
            "CHAINER_GITHUB_APP_PRIVATE_KEY: not a PEM-encoded private key",
        ),
        (
            {"CHAINER_GITHUB_APP_ID": "1", "CHAINER_GITHUB_APP_PRIVATE_KEY": "S3CR3T"},
            "CHAINER_GITHUB_APP_PRIVATE_KEY: not a PEM-encoded private key",
        ),
        (
            {"CHAINER_GITHUB_TOKEN": "t", "CHAINER_GITHUB_APP_ID": "1", "CHAINER_GITHUB_APP_PRIVATE_KEY": "KEY"},
            "CHAINER_GITHUB_APP_PRIVATE_KEY: not a PEM",
        ),
        ({"CHAINER_GITHUB_TOKEN_FILE": "/nonexistent/token"}, "CHAINER_GITHUB_TOKEN_FILE: cannot read"),
    ],
    ids=["url", "id-without-key", "key-without-id", "bad-id", "bad-pem", "not-pem", "token-and-bad-app", "file"],
)
def test_malformed_github_settings_name_the_variable_never_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert "S3CR3T" not in str(info.value) and "KEY" not in str(info.value).split(":", 1)[1]


def test_a_token_and_an_app_together_are_refused() -> None:
    private, _ = key_pair()
    env = {"CHAINER_GITHUB_TOKEN": TOKEN, "CHAINER_GITHUB_APP_ID": "1", "CHAINER_GITHUB_APP_PRIVATE_KEY": private}
    with pytest.raises(ConfigError, match=r"^CHAINER_GITHUB_TOKEN: set either a token or a GitHub App"):
        Settings.from_env(env)


def test_a_key_that_is_not_rsa_is_refused() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    with pytest.raises(ConfigError, match=r"^CHAINER_GITHUB_APP_PRIVATE_KEY: not an RSA key"):
        Settings.from_env({"CHAINER_GITHUB_APP_ID": "1", "CHAINER_GITHUB_APP_PRIVATE_KEY": pem})


def test_chainer_web_stops_at_start_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    """The process a user starts: a malformed key ends `chainer web` before it serves, saying only which variable."""
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEAs3cr3tKeyMaterial\n-----END RSA PRIVATE KEY-----\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINER_")}
    env |= {
        "CHAINER_GITHUB_APP_ID": "123",
        "CHAINER_GITHUB_APP_PRIVATE_KEY": key,
        "CHAINER_RULES": str(REPO / "rules.yaml"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "chainer.cli", "web", "--port", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "CHAINER_GITHUB_APP_PRIVATE_KEY" in lines[0], done.stderr
    assert "s3cr3tKeyMaterial" not in done.stderr + done.stdout
