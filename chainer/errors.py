"""Every exception chainer raises, in one tree.

    ChainerError
    ├── ConfigError                  a setting is missing or malformed (names the variable)
    ├── RulesError                   rules.yaml failed validation (carries every problem)
    ├── RenderError                  an action's arguments cannot be rendered for an event (names the argument)
    ├── WebhookError                 an inbound delivery cannot be accepted
    │   ├── UnknownProviderError     no provider of that name is registered  → 404 (also a KeyError)
    │   ├── AuthenticationError      bad or missing signature / token        → 401
    │   ├── PayloadError             not JSON, not an object, unknown shape  → 400
    │   ├── PayloadTooLargeError     body over the size cap                  → 413
    │   └── UnsupportedMediaError    wrong content type                      → 415
    ├── StoreUnavailableError        Redis cannot durably take or give data  → 503
    ├── LocalRedisError              `chainer run` cannot start its private redis-server (carries the URL)
    └── DownstreamError              a provider API call did not succeed
        ├── TransientDownstreamError     worth retrying (connect error, 429, 5xx, rate-limit 403)
        │   └── ThrottledError           chainer's own outbound limit says wait; nothing was sent
        ├── AmbiguousDownstreamError     the request may have taken effect (timeout after send)
        └── PermanentDownstreamError     retrying cannot help (other 4xx, auth failure)

Handlers and jobs catch by branch, never a bare ``Exception``.
"""

from __future__ import annotations


class ChainerError(Exception):
    """Base of every error chainer raises on purpose."""


class ConfigError(ChainerError):
    """A setting a process needs is missing or malformed; the message names the variable."""


class RulesError(ChainerError):
    """The rules file failed validation; ``problems`` holds every problem found, in file order."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems) if self.problems else "invalid rules")


class RenderError(ChainerError):
    """An action's arguments could not be rendered for an event; ``argument`` is the one that failed.

    The message names the argument too (``argument 'branch': event.tag is empty for this event``).
    """

    def __init__(self, message: str, *, argument: str = "") -> None:
        super().__init__(message)
        self.argument = argument


class WebhookError(ChainerError):
    """An inbound delivery cannot be accepted; ``status`` is the HTTP answer to give."""

    status = 400


class UnknownProviderError(WebhookError, KeyError):
    """No provider of that name is registered (``chainer.providers.get``); never taken for another provider."""

    status = 404

    def __init__(self, name: str, known: tuple[str, ...] = ()) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown provider {self.name!r} (known: {', '.join(self.known) or 'none'})"


class AuthenticationError(WebhookError):
    """The delivery's signature or token is missing or wrong."""

    status = 401


class PayloadError(WebhookError):
    """The body is not JSON, not an object, or lacks a field chainer routes on (named in the message)."""

    status = 400


class PayloadTooLargeError(WebhookError):
    """The body is larger than the configured cap."""

    status = 413


class BodyTimeoutError(WebhookError):
    """The body did not arrive within ``CHAINER_BODY_TIMEOUT_SECONDS``."""

    status = 408


class UnsupportedMediaError(WebhookError):
    """The request's content type is not JSON."""

    status = 415


class StoreUnavailableError(ChainerError):
    """Redis did not answer or refused a write; nothing the caller asked for was kept."""


class LocalRedisError(ChainerError):
    """``chainer run`` found no Redis at ``url`` and could not start a private redis-server for it."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class DownstreamError(ChainerError):
    """A provider API call did not succeed.

    ``provider`` and ``action`` name what was being done (None when not known where it was raised;
    the provider client fills them in on the way out), ``status`` is the HTTP status when there was
    an answer, ``retry_after`` the seconds the provider asked us to wait (or None), ``body`` a short,
    secret-free excerpt of its answer.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        body: str = "",
        provider: str | None = None,
        action: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.body = body
        self.provider = provider
        self.action = action

    def about(self, provider: str, action: str | None = None) -> DownstreamError:
        """This error, with ``provider`` and ``action`` filled in where it did not know them yet."""
        self.provider = self.provider or provider
        self.action = self.action or action
        return self

    def copy(self) -> DownstreamError:
        """A new error of the same class and context (to raise again for another caller)."""
        return type(self)(
            self.message,
            status=self.status,
            retry_after=self.retry_after,
            body=self.body,
            provider=self.provider,
            action=self.action,
        )


class TransientDownstreamError(DownstreamError):
    """The call certainly had no effect and may succeed later (connect error, 429, rate-limit 403, 5xx)."""


class ThrottledError(TransientDownstreamError):
    """A shared outbound limit (requests per minute, one call in flight) says to wait; nothing was sent."""


class AmbiguousDownstreamError(DownstreamError):
    """The request was sent but no answer came back; it may or may not have taken effect."""


class PermanentDownstreamError(DownstreamError):
    """Retrying cannot help: the provider refused the request (other 4xx) or credentials are wrong."""
