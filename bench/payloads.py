"""What the bench sends and configures: Codeship bodies, the rules file, the adnanh/webhook hook, big rule sets.

Every event is a fresh Codeship build (its own ``build_id``, so never a duplicate) of about 0.5 KB, like
``examples/codeship-success.json``. Two upstream projects have one rule each, and each rule one action:

* ``bench/fan``: ``circleci.trigger_pipeline`` of ``gh/bench/down`` on the event's own branch (``b-<build id>``),
  so every action goes to a different downstream branch;
* ``bench/one``: the same action on ``gh/bench/down-one`` branch ``main``, so every action waits for the one
  downstream project and branch (at most one call in flight per target, DESIGN §6).

Both pass the event's build id as the pipeline parameter ``upstream_build``: the recording server reads it to
tie each downstream request to the event that caused it.
"""

from __future__ import annotations

import hashlib
import json
import random
import re

FAN = "bench/fan"
ONE = "bench/one"
DOWN_FAN = "gh/bench/down"
DOWN_ONE = "gh/bench/down-one"
PARAMETER = "upstream_build"
HOOK_TOKEN = "bench-hook-token-0123456789"
ADMIN_TOKEN = "bench-admin-token-0123456789"
CIRCLECI_TOKEN = "bench-circleci-token-0123456789"
_SENTINEL = 987_654_321_012  # a build id no real run reaches: replaced by each event's own


def commit_of(build_id: int) -> str:
    return hashlib.sha1(str(build_id).encode()).hexdigest()  # noqa: S324 (a fake commit SHA, not security)


def codeship_event(build_id: int, project: str = FAN, branch: str | None = None) -> dict[str, object]:
    """A Codeship notification webhook body (the shape of examples/codeship-success.json)."""
    commit = commit_of(build_id)
    return {
        "build": {
            "build_url": f"https://app.codeship.com/projects/31337/builds/{build_id}",
            "commit_url": f"https://github.com/{project}/commit/{commit}",
            "project_id": 31337,
            "build_id": build_id,
            "status": "success",
            "project_name": project,
            "project_full_name": project,
            "commit_id": commit,
            "short_commit_id": commit[:7],
            "message": "Fix the thing",
            "committer": "octocat",
            "branch": branch if branch is not None else f"b-{build_id}",
        }
    }


def codeship_body(build_id: int, project: str = FAN, branch: str | None = None) -> bytes:
    return json.dumps(codeship_event(build_id, project, branch), indent=2).encode()


def lua_format_template(project: str = FAN) -> tuple[str, int]:
    """The Codeship body as a Lua ``string.format`` template over the build id, and how many times it appears.

    The commit is the only part that is not the build id itself; the wrk script sends the fixed commit of the
    sentinel, which is fine for ingest (the commit plays no part in dedupe).
    """
    text = codeship_body(_SENTINEL, project).decode().replace("%", "%%")
    count = text.count(str(_SENTINEL))
    return text.replace(str(_SENTINEL), "%d"), count


def rules_yaml() -> str:
    """The rules file of the ingest, end-to-end, memory and scale-out runs."""
    return f"""\
version: 1
rules:
  - name: bench-fan
    description: every event to its own downstream branch
    when: {{provider: codeship, project: {FAN}, status: success}}
    then:
      - circleci.trigger_pipeline:
          project: {DOWN_FAN}
          branch: "{{{{ event.branch }}}}"
          parameters: {{{PARAMETER}: "{{{{ event.build_id }}}}"}}
  - name: bench-one
    description: every event to one downstream project and branch
    when: {{provider: codeship, project: {ONE}, status: success}}
    then:
      - circleci.trigger_pipeline:
          project: {DOWN_ONE}
          branch: main
          parameters: {{{PARAMETER}: "{{{{ event.build_id }}}}"}}
"""


def webhook_hooks(token: str = HOOK_TOKEN) -> list[dict[str, object]]:
    """adnanh/webhook's hooks.json: ``/hooks/codeship`` runs /bin/true for a successful build of ``bench/fan``
    delivered with the hook token, the same checks chainer's route makes before it matches a rule."""

    def match(value: str, source: str, name: str) -> dict[str, object]:
        return {"match": {"type": "value", "value": value, "parameter": {"source": source, "name": name}}}

    return [
        {
            "id": "codeship",
            "execute-command": "/bin/true",
            "command-working-directory": "/",
            "pass-arguments-to-command": [{"source": "payload", "name": "build.build_id"}],
            "response-message": "accepted",
            "success-http-response-code": 202,
            "http-methods": ["POST"],
            "trigger-rule": {
                "and": [
                    match(token, "url", "token"),
                    match("success", "payload", "build.status"),
                    match(FAN, "payload", "build.project_name"),
                ]
            },
        }
    ]


_RULE_START = re.compile(r"^  - name: (rule-\d+)$", re.MULTILINE)
DESCRIPTION_BYTES = 330  # bytes per rule of the file: 10 000 rules in 3.3 MB


def big_rules(n: int, seed: int = 20_261_202) -> str:
    """``n`` rules of ``bench/rules_match.py``'s realistic mix, each with a ``description`` that brings the file
    to about 330 bytes a rule (the issue's 10 000 rules in 3.3 MB)."""
    from bench.rules_match import make_rules

    text = make_rules(n, random.Random(seed))
    short = max(0, DESCRIPTION_BYTES * n - len(text.encode())) // max(n, 1)
    filler = "Chained by the platform team; see the runbook before changing the downstream project or branch."
    words = (filler * (1 + short // len(filler)))[: max(0, short - 18)].rstrip()

    def add(match: re.Match[str]) -> str:
        return f'{match.group(0)}\n    description: "{words}"' if words else match.group(0)

    return _RULE_START.sub(add, text)
