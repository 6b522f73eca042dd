"""Document templates over HTTP (docs/templates.md): CRUD of versioned template sets, the
preview, the sandbox's refusals and caps, and the ``core.template.render`` action giving
the same bytes as the preview — on every backend."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

SETS = "/api/v1/templates"
ACME = {"X-Tenant-Id": "acme"}
GLOBEX = {"X-Tenant-Id": "globex"}


async def answer(resp: Any, status: int) -> Any:
    assert resp.status == status, await resp.text()
    return None if status == 204 else await resp.json()


@pytest.fixture
def brief(load_fixture: Any) -> dict[str, Any]:
    return dict(load_fixture("templates/project-brief.json"))


def one_template(source: str, fmt: str = "text", set_id: str = "t") -> dict[str, Any]:
    return {"id": set_id, "templates": {"main": {"format": fmt, "source": source}}}


async def test_crud_round_trip_with_versions(api: Any, brief: dict[str, Any]) -> None:
    created = await answer(await api.post(SETS, json=brief, headers=ACME), 201)
    assert created["id"] == "project-brief" and created["version"] == 1
    assert created["latestVersion"] == 1 and set(created["templates"]) == {
        "brief",
        "email",
        "summary",
    }
    assert created["sampleData"] == brief["sampleData"]

    again = await api.post(SETS, json=brief, headers=ACME)
    assert (await answer(again, 409))["code"] == "template_set_exists"

    v2 = copy.deepcopy(brief)
    del v2["id"], v2["kind"]
    v2["templates"]["summary"]["source"] = "{{ project.name }} is due {{ project.due }}."
    added = await answer(
        await api.post(f"{SETS}/project-brief/versions", json=v2, headers=ACME), 201
    )
    assert added["version"] == 2 and added["latestVersion"] == 2
    same = await api.post(f"{SETS}/project-brief/versions", json=v2, headers=ACME)
    assert (await answer(same, 409))["code"] == "duplicate_version"

    first = await answer(await api.get(f"{SETS}/project-brief?version=1", headers=ACME), 200)
    assert first["templates"]["summary"] == brief["templates"]["summary"]
    missing = await api.get(f"{SETS}/project-brief?version=9", headers=ACME)
    assert (await answer(missing, 404))["code"] == "version_not_found"

    listed = await answer(await api.get(SETS, headers=ACME), 200)
    assert [s["id"] for s in listed["items"]] == ["project-brief"]
    assert listed["items"][0]["latestVersion"] == 2
    # another tenant sees nothing and cannot touch it
    assert (await answer(await api.get(SETS, headers=GLOBEX), 200))["items"] == []
    for resp in (
        await api.get(f"{SETS}/project-brief", headers=GLOBEX),
        await api.post(f"{SETS}/project-brief/render", json={"template": "brief"}, headers=GLOBEX),
        await api.delete(f"{SETS}/project-brief", headers=GLOBEX),
    ):
        assert (await answer(resp, 404))["code"] == "template_set_not_found"

    await answer(await api.delete(f"{SETS}/project-brief", headers=ACME), 204)
    gone = await api.get(f"{SETS}/project-brief", headers=ACME)
    assert (await answer(gone, 404))["code"] == "template_set_not_found"


async def test_preview_renders_sample_data_and_escapes_html(
    api: Any, brief: dict[str, Any]
) -> None:
    await answer(await api.post(SETS, json=brief), 201)
    summary = await answer(
        await api.post(f"{SETS}/project-brief/render", json={"template": "summary"}), 200
    )
    assert summary["document"] == (
        "New project Website relaunch (owner Ada Lovelace, due 2027-03-31): 3 milestones, "
        "team of 3."
    )
    assert summary["contentType"] == "text/plain; charset=utf-8" and summary["version"] == 1
    markdown = await answer(
        await api.post(f"{SETS}/project-brief/render", json={"template": "brief"}), 200
    )
    assert "3. Launch (2027-03-31)\n" in markdown["document"]
    assert "design system & cut" in markdown["document"]  # markdown is not escaped
    data = copy.deepcopy(brief["sampleData"])
    data["project"]["name"] = "<script>alert(1)</script>"
    email = await answer(
        await api.post(f"{SETS}/project-brief/render", json={"template": "email", "data": data}),
        200,
    )
    assert "<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>" in email["document"]
    assert "design system &amp; cut" in email["document"]
    assert email["contentType"] == "text/html; charset=utf-8"


async def test_bad_templates_are_refused_when_saved_and_nothing_is_written(api: Any) -> None:
    body = {
        "id": "bad",
        "templates": {
            "escape": {"source": "{{ ''.__class__ }}"},
            "mro": {"source": "{{ x|attr('__class__') }}"},
            "syntax": {"source": "{% for %}"},
            "bad name!": {"source": "ok"},
            "loops": {
                "source": "{% for i in range(100000) %}{% for j in range(100000) %}"
                "{% endfor %}{% endfor %}"
            },
        },
    }
    error = await answer(await api.post(SETS, json=body), 422)
    assert error["code"] == "invalid_template_set"
    problems = {(p["path"], p["code"]) for p in error["details"]["problems"]}
    assert problems == {
        ("$.templates.escape.source", "unsafe_template"),
        ("$.templates.mro.source", "unsafe_template"),
        ("$.templates.syntax.source", "template_syntax"),
        ("$.templates.bad name!", "invalid_name"),
        ("$.templates.loops.source", "template_budget_exceeded"),
    }
    assert (await answer(await api.get(SETS), 200))["items"] == []
    wrong = await api.post(SETS, json={"id": "x", "templates": {}, "extra": 1})
    codes = {p["path"] for p in (await answer(wrong, 422))["details"]["problems"]}
    assert codes == {"$.templates", "$.extra"}


async def test_render_errors_have_specific_codes(api: Any) -> None:
    async def render(source: str, data: dict[str, Any]) -> dict[str, Any]:
        set_id = f"t{uuid.uuid4().hex[:8]}"
        await answer(await api.post(SETS, json=one_template(source, set_id=set_id)), 201)
        resp = await api.post(f"{SETS}/{set_id}/render", json={"template": "main", "data": data})
        return dict(await answer(resp, 422))

    undefined = await render("Hello {{ name }}", {})
    assert (
        undefined["code"] == "template_undefined" and "'name' is undefined" in undefined["message"]
    )
    # a dunder name that comes from the data is refused by the sandbox at render time
    refused = await render("{{ x|attr(name) }}", {"x": "", "name": "__class__"})
    assert refused["code"] == "template_refused"
    assert refused["details"]["template"] == "main"
    budget = await render(
        "{% for a in xs %}{% for b in xs %}{% for c in xs %}.{% endfor %}{% endfor %}{% endfor %}",
        {"xs": list(range(200))},
    )
    assert budget["code"] == "template_budget_exceeded"
    failing = await render("{{ 1 // n }}", {"n": 0})
    assert failing["code"] == "template_error"

    await answer(await api.post(SETS, json=one_template("hi", set_id="ok")), 201)
    unknown = await api.post(f"{SETS}/ok/render", json={"template": "nope"})
    assert (await answer(unknown, 404))["code"] == "template_not_found"
    bad = await api.post(f"{SETS}/ok/render", json={"template": "main", "data": [1]})
    assert (await answer(bad, 422))["code"] == "invalid_render_request"


async def test_document_size_cap(kernel_factory: Any, api_factory: Any) -> None:
    kernel = await kernel_factory(document_max_bytes=100)
    api = await api_factory(kernel)
    await answer(await api.post(SETS, json=one_template("{{ 'é' * n }}")), 201)
    fits = await api.post(f"{SETS}/t/render", json={"template": "main", "data": {"n": 50}})
    assert (await answer(fits, 200))["bytes"] == 100
    over = await answer(
        await api.post(f"{SETS}/t/render", json={"template": "main", "data": {"n": 51}}), 422
    )
    assert over["code"] == "document_too_large"
    assert over["details"]["bytes"] == 102 and over["details"]["maxBytes"] == 100


def render_workflow(workflow_id: str, **parameters: Any) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "displayName": "Render the brief",
        "nodes": [
            {
                "id": "render",
                "actionType": "core.template.render",
                "parameters": {"templateSet": "project-brief", "template": "email", **parameters},
                "retry": {"maxAttempts": 1},
            }
        ],
    }


async def run_over_api(
    api: Any, kernel: Any, workflow: dict[str, Any], trigger: Any, headers: dict[str, str]
) -> dict[str, Any]:
    await answer(
        await api.post("/api/v1/workflows?autoActivate=true", json=workflow, headers=headers), 201
    )
    accepted = await answer(
        await api.post(
            f"/api/v1/workflows/{workflow['id']}/execute",
            json={"trigger": trigger},
            headers=headers,
        ),
        202,
    )
    await kernel.ledger.wait_until_final(uuid.UUID(accepted["executionId"]), 30)
    return dict(await answer(await api.get(accepted["statusUrl"], headers=headers), 200))


async def test_render_action_gives_the_preview_bytes(
    api: Any, kernel: Any, brief: dict[str, Any]
) -> None:
    await answer(await api.post(SETS, json=brief, headers=ACME), 201)
    data = copy.deepcopy(brief["sampleData"])
    data["project"]["name"] = "Ünïcode & <tags>"
    preview = await answer(
        await api.post(
            f"{SETS}/project-brief/render", json={"template": "email", "data": data}, headers=ACME
        ),
        200,
    )
    run = await run_over_api(
        api, kernel, render_workflow("render-brief", data="{{ trigger }}"), data, ACME
    )
    assert run["status"] == "Succeeded", run
    [step] = run["actions"]
    assert step["outputs"] == preview
    assert step["outputs"]["document"].encode() == preview["document"].encode()
    assert "&lt;tags&gt;" in preview["document"]

    # the same workflow in another tenant does not reach acme's templates
    failed = await run_over_api(
        api, kernel, render_workflow("render-brief-globex", data="{{ trigger }}"), data, GLOBEX
    )
    assert failed["status"] == "Failed"
    assert failed["actions"][0]["error"]["code"] == "template_not_found"


async def test_render_action_failures_are_permanent_with_the_preview_codes(
    api: Any, kernel: Any, brief: dict[str, Any]
) -> None:
    await answer(await api.post(SETS, json=brief), 201)
    run = await run_over_api(api, kernel, render_workflow("no-data", data={"team": []}), {}, {})
    assert run["status"] == "Failed"
    [step] = run["actions"]
    assert step["error"]["code"] == "template_undefined"
    assert "'project' is undefined" in step["error"]["message"]
    sample = await run_over_api(api, kernel, render_workflow("sample", version=1), {}, {})
    assert sample["status"] == "Succeeded"
    assert "<h1>Website relaunch</h1>" in sample["actions"][0]["outputs"]["document"]


async def test_render_time_cap(kernel_factory: Any, api_factory: Any) -> None:
    kernel = await kernel_factory(template_timeout=0.05, template_max_operations=10**9)
    api = await api_factory(kernel)
    source = (
        "{% for a in xs %}{% for b in xs %}{% for c in xs %}{% endfor %}{% endfor %}{% endfor %}"
    )
    await answer(await api.post(SETS, json=one_template(source)), 201)
    slow = await api.post(
        f"{SETS}/t/render", json={"template": "main", "data": {"xs": list(range(1000))}}
    )
    error = await answer(slow, 422)
    assert error["code"] == "template_budget_exceeded"
    assert "took longer than 0.05 s" in error["message"]
