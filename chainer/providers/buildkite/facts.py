"""Buildkite facts that several parts of chainer rely on, declared once (shared/reference/more-providers.md §2, §4).

Parsing, the action catalogue, the API client and the sandbox all read them from here.
"""

from __future__ import annotations

NAME = "buildkite"
TITLE = "Buildkite"

# Inbound: every delivery names its event; it is authenticated by exactly one of the two other headers.
EVENT_HEADER = "x-buildkite-event"
SIGNATURE_HEADER = "x-buildkite-signature"  # timestamp=<unix seconds>,signature=<hex HMAC-SHA256>
TOKEN_HEADER = "x-buildkite-token"  # noqa: S105 - the webhook token in clear text (only with ALLOW_PLAIN_TOKEN_VARIABLE)
# How far a signature's timestamp (the send time) may be from chainer's clock, either way (replays).
SIGNATURE_TOLERANCE_S = 300

WEBHOOK_TOKEN_VARIABLE = "CHAINER_BUILDKITE_WEBHOOK_TOKEN"  # noqa: S105 - a variable name
ALLOW_PLAIN_TOKEN_VARIABLE = "CHAINER_BUILDKITE_ALLOW_PLAIN_TOKEN"  # noqa: S105 - a variable name
CREDENTIALS = "CHAINER_BUILDKITE_TOKEN"  # the REST API token every call sends as a bearer token

# The meta-data key of a build chainer created: the id of the event that caused it. Buildkite sends the
# build's meta-data back in every webhook of that build, so its events are recognised as chained.
CAUSE_KEY = "chainer:cause"
# The meta-data key where the agent records the commit it checked out (``commit <sha>`` on the first line)
# when the build was created for ``HEAD`` or a branch name.
GIT_COMMIT_KEY = "buildkite:git:commit"

# The REST API allows 50 requests a minute per token user (and 200 per organisation): chainer keeps to
# the smaller one across its workers (more-providers.md §2.6).
REQUESTS_PER_MINUTE = 50
