"""``dataworkflows templates ...`` on every backend: load the fixtures (twice: nothing
changes), list, render the same bytes as the preview, instantiate; bad input exits 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = str(ROOT / "fixtures/templates")
FLOWS = str(ROOT / "fixtures/workflow-templates")


def test_load_list_render_instantiate(cli: Any, tmp_path: Path) -> None:
    loaded = cli("templates", "load", DOCS, FLOWS)
    assert loaded.exit_code == 0, loaded.output
    assert "project-brief.json: created template set project-brief (version 1)" in loaded.output
    assert "daily-http-check.json: created workflow template daily-http-check" in loaded.output
    assert "webhook-to-slack.json: created workflow template webhook-to-slack" in loaded.output
    again = cli("templates", "load", DOCS)
    assert "template set project-brief unchanged (version 1)" in again.output

    listed = cli("templates", "list", "--json")
    assert listed.exit_code == 0, listed.output
    found = json.loads(listed.output)
    assert [s["id"] for s in found["templateSets"]] == ["project-brief"]
    assert [t["id"] for t in found["workflowTemplates"]] == ["daily-http-check", "webhook-to-slack"]

    data = tmp_path / "data.json"
    data.write_text(json.dumps({"project": {"name": "X", "owner": "Y", "due": "Z"},
                                "milestones": [], "team": ["a"]}))  # fmt: skip
    rendered = cli("templates", "render", "project-brief", "summary", "--data", f"@{data}")
    assert rendered.exit_code == 0, rendered.output
    assert rendered.output == "New project X (owner Y, due Z): 0 milestones, team of 1."
    undefined = cli("templates", "render", "project-brief", "summary", "--data", "{}")
    assert undefined.exit_code == 1
    assert "[template_undefined]" in undefined.output

    bad = cli("templates", "instantiate", "daily-http-check", "--config", '{"url": 3}')
    assert bad.exit_code == 1
    assert "[invalid_config]" in bad.output and "$.config.url" in bad.output
    made = cli(
        "templates", "instantiate", "daily-http-check",
        "--config", '{"url": "https://example.com/health"}',
        "--workflow-id", "example-check", "--publish",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert made.output.strip() == "created workflow example-check (Active, version 1)"


def test_a_file_that_is_not_a_template_is_refused(cli: Any, tmp_path: Path) -> None:
    wrong = tmp_path / "workflow.json"
    wrong.write_text(json.dumps({"id": "x", "nodes": []}))
    result = cli("templates", "load", str(wrong))
    assert result.exit_code == 1
    assert 'not a template file: its "kind" must be one of' in result.output
    assert "none" in cli("templates", "list").output
