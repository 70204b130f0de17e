"""Settings from the environment: defaults, validation naming the variable, secrets from files, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from chainer.errors import ConfigError
from chainer.settings import Secret, Settings


def test_defaults_match_the_design() -> None:
    """An empty environment gives DESIGN §2's defaults and no secrets."""
    s = Settings.from_env({})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.rules_path == Path("rules.yaml")
    assert s.circleci_url == "https://circleci.com"
    assert s.codeship_url == "https://api.codeship.com"
    assert s.codeship_v1_url == "https://codeship.com"
    assert (s.hook_token, s.admin_token, s.circleci_webhook_secrets, s.dry_run) == (None, None, (), False)
    assert s.audit_retention_days == 30


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CHAINER_REDIS_URL": "localhost:6379"}, "CHAINER_REDIS_URL"),
        ({"CHAINER_CIRCLECI_URL": "ftp://x"}, "CHAINER_CIRCLECI_URL"),
        ({"CHAINER_CODESHIP_URL": "not a url"}, "CHAINER_CODESHIP_URL"),
        ({"CHAINER_DRY_RUN": "maybe"}, "CHAINER_DRY_RUN"),
        ({"CHAINER_AUDIT_RETENTION_DAYS": "soon"}, "CHAINER_AUDIT_RETENTION_DAYS"),
        ({"CHAINER_AUDIT_RETENTION_DAYS": "-1"}, "CHAINER_AUDIT_RETENTION_DAYS"),
        ({"CHAINER_CODESHIP_USER": "me@example.org"}, "CHAINER_CODESHIP_PASSWORD"),
        ({"CHAINER_CODESHIP_PASSWORD": "pw"}, "CHAINER_CODESHIP_USER"),
        ({"CHAINER_ADMIN_TOKEN_FILE": "/nonexistent/admin"}, "CHAINER_ADMIN_TOKEN_FILE"),
        ({"CHAINER_ADMIN_TOKEN": "a", "CHAINER_ADMIN_TOKEN_FILE": "/x"}, "CHAINER_ADMIN_TOKEN"),
    ],
    ids=[
        "redis-url",
        "circleci-url",
        "codeship-url",
        "dry-run",
        "retention",
        "negative-retention",
        "user-without-password",
        "password-without-user",
        "unreadable-file",
        "both-value-and-file",
    ],
)
def test_malformed_setting_names_the_variable(env: dict[str, str], variable: str) -> None:
    """Each malformed or inconsistent setting raises ConfigError whose message starts with the variable name."""
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(variable)
    assert "\n" not in str(info.value)


def test_secrets_come_from_files_and_never_show(tmp_path: Path) -> None:
    """A *_FILE secret is read from disk, stripped, and neither repr nor str of Settings reveals it."""
    secret_file = tmp_path / "token"
    secret_file.write_text("s3cr3t-value\n")
    s = Settings.from_env(
        {
            "CHAINER_ADMIN_TOKEN_FILE": str(secret_file),
            "CHAINER_CIRCLECI_WEBHOOK_SECRETS": "old-secret, new-secret",
            "CHAINER_CODESHIP_USER": "ci@example.org",
            "CHAINER_CODESHIP_PASSWORD": "hunter2",
        }
    )
    assert s.admin_token is not None and s.admin_token.reveal() == "s3cr3t-value"
    assert [x.reveal() for x in s.circleci_webhook_secrets] == ["old-secret", "new-secret"]
    shown = repr(s) + str(s)
    for value in ("s3cr3t-value", "old-secret", "new-secret", "hunter2"):
        assert value not in shown


def test_secret_equality_and_truth() -> None:
    """Secrets compare by value and an empty secret is falsy, without revealing anything in repr."""
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    assert not Secret("") and bool(Secret("x"))
    assert "a" not in repr(Secret("a"))


def test_dry_run_and_sentinel_url_are_accepted() -> None:
    """CHAINER_DRY_RUN=1 turns dry run on and a redis+sentinel URL is a valid Redis URL."""
    s = Settings.from_env({"CHAINER_DRY_RUN": "1", "CHAINER_REDIS_URL": "redis+sentinel://h1:26379,h2/mymaster"})
    assert s.dry_run is True
    assert s.redis_url.startswith("redis+sentinel://")


WORKER_TIMINGS = {
    "CHAINER_WORKER_WAKE_TIMEOUT_SECONDS": ("worker_wake_timeout_seconds", 5.0, "1.5"),
    "CHAINER_TARGET_LEASE_SECONDS": ("target_lease_seconds", 10.0, "1"),
    "CHAINER_TARGET_LEASE_RENEW_SECONDS": ("target_lease_renew_seconds", 3.0, "0.25"),
    "CHAINER_WORKER_BUSY_RECHECK_SECONDS": ("worker_busy_recheck_seconds", 1.0, "0.1"),
}


def test_wake_and_target_lease_timings_have_their_defaults_and_are_read_from_the_environment() -> None:
    """The wake-list wait, the target lease and its renewal, and the busy recheck are CHAINER_* variables (so
    tests and fault injection can compress them)."""
    defaults = Settings.from_env({})
    compressed = Settings.from_env({name: value for name, (_, _, value) in WORKER_TIMINGS.items()})
    for name, (attribute, default, value) in WORKER_TIMINGS.items():
        assert getattr(defaults, attribute) == default, name
        assert getattr(compressed, attribute) == float(value), name


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CHAINER_WORKER_WAKE_TIMEOUT_SECONDS": "soon"}, "CHAINER_WORKER_WAKE_TIMEOUT_SECONDS"),
        ({"CHAINER_WORKER_WAKE_TIMEOUT_SECONDS": "0"}, "CHAINER_WORKER_WAKE_TIMEOUT_SECONDS"),
        ({"CHAINER_TARGET_LEASE_SECONDS": "inf"}, "CHAINER_TARGET_LEASE_SECONDS"),
        ({"CHAINER_TARGET_LEASE_RENEW_SECONDS": "10"}, "CHAINER_TARGET_LEASE_RENEW_SECONDS"),
        (
            {"CHAINER_TARGET_LEASE_SECONDS": "2", "CHAINER_TARGET_LEASE_RENEW_SECONDS": "2"},
            "CHAINER_TARGET_LEASE_RENEW",
        ),
        ({"CHAINER_WORKER_BUSY_RECHECK_SECONDS": "nan"}, "CHAINER_WORKER_BUSY_RECHECK_SECONDS"),
    ],
    ids=["wake-word", "wake-zero", "lease-infinite", "renew-not-shorter", "renew-equal", "recheck-nan"],
)
def test_malformed_wake_or_lease_timing_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(variable)
    assert "\n" not in str(info.value)
