"""Redis clients from CHAINER_REDIS_URL: plain, TLS, unix socket, or Sentinel (``redis+sentinel://``).

Sentinel URLs look like ``redis+sentinel://[user:password@]host1:26379,host2:26379/<master-name>[/<db>]``.
arq's own Sentinel support drops timeouts and retry options (shared/reference/arq-redis.md §1.8), so
the client is built here and handed to arq as a ready pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from arq.connections import ArqRedis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chainer.errors import ConfigError
from chainer.store.codec import job_deserializer, job_serializer

R = TypeVar("R", bound=Redis)


@dataclass(frozen=True, slots=True)
class _SentinelTarget:
    hosts: list[tuple[str, int]]
    master: str
    db: int
    username: str | None
    password: str | None


def _parse_sentinel(url: str) -> _SentinelTarget:
    parts = urlsplit(url)
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        if ":" in auth:
            user, pw = auth.split(":", 1)
            username, password = unquote(user) or None, unquote(pw)
        else:
            password = unquote(auth)
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        host, _, port = item.partition(":")
        if not host:
            raise ConfigError("CHAINER_REDIS_URL: a Sentinel URL needs at least one host:port")
        try:
            hosts.append((host, int(port or 26379)))
        except ValueError:
            raise ConfigError(f"CHAINER_REDIS_URL: bad Sentinel port in {item!r}") from None
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ConfigError("CHAINER_REDIS_URL: a Sentinel URL needs the master name as its path (…/mymaster)")
    try:
        db = int(path[1]) if len(path) > 1 else 0
    except ValueError:
        raise ConfigError(f"CHAINER_REDIS_URL: bad database number {path[1]!r}") from None
    return _SentinelTarget(hosts, path[0], db, username, password)


def _options(*, retries: int) -> dict[str, Any]:
    options: dict[str, Any] = {"socket_connect_timeout": 2.0, "socket_timeout": 5.0, "health_check_interval": 30}
    if retries:
        # Refused connects surface as OSError outside redis-py's retry loop (arq-redis.md §1.7).
        options["retry"] = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries)
        options["retry_on_error"] = [RedisConnectionError, RedisTimeoutError, OSError]
    return options


def connect(url: str, *, cls: type[R] = Redis, retries: int = 0) -> R:  # type: ignore[assignment]
    """A client of class ``cls`` for ``url``; ``retries`` > 0 rides out short outages (workers), 0 fails fast (web)."""
    options = _options(retries=retries)
    if url.startswith("redis+sentinel://"):
        target = _parse_sentinel(url)
        sentinel_auth = {"password": target.password, "username": target.username} if target.password else {}
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            target.hosts,
            sentinel_kwargs={"socket_connect_timeout": 2.0, "socket_timeout": 2.0, **sentinel_auth},
            **options,
        )
        client: R = sentinel.master_for(
            target.master, redis_class=cls, db=target.db, username=target.username, password=target.password
        )
        return client
    try:
        made: R = cls.from_url(url, **options)
        return made
    except ValueError as exc:
        raise ConfigError(f"CHAINER_REDIS_URL: {exc}") from None


def connect_arq(url: str, *, retries: int = 20) -> ArqRedis:
    """An arq pool for the worker: JSON jobs, and retries so a Redis restart does not kill the worker."""
    pool = connect(url, cls=ArqRedis, retries=retries)
    pool.job_serializer = job_serializer
    pool.job_deserializer = job_deserializer
    return pool


def dedicated_client(client: Redis, *, socket_timeout: float) -> Redis:
    """A client with one connection of its own to the server ``client`` talks to (also through Sentinel), for a
    blocking command: its reads wait up to ``socket_timeout`` and nothing is retried (the caller decides).

    Blocking reads must not borrow a connection of the pool other work uses, and their wait outlasts the
    pool's read timeout; cancelling one drops this connection (redis-py disconnects on a cancelled read).
    """
    source = client.connection_pool
    options = {k: v for k, v in source.connection_kwargs.items() if k != "connection_pool"}
    options.update(socket_timeout=socket_timeout, retry=None, retry_on_error=[], retry_on_timeout=False)
    pool: ConnectionPool
    if isinstance(source, SentinelConnectionPool):
        pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
            source.service_name,
            source.sentinel_manager,
            connection_class=source.connection_class,
            is_master=source.is_master,
            check_connection=source.check_connection,
            max_connections=1,
            **options,
        )
    else:
        pool = ConnectionPool(connection_class=source.connection_class, max_connections=1, **options)
    return Redis(connection_pool=pool)
