"""GitHub Actions facts that several parts of chainer rely on, declared once (more-providers.md §1, §4).

Parsing, the action catalogue, the API client and the sandbox all read them from here.
"""

from __future__ import annotations

NAME = "github"
TITLE = "GitHub Actions"

# Inbound (more-providers §1.1): the event name, the delivery GUID (the same on a redelivery), the hook's id,
# and the HMAC-SHA256 of the raw body; the SHA-1 ``X-Hub-Signature`` is legacy and never enough.
EVENT_HEADER = "x-github-event"
DELIVERY_HEADER = "x-github-delivery"
HOOK_ID_HEADER = "x-github-hook-id"
SIGNATURE_HEADER = "x-hub-signature-256"
LEGACY_SIGNATURE_HEADER = "x-hub-signature"
FORM_TYPE = "application/x-www-form-urlencoded"

# Outbound (more-providers §1.6, §4.5): every request carries these; the API version is pinned because
# 2026-03-10 changes what a workflow dispatch answers.
API_VERSION = "2022-11-28"
ACCEPT = "application/vnd.github+json"

# Documented limits on what the dispatch endpoints accept (more-providers §1.6).
MAX_INPUTS = 25
MAX_INPUTS_CHARS = 65_535
MAX_CLIENT_PAYLOAD_KEYS = 10
MAX_CLIENT_PAYLOAD_BYTES = 64 * 1024
MAX_EVENT_TYPE = 100

# The workflow input (or client_payload key) that carries an action's lineage when a rule sets
# ``pass_chain: true``; the workflow must declare the input (GitHub refuses unexpected inputs with 422).
CHAIN_INPUT = "chainer_chain"

WEBHOOK_SECRETS_VARIABLE = "CHAINER_GITHUB_WEBHOOK_SECRETS"
TOKEN_VARIABLE = "CHAINER_GITHUB_TOKEN"  # noqa: S105 - the variable's name, not a token
APP_VARIABLES = "CHAINER_GITHUB_APP_ID / CHAINER_GITHUB_APP_PRIVATE_KEY"
CREDENTIALS = f"{TOKEN_VARIABLE} (or {APP_VARIABLES})"

# GitHub App auth (more-providers §1.7): the JWT is backdated 60 s against clock drift and lives at most
# 10 minutes; installation tokens live an hour and are renewed this long before ``expires_at``.
JWT_BACKDATE_S = 60
JWT_LIFETIME_S = 540
INSTALLATION_TOKEN_MARGIN_S = 300.0

# The secondary limit on content-generating requests (more-providers §1.8): 80 a minute per account.
REQUESTS_PER_MINUTE = 80
