"""The CI example (examples/ci/github-actions.yml, docs/ci.md) parses, does what docs/ci.md says it
does, installs as the README says, and is shown in docs/ci.md as it is."""
from __future__ import annotations

import re

import yaml  # PyYAML: a dependency of transformers

from buildkit import REPO

WORKFLOW = REPO / "examples/ci/github-actions.yml"


def workflow() -> dict:
    doc = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(doc, dict)
    return doc


def steps() -> list[dict]:
    jobs = workflow()["jobs"]
    assert list(jobs) == ["build"]
    return jobs["build"]["steps"]


def runs() -> str:
    return "\n".join(s.get("run", "") for s in steps())


def test_workflow_parses_with_the_keys_github_reads():
    doc = workflow()
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    assert on == {"push": {"branches": ["main"]}, "pull_request": None}
    job = doc["jobs"]["build"]
    assert job["runs-on"] == "ubuntu-latest" and isinstance(job["timeout-minutes"], int)
    for step in job["steps"]:
        assert set(step) <= {"name", "uses", "with", "run", "if", "env"}, step
        assert ("uses" in step) != ("run" in step), step
        assert "uses" not in step or re.fullmatch(r"[\w-]+/[\w-]+@v\d+", step["uses"]), step
    assert all("${{" not in line or "}}" in line for line in WORKFLOW.read_text().splitlines())


def test_workflow_installs_as_the_readme_says():
    readme = (REPO / "README.md").read_text()
    torch = next(line.strip() for line in readme.splitlines() if line.strip().startswith("pip install --no-deps torch"))
    commands = [line.strip() for line in runs().splitlines()]
    assert commands.index(torch) < commands.index("pip install -e .")
    python = next(s for s in steps() if s.get("uses", "").startswith("actions/setup-python"))
    assert python["with"]["python-version"] == "3.11"


def test_workflow_builds_publishes_compares_and_uploads_only_from_main():
    env = workflow()["env"]
    assert env["MODELMAKE_REMOTE"] == "${{ vars.MODELMAKE_REMOTE }}"
    assert env["MODELMAKE_REMOTE_AUTHORIZATION"] == "${{ secrets.MODELMAKE_REMOTE_AUTHORIZATION }}"
    assert env["MODELMAKE_REMOTE_UPLOAD"] == \
        "${{ github.event_name == 'push' && github.ref == 'refs/heads/main' && '1' || '0' }}"
    assert 'doit optimize:"$RECIPE"' in runs()
    upload = next(s for s in steps() if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["with"]["path"].splitlines() == ["artifacts/${{ env.RECIPE }}/package.zip",
                                              "artifacts/${{ env.RECIPE }}/metrics.json"]
    compare = next(s for s in steps() if "modelmake compare --rev" in s.get("run", ""))
    assert compare["if"] == "github.event_name == 'pull_request'"
    assert '--rev "origin/$GITHUB_BASE_REF" --format markdown' in compare["run"]
    assert "gh pr comment" in compare["run"] and "GH_TOKEN" in compare["env"]
    checkout = next(s for s in steps() if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["fetch-depth"] == 0  # --rev reads the base branch from git


def test_docs_show_the_workflow_as_it_is():
    doc = (REPO / "docs/ci.md").read_text()
    shown = re.search(r"```yaml\n(.*?)```", doc, re.S).group(1)
    assert shown == WORKFLOW.read_text()
