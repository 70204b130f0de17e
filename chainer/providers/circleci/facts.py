"""CircleCI facts that several parts of chainer rely on, declared once (shared/reference/providers.md §4, §5).

Parsing, the action catalogue, the API client and the sandbox all read them from here.
"""

from __future__ import annotations

from collections.abc import Mapping

NAME = "circleci"
TITLE = "CircleCI"

# The VCS names API v1.1 and long-form project slugs use, by every spelling CircleCI accepts.
VCS_ALIASES: Mapping[str, str] = {"github": "github", "gh": "github", "bitbucket": "bitbucket", "bb": "bitbucket"}
# The short form CircleCI itself writes in job URLs and slugs (``gh/acme/api``).
SHORT_VCS: Mapping[str, str] = {"github": "gh", "bitbucket": "bb"}

# Documented pipeline parameter limits (providers.md §5.4).
MAX_PARAMETERS = 100
MAX_PARAMETER_KEY = 128
MAX_PARAMETER_VALUE = 512

# The pipeline parameter that carries an action's lineage when a rule sets ``pass_chain: true``.
CHAIN_PARAMETER = "chainer_chain"

SIGNATURE_HEADER = "circleci-signature"
EVENT_TYPE_HEADER = "circleci-event-type"

WEBHOOK_SECRETS_VARIABLE = "CHAINER_CIRCLECI_WEBHOOK_SECRETS"
CREDENTIALS = "CHAINER_CIRCLECI_TOKEN"  # the personal API token every call sends


def normalize_vcs(vcs: str) -> str | None:
    """``github`` or ``bitbucket`` for a VCS name or its short form (``gh``, ``bb``), any case; None when unknown."""
    return VCS_ALIASES.get(vcs.lower())
