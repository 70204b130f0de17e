"""The provider sandbox: a local emulation of the provider APIs chainer calls, out of the production namespace.

``chainer sandbox`` serves it alone; ``chainer run --sandbox`` serves it next to chainer and points the
provider settings at it. ``app`` is the Starlette app and its server, ``codeship``, ``circleci`` and ``github``
the emulated APIs, ``state``, ``github_state`` and ``models`` what the sandbox knows, ``seed`` how it learns it
from rules and example payloads.
"""

from __future__ import annotations

from chainer.sandbox.app import SignalFreeServer, create_sandbox_app, serve_sandbox
from chainer.sandbox.models import RecordedRequest
from chainer.sandbox.seed import example_events, sandbox_settings, seed_sandbox
from chainer.sandbox.state import SandboxState

__all__ = [
    "RecordedRequest",
    "SandboxState",
    "SignalFreeServer",
    "create_sandbox_app",
    "example_events",
    "sandbox_settings",
    "seed_sandbox",
    "serve_sandbox",
]
