"""Logging: one line per event, ``name event key=value …``, fields from ``extra=``."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping

from chainer.errors import ConfigError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Loggers kept at WARNING whatever the level: httpx logs every request URL at INFO, and some providers' API URLs
# carry a key in the query (``?api_key=``). chainer logs its provider requests itself, secrets scrubbed (logger
# chainer.downstream).
QUIET = ("httpx", "httpcore")

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class KeyValueFormatter(logging.Formatter):
    """Formats ``log.info("event_name", extra={...})`` as ``time level logger event_name k=v …``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        parts = [
            self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            record.levelname.lower(),
            record.name,
            record.getMessage(),
        ]
        parts += [
            f"{k}={json.dumps(v, default=str) if not isinstance(v, str) or ' ' in v else v}" for k, v in fields.items()
        ]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def log_level(environ: Mapping[str, str]) -> str:
    """The level named by ``CHAINER_LOG_LEVEL`` (default INFO); ConfigError naming the variable when unknown."""
    value = (environ.get("CHAINER_LOG_LEVEL") or "INFO").strip().upper()
    if value not in LEVELS:
        raise ConfigError(f"CHAINER_LOG_LEVEL: {value.lower()!r} is not one of {', '.join(LEVELS).lower()}")
    return value


def configure_logging(level: str | None = None) -> None:
    """Send chainer's, arq's and uvicorn's logs to stderr in the key=value format, once per process.

    ``level`` defaults to ``CHAINER_LOG_LEVEL`` (raises ConfigError when that is not a level). uvicorn's access
    log is switched off for good (it prints hook tokens; chainer.accesslog writes a redacted one) and httpx and
    httpcore stay at WARNING (their INFO lines print URLs with API keys).
    """
    level = level or log_level(os.environ)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False  # uvicorn writes its access log only when this logger has handlers
