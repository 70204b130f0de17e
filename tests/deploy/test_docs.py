"""The documentation: the rules reference matches the schema, links resolve, documented URLs work."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chainer.store import QUEUE_KEY
from tests import payloads
from tests.deploy.processes import chainer
from tests.deploy.support import DEPLOY, REPO, chainer_env, check_variable, known_variables
from tests.redis_server import free_port

DOCS = REPO / "docs"
PAGES = [REPO / "README.md", REPO / "CHANGELOG.md", DEPLOY / "README.md", *sorted(DOCS.glob("*.md"))]


def _schema() -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "chainer.cli", "schema"], capture_output=True, text=True, timeout=60, env=chainer_env()
    )
    assert result.returncode == 0, result.stderr
    schema: dict[str, object] = json.loads(result.stdout)
    return schema


def test_rules_reference_is_the_page_the_schema_generates_today() -> None:
    """scripts/gen-rules-reference (a subprocess reading `chainer schema`) reproduces docs/rules-reference.md."""
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen-rules-reference"), "--stdout"],
        capture_output=True,
        text=True,
        timeout=120,
        env=chainer_env(),
    )
    assert result.returncode == 0, result.stderr
    committed = (DOCS / "rules-reference.md").read_text()
    assert result.stdout == committed, "docs/rules-reference.md is stale: run scripts/gen-rules-reference"

    # And the page really is the schema's: every action, argument and condition key is in it.
    schema = _schema()
    defs = schema["$defs"]
    assert isinstance(defs, dict)
    actions = defs["rule"]["properties"]["then"]["items"]["propertyNames"]["enum"]
    assert actions
    for action in actions:
        section = committed.split(f"\n### {action}\n", 1)[1].split("\n### ", 1)[0]
        for argument in defs[action].get("properties", {}):
            assert f"| `{argument}` |" in section, (action, argument)
    for key in [*defs["clause"]["properties"], *defs["fan_in"]["properties"], *defs["rule"]["properties"]]:
        assert f"| `{key}` |" in committed, key


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_every_relative_link_and_anchor_in_the_docs_resolves() -> None:
    """Links between README.md, CHANGELOG.md, deploy/README.md and docs/*.md point at files and headings that exist."""
    checked = 0
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            assert resolved.exists(), f"{page.relative_to(REPO)}: {target}"
            if anchor:
                assert resolved.suffix == ".md" and anchor in _anchors(resolved), f"{page.relative_to(REPO)}: {target}"
            checked += 1
    assert checked > 20


def test_readme_starts_with_the_two_commands_and_links_the_guides() -> None:
    """The first two code blocks of the README install-and-start and test; the deploy and docs pages are linked."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert [b.strip() for b in blocks[:2]] == ["./scripts/start", "./scripts/test"]
    for page in ("deploy/README.md", "docs/providers.md", "docs/rules-reference.md", "docs/operations.md"):
        assert f"]({page})" in readme, page
    assert (REPO / ".ci" / "run").read_text().strip().endswith("./scripts/test")


def test_variables_and_redis_keys_named_in_the_guides_exist(tmp_path: Path) -> None:
    """Every CHAINER_* variable the guides name is one chainer reads; the queue key in the alert table is arq's."""
    known = known_variables()
    for page in (DEPLOY / "README.md", *sorted(DOCS.glob("*.md"))):
        for variable in set(re.findall(r"\bCHAINER_[A-Z0-9_]*[A-Z0-9]\b", page.read_text())):
            check_variable(variable, tmp_path, known)
    assert f"ZRANGEBYSCORE {QUEUE_KEY} " in (DEPLOY / "README.md").read_text()


@pytest.mark.integration
def test_every_webhook_url_in_the_provider_guide_is_accepted_by_chainer_web(tmp_path: Path, redis_url: str) -> None:
    """Each `https://chainer.example.org/hooks/...` form of docs/providers.md, posted to a real `chainer web`, is 202.

    Codeship and legacy CircleCI URLs carry the hook token (and get 401 with a wrong one); the signed
    CircleCI and GitHub URLs get a ping signed with the webhook secret (GitHub's also refused when signed with
    another), the Buildkite one a ping signed with its token.
    """
    guide = (DOCS / "providers.md").read_text()
    urls = sorted(set(re.findall(r"https://chainer\.example\.org(/hooks/[^\s`)]*)", guide)))
    assert len(urls) >= 5, urls
    hook, secret = "hook-token-for-docs", "signing-secret-for-docs"
    env = chainer_env() | {
        "CHAINER_REDIS_URL": redis_url,
        "CHAINER_RULES": str(REPO / "rules.yaml"),
        "CHAINER_HOOK_TOKEN": hook,
        "CHAINER_CIRCLECI_WEBHOOK_SECRETS": secret,
        "CHAINER_GITHUB_WEBHOOK_SECRETS": secret,
        "CHAINER_BUILDKITE_WEBHOOK_TOKEN": secret,
    }
    bodies = {
        "codeship": (REPO / "examples" / "codeship-success.json").read_bytes(),
        "circleci": (REPO / "examples" / "circleci-legacy-failed.json").read_bytes(),
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with chainer(["web", "--host", "127.0.0.1", "--port", str(port)], tmp_path, env, f"{base}/healthz"):
        for path in urls:
            provider = path.split("/")[2].split("?")[0]
            if "<CHAINER_HOOK_TOKEN>" in path:
                headers = {"content-type": "application/json"}
                right = httpx.post(
                    base + path.replace("<CHAINER_HOOK_TOKEN>", hook),
                    content=bodies[provider],
                    headers=headers,
                    timeout=10,
                )
                wrong = httpx.post(
                    base + path.replace("<CHAINER_HOOK_TOKEN>", "wrong"),
                    content=bodies[provider],
                    headers=headers,
                    timeout=10,
                )
                assert (right.status_code, wrong.status_code) in {(202, 401), (200, 401)}, (path, right.text)
            elif path == "/hooks/github":
                ping = json.dumps(
                    {
                        "zen": "Keep it logically awesome.",
                        "hook_id": 1,
                        "hook": {"events": ["workflow_run"], "config": {"content_type": "json"}},
                    }
                ).encode()
                for key, status in ((secret, 202), ("another-secret", 401)):
                    signature = "sha256=" + hmac.new(key.encode(), ping, hashlib.sha256).hexdigest()
                    headers = {
                        "content-type": "application/json",
                        "x-github-event": "ping",
                        "x-hub-signature-256": signature,
                    }
                    answer = httpx.post(base + path, content=ping, headers=headers, timeout=10)
                    assert answer.status_code == status, answer.text
                    if status == 202:
                        assert answer.json() == {"status": "ignored", "reason": "GitHub ping from hook 1"}
            elif path == "/hooks/buildkite":
                body, headers = payloads.buildkite_signed({"event": "ping"}, secret, int(time.time()))
                answer = httpx.post(base + path, content=body, headers=headers, timeout=10)
                assert answer.status_code == 202 and answer.json()["status"] == "ignored", answer.text
            else:
                assert path == "/hooks/circleci", path
                body, headers = payloads.signed(payloads.circleci_ping(), secret, "ping")
                answer = httpx.post(base + path, content=body, headers=headers, timeout=10)
                assert answer.status_code == 202 and answer.json()["status"] == "ignored", answer.text
