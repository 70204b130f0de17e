"""Settings from the environment (DESIGN §2): validated once, frozen, secrets masked."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict
from urllib.parse import urlsplit

from chainer.errors import ConfigError


class Secret:
    """A string that never shows itself in ``repr``/``str``; read it with ``reveal()``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


_SECRETS = (
    "CHAINER_HOOK_TOKEN",
    "CHAINER_CIRCLECI_WEBHOOK_SECRETS",
    "CHAINER_ADMIN_TOKEN",
    "CHAINER_CIRCLECI_TOKEN",
    "CHAINER_CODESHIP_PASSWORD",
    "CHAINER_CODESHIP_API_KEY",
    # GitHub (DESIGN §10); the App id is no secret, but deployments mount it beside the key, so _FILE works too.
    "CHAINER_GITHUB_WEBHOOK_SECRETS",
    "CHAINER_GITHUB_TOKEN",
    "CHAINER_GITHUB_APP_ID",
    "CHAINER_GITHUB_APP_PRIVATE_KEY",
    "CHAINER_BUILDKITE_WEBHOOK_TOKEN",
    "CHAINER_BUILDKITE_TOKEN",
)


def _read(environ: Mapping[str, str], name: str) -> str | None:
    """The value of ``name``, or for secrets the contents of the file named by ``name_FILE``."""
    value = environ.get(name)
    file_name = environ.get(f"{name}_FILE") if name in _SECRETS else None
    if value is not None and file_name:
        raise ConfigError(f"{name} and {name}_FILE are both set; set only one")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE: cannot read {file_name!r}: {exc.strerror or exc}") from exc
    if value is None:
        return None
    return value.strip()


def _secret(environ: Mapping[str, str], name: str) -> Secret | None:
    value = _read(environ, name)
    return Secret(value) if value else None


