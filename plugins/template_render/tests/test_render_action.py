"""``core.template.render`` on its own: outside a kernel (the contract's default
``Documents`` knows no template), with a kernel (the plugin registered directly), and
with a ``Documents`` a test provides."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import dataworkflows_template_render
from dataworkflows import ActionContext, ActionError, Documents, RenderedDocument, StepOutcome
from dataworkflows_template_render.action import RenderTemplate


def context(documents: Documents | None = None) -> ActionContext:
    return ActionContext(
        execution_id="00000000-0000-0000-0000-000000000001",
        workflow_id="wf",
        workflow_version=1,
        node_id="render",
        attempt=1,
        idempotency_key="00000000-0000-0000-0000-000000000001:render",
        trigger={},
        http=None,  # type: ignore[arg-type]  # the action sends nothing
        log=logging.LoggerAdapter(logging.getLogger("test.render"), {}),
        cancelled=asyncio.Event(),
        documents=documents or Documents(),
    )


def params(**values: Any) -> Any:
    return RenderTemplate.Params.model_validate({"templateSet": "s", "template": "t", **values})


async def test_outside_a_kernel_no_template_exists() -> None:
    result = await RenderTemplate().run(context(), params(data={}))
    assert result.outcome is StepOutcome.FAILED
    assert result.error is not None and result.error["code"] == "template_not_found"


class Recording(Documents):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any, int | None]] = []

    async def render(
        self, template_set: str, template: str, data: Mapping[str, Any] | None, *,
        version: int | None = None,
    ) -> RenderedDocument:  # fmt: skip
        self.calls.append((template_set, template, data, version))
        if template == "broken":
            raise ActionError("undefined: 'x' is undefined", code="template_undefined")
        text = f"hello {dict(data or {}).get('name')}"
        return RenderedDocument(text, "text", "text/plain; charset=utf-8", template_set,
                                template, version or 3, len(text), "0" * 64)  # fmt: skip


async def test_outputs_are_the_rendered_document_and_errors_keep_their_code() -> None:
    documents = Recording()
    done = await RenderTemplate().run(context(documents), params(data={"name": "Ada"}, version=2))
    assert done.outcome is StepOutcome.SUCCEEDED
    assert done.outputs["document"] == "hello Ada" and done.outputs["version"] == 2
    assert documents.calls == [("s", "t", {"name": "Ada"}, 2)]
    failed = await RenderTemplate().run(context(documents), params(template="broken"))
    assert failed.outcome is StepOutcome.FAILED
    assert failed.error is not None and failed.error["code"] == "template_undefined"


async def test_in_a_kernel_it_renders_the_stored_template(
    kernel_factory: Any, run_workflow: Any
) -> None:
    kernel = await kernel_factory(plugins=[dataworkflows_template_render], entrypoints=False)
    await kernel.documents.create(
        {"id": "greet", "templates": {"hi": {"source": "Hi {{ name }}!"}}}
    )
    run = await run_workflow(
        kernel,
        {
            "id": "greet",
            "displayName": "Greet",
            "nodes": [
                {
                    "id": "render",
                    "actionType": "core.template.render",
                    "parameters": {"templateSet": "greet", "template": "hi",
                                   "data": {"name": "{{ trigger.name }}"}},
                }
            ],
        },
        trigger={"name": "Grace"},
    )  # fmt: skip
    assert run["status"] == "Succeeded", run
    assert run["actions"][0]["outputs"]["document"] == "Hi Grace!"