def _url(environ: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> str:
    value = _read(environ, name) or default
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.netloc:
        raise ConfigError(f"{name}: {value!r} is not a URL of the form {schemes[0]}://host[:port]")
    return value.rstrip("/")


def _secret_list(environ: Mapping[str, str], name: str) -> tuple[Secret, ...]:
    """A comma-separated list of secrets (a rotation: old and new), blanks dropped."""
    raw = _read(environ, name) or ""
    return tuple(Secret(s.strip()) for s in raw.split(",") if s.strip())


_GITHUB_APP_ID = re.compile(r"[0-9]{1,20}|Iv[0-9A-Za-z.]{1,64}")


def _github_app(environ: Mapping[str, str]) -> tuple[str | None, Secret | None]:
    """The GitHub App id (or client id) and its PEM private key, checked to be an RSA key that loads.

    The key is parsed here so that a malformed one stops the process at start, naming the variable and never
    showing the key; a key pasted with literal ``\\n`` escapes (as CI variables often hold it) is unfolded.
    """
    app_id = _read(environ, "CHAINER_GITHUB_APP_ID") or None
    pem = _read(environ, "CHAINER_GITHUB_APP_PRIVATE_KEY") or None
    if bool(app_id) != bool(pem):
        missing = "CHAINER_GITHUB_APP_PRIVATE_KEY" if app_id else "CHAINER_GITHUB_APP_ID"
        raise ConfigError(f"{missing}: must be set together with the other GitHub App setting")
    if app_id is None or pem is None:
        return None, None
    if not _GITHUB_APP_ID.fullmatch(app_id):
        raise ConfigError(f"CHAINER_GITHUB_APP_ID: {app_id[:40]!r} is not a GitHub App id (digits) or client id (Iv…)")
    if "\\n" in pem and "\n" not in pem:
        pem = pem.replace("\\n", "\n").strip()
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode("utf-8", "replace"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # never chained: the library may quote the PEM
        kind = "encrypted (no passphrase is supported)" if "ENCRYPTED" in pem else "not a PEM-encoded private key"
        raise ConfigError(f"CHAINER_GITHUB_APP_PRIVATE_KEY: {kind}; use the .pem file GitHub generated") from None
    if not isinstance(key, RSAPrivateKey):
        raise ConfigError("CHAINER_GITHUB_APP_PRIVATE_KEY: not an RSA key (GitHub Apps sign with RS256)")
    return app_id, Secret(pem)


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = _read(environ, name)
    if value is None or value == "":
        return default
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: {value!r} is not a boolean (use 1 or 0)")


def _number(environ: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    value = _read(environ, name)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name}: {value!r} is not a finite number")
    if number < minimum:
        raise ConfigError(f"{name}: {value!r} is below the minimum {minimum:g}")
    return number


def _choice(environ: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first when unset), compared without case."""
    value = (_read(environ, name) or "").strip().lower()
    if not value:
        return choices[0]
    if value not in choices:
        raise ConfigError(f"{name}: {_read(environ, name)!r} is not one of {', '.join(choices)}")
    return value


def _whole(environ: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    number = float(_number(environ, name, default, minimum))
    if not number.is_integer():
        raise ConfigError(f"{name}: {_read(environ, name)!r} is not a whole number")
    return int(number)


# The formats the store writes (chainer.store.codec.PACKERS, the default first), named here so that reading settings
# does not import the store.
STORE_COMPRESSIONS = ("zstd", "zlib")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a chainer process reads from its environment."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    rules_path: Path = Path("rules.yaml")
    hook_token: Secret | None = None
    circleci_webhook_secrets: tuple[Secret, ...] = ()
    admin_token: Secret | None = None
    circleci_token: Secret | None = None
    circleci_url: str = "https://circleci.com"
    codeship_user: str | None = None
    codeship_password: Secret | None = None
    codeship_org: str | None = None
    codeship_url: str = "https://api.codeship.com"
    codeship_api_key: Secret | None = None
    codeship_v1_url: str = "https://codeship.com"
    github_webhook_secrets: tuple[Secret, ...] = ()
    github_token: Secret | None = None
    github_app_id: str | None = None
    github_app_private_key: Secret | None = None
    github_url: str = "https://api.github.com"
    buildkite_webhook_token: Secret | None = None
    buildkite_allow_plain_token: bool = False
    buildkite_token: Secret | None = None
    buildkite_url: str = "https://api.buildkite.com"
    dry_run: bool = False
    audit_retention_days: float = 30.0
    rules_poll_seconds: float = 1.0
    stream_heartbeat_seconds: float = 15.0  # GET /audit/stream sends a comment line this often
    max_body_bytes: int = 1024 * 1024
    # Slow clients: a request head (request line and headers) and a request body must each arrive within this
    # long, else 408 and the connection is closed (chainer.web.server, chainer.web.common.read_body).
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 10.0
    # Workers: how often a Redis command is retried (backoff up to 2 s) before Redis counts as lost,
    # the longest wait between reconnect probes while it is lost, and the liveness heartbeat period.
    worker_redis_retries: int = 20
    worker_reconnect_max_seconds: float = 10.0
    worker_heartbeat_seconds: float = 5.0
    # Job timings (compressed by the fault-injection suite): a job's timeout, the lease a claimed job holds
    # (arq's in-progress key; None: timeout + 10 s, arq's own rule), the lease on a downstream target while a
    # call runs and how often the call renews it, how often the job next in line for a busy target looks again
    # when no release woke it, the retry backoff (try n waits between d/2 and d, d = min(cap, base·3^(n-1)))
    # and its number of tries, the longest wait between two reads of the queue (a wake-up or a job falling due
    # ends it sooner) and how long one blocking read of the wake list lasts, how often the sweeper runs and
    # how long an open action may lack its job.
    job_timeout_seconds: float = 60.0
    job_lease_seconds: float | None = None
    target_lease_seconds: float = 10.0
    target_lease_renew_seconds: float = 3.0
    worker_busy_recheck_seconds: float = 1.0
    retry_base_seconds: float = 15.0
    retry_cap_seconds: float = 3600.0
    retry_max_tries: int = 8
    worker_poll_seconds: float = 0.5
    worker_wake_timeout_seconds: float = 5.0
    sweep_interval_seconds: int = 60
    sweep_grace_seconds: float = 300.0
    # The format new audit records and stored events are written in (chainer.store.codec.PACKERS); every format
    # is read. "zlib" only while a rolling upgrade still runs processes of a build that reads nothing else.
    store_compression: str = "zstd"
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.store_compression not in STORE_COMPRESSIONS:  # settings built in code, not read by from_env
            choices = ", ".join(STORE_COMPRESSIONS)
            raise ConfigError(f"store_compression: {self.store_compression!r} is not one of {choices}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; raise ConfigError naming the first bad variable."""
        secrets_raw = _read(environ, "CHAINER_CIRCLECI_WEBHOOK_SECRETS") or ""
        webhook_secrets = tuple(Secret(s.strip()) for s in secrets_raw.split(",") if s.strip())
        codeship_user = _read(environ, "CHAINER_CODESHIP_USER") or None
        codeship_password = _secret(environ, "CHAINER_CODESHIP_PASSWORD")
        if bool(codeship_user) != bool(codeship_password):
            missing = "CHAINER_CODESHIP_PASSWORD" if codeship_user else "CHAINER_CODESHIP_USER"
            raise ConfigError(f"{missing}: must be set together with the other Codeship API v2 credential")
        github_token = _secret(environ, "CHAINER_GITHUB_TOKEN")
        github_app_id, github_app_key = _github_app(environ)
        if github_token and github_app_id:
            raise ConfigError(
                "CHAINER_GITHUB_TOKEN: set either a token or a GitHub App (CHAINER_GITHUB_APP_ID and "
                "CHAINER_GITHUB_APP_PRIVATE_KEY), not both"
            )
        buildkite_webhook_token = _secret(environ, "CHAINER_BUILDKITE_WEBHOOK_TOKEN")
        buildkite_allow_plain_token = _bool(environ, "CHAINER_BUILDKITE_ALLOW_PLAIN_TOKEN", False)
        if buildkite_allow_plain_token and not buildkite_webhook_token:
            raise ConfigError(
                "CHAINER_BUILDKITE_ALLOW_PLAIN_TOKEN: needs CHAINER_BUILDKITE_WEBHOOK_TOKEN, the token to compare"
            )
        job_timeout = _number(environ, "CHAINER_JOB_TIMEOUT_SECONDS", 60.0, 0.1)
        lease_raw = _read(environ, "CHAINER_JOB_LEASE_SECONDS")
        lease = _number(environ, "CHAINER_JOB_LEASE_SECONDS", 0.0, 0.1) if lease_raw else None
        if lease is not None and lease <= job_timeout:
            raise ConfigError(f"CHAINER_JOB_LEASE_SECONDS: {lease_raw!r} must be longer than the job timeout")
        sweep_interval = _whole(environ, "CHAINER_SWEEP_INTERVAL_SECONDS", 60, 1)
        if sweep_interval > 60:
            raise ConfigError(f"CHAINER_SWEEP_INTERVAL_SECONDS: {sweep_interval} is above the maximum 60")
        if 60 % sweep_interval:
            # The sweep runs on fixed seconds of each minute: only a divisor of 60 gives even intervals.
            divisors = ", ".join(str(d) for d in range(1, 61) if 60 % d == 0)
            raise ConfigError(
                f"CHAINER_SWEEP_INTERVAL_SECONDS: {sweep_interval} does not divide a minute evenly; "
                f"use one of {divisors}"
            )
        return cls(
            redis_url=_url(
                environ,
                "CHAINER_REDIS_URL",
                "redis://127.0.0.1:6379/0",
                ("redis", "rediss", "unix", "redis+sentinel"),
            ),
            rules_path=Path(_read(environ, "CHAINER_RULES") or "rules.yaml"),
            hook_token=_secret(environ, "CHAINER_HOOK_TOKEN"),
            circleci_webhook_secrets=webhook_secrets,
            admin_token=_secret(environ, "CHAINER_ADMIN_TOKEN"),
            circleci_token=_secret(environ, "CHAINER_CIRCLECI_TOKEN"),
            circleci_url=_url(environ, "CHAINER_CIRCLECI_URL", "https://circleci.com", ("https", "http")),
            codeship_user=codeship_user,
            codeship_password=codeship_password,
            codeship_org=_read(environ, "CHAINER_CODESHIP_ORG") or None,
            codeship_url=_url(environ, "CHAINER_CODESHIP_URL", "https://api.codeship.com", ("https", "http")),
            codeship_api_key=_secret(environ, "CHAINER_CODESHIP_API_KEY"),
            codeship_v1_url=_url(environ, "CHAINER_CODESHIP_V1_URL", "https://codeship.com", ("https", "http")),
            github_webhook_secrets=_secret_list(environ, "CHAINER_GITHUB_WEBHOOK_SECRETS"),
            github_token=github_token,
            github_app_id=github_app_id,
            github_app_private_key=github_app_key,
            github_url=_url(environ, "CHAINER_GITHUB_URL", "https://api.github.com", ("https", "http")),
            buildkite_webhook_token=buildkite_webhook_token,
            buildkite_allow_plain_token=buildkite_allow_plain_token,
            buildkite_token=_secret(environ, "CHAINER_BUILDKITE_TOKEN"),
            buildkite_url=_url(environ, "CHAINER_BUILDKITE_URL", "https://api.buildkite.com", ("https", "http")),
            dry_run=_bool(environ, "CHAINER_DRY_RUN", False),
            store_compression=_choice(environ, "CHAINER_STORE_COMPRESSION", STORE_COMPRESSIONS),
            audit_retention_days=_number(environ, "CHAINER_AUDIT_RETENTION_DAYS", 30.0, 0.001),
            rules_poll_seconds=_number(environ, "CHAINER_RULES_POLL_SECONDS", 1.0, 0.05),
            stream_heartbeat_seconds=_number(environ, "CHAINER_STREAM_HEARTBEAT_SECONDS", 15.0, 0.05),
            header_timeout_seconds=_number(environ, "CHAINER_HEADER_TIMEOUT_SECONDS", 10.0, 0.05),
            body_timeout_seconds=_number(environ, "CHAINER_BODY_TIMEOUT_SECONDS", 10.0, 0.05),
            worker_redis_retries=_whole(environ, "CHAINER_WORKER_REDIS_RETRIES", 20, 0),
            worker_reconnect_max_seconds=_number(environ, "CHAINER_WORKER_RECONNECT_MAX_SECONDS", 10.0, 0.05),
            worker_heartbeat_seconds=_number(environ, "CHAINER_WORKER_HEARTBEAT_SECONDS", 5.0, 0.05),
            job_timeout_seconds=job_timeout,
            job_lease_seconds=lease,
            **_target_lease(environ),
            worker_busy_recheck_seconds=_number(environ, "CHAINER_WORKER_BUSY_RECHECK_SECONDS", 1.0, 0.005),
            retry_base_seconds=_number(environ, "CHAINER_RETRY_BASE_SECONDS", 15.0, 0.001),
            retry_cap_seconds=_number(environ, "CHAINER_RETRY_CAP_SECONDS", 3600.0, 0.001),
            retry_max_tries=_whole(environ, "CHAINER_RETRY_MAX_TRIES", 8, 1),
            worker_poll_seconds=_number(environ, "CHAINER_WORKER_POLL_SECONDS", 0.5, 0.001),
            worker_wake_timeout_seconds=_number(environ, "CHAINER_WORKER_WAKE_TIMEOUT_SECONDS", 5.0, 0.05),
            sweep_interval_seconds=sweep_interval,
            sweep_grace_seconds=_number(environ, "CHAINER_SWEEP_GRACE_SECONDS", 300.0, 0.0),
        )

    @property
    def lease_seconds(self) -> float:
        """How long a claimed job (arq's in-progress key) is held before another worker may take it."""
        return self.job_lease_seconds if self.job_lease_seconds is not None else self.job_timeout_seconds + 10

    @property
    def audit_retention_ms(self) -> int:
        return int(self.audit_retention_days * 86_400_000)


class _TargetLease(TypedDict):
    target_lease_seconds: float
    target_lease_renew_seconds: float


def _target_lease(environ: Mapping[str, str]) -> _TargetLease:
    """CHAINER_TARGET_LEASE_SECONDS and its renewal period, which must be shorter."""
    lease = _number(environ, "CHAINER_TARGET_LEASE_SECONDS", 10.0, 0.1)
    renew = _number(environ, "CHAINER_TARGET_LEASE_RENEW_SECONDS", 3.0, 0.02)
    if renew >= lease:
        raise ConfigError(
            f"CHAINER_TARGET_LEASE_RENEW_SECONDS: {renew:g} must be shorter than "
            f"CHAINER_TARGET_LEASE_SECONDS ({lease:g})"
        )
    return {"target_lease_seconds": lease, "target_lease_renew_seconds": renew}
