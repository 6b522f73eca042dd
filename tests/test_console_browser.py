"""The web console in a real browser: Debian's Chromium (/usr/bin/chromium, installed by
.ci/run) driven by Playwright for Python over 127.0.0.1. Never `playwright install`: no
downloaded browser build.

A workflow is created through the API; its page is opened, a run started from it and
watched until it ends, live, without a reload; the failed step's logs are opened and the
DOM checked. axe-core (bundled by axe-playwright-python) finds no serious or critical
violation on the main pages, and the pages work from the keyboard. Screenshots are kept
in ``artifacts/console/`` (ignored by git; .ci/run fails if these tests were skipped).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright

from tests.test_console_pages import NoisyPlugin, two_steps

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: how long the browser waits for a run to end, or for anything else (ms)
WAIT_MS = 30_000


@pytest.fixture
def chromium_profile(tmp_path: Path) -> Path:
    """A new, empty user-data-dir; fails (never skips) without Debian's Chromium."""
    assert CHROMIUM.exists(), "no /usr/bin/chromium: apt-get install -y chromium (.ci/run does)"
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    return profile


@pytest.fixture
async def browser_page(chromium_profile: Path) -> AsyncIterator[Page]:
    """A page of a fresh Chromium (new empty profile) driven by Playwright."""
    profile = chromium_profile
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            await context.close()


@pytest.fixture
async def served(kernel_factory, api_factory) -> Any:
    kernel = await kernel_factory(plugins=[NoisyPlugin()])
    return await api_factory(kernel)


async def _shot(page: Page, name: str, backend: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{backend}-{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def test_console_browser_watches_a_run_fail_live_and_opens_its_logs(
    served, browser_page: Page, backend: str
):
    page = browser_page
    definition = two_steps("browser-flow", fail=True)
    # the first step takes a while, so the run is still in flight when its page opens
    definition["nodes"][0]["parameters"]["delayMs"] = 4000
    resp = await served.post("/api/v1/workflows?autoActivate=true", json=definition)
    assert resp.status == 201
    base = str(served.make_url("/")).rstrip("/")

    await page.goto(f"{base}/workflows/browser-flow")
    assert await page.locator("h1").inner_text() == "Console browser-flow Active"
    assert await page.locator("svg.graph g.node").count() == 2
    await _shot(page, "workflow", backend)

    # start a run from the page: open the disclosure, give a trigger, submit
    await page.get_by_text("Run now…").click()
    await page.get_by_label("Trigger payload (JSON object)").fill('{"word": "browser"}')
    await page.get_by_role("button", name="Start run").click()
    await page.wait_for_url(f"{base}/runs/*")
    live = page.locator("#run-live")
    assert await live.get_attribute("data-final") == "false", "the run ended before its page"
    await page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    # the page follows the run over the event stream until it fails
    await page.wait_for_selector('#run-live[data-final="true"]', timeout=WAIT_MS)
    assert await page.evaluate("window.__sameDocument === true")
    await page.wait_for_selector("#run-status:has-text('Failed')")
    assert await page.locator(".gantt-row").count() == 2
    assert await page.locator('svg.graph g.node[data-status="Failed"]').count() == 1
    assert await page.locator("#cancel").is_disabled()
    assert "Failed" in await page.locator("#live-note").inner_text()

    # open the failed step's logs
    step = page.locator('details.step[data-status="Failed"]')
    assert await step.count() == 1
    assert await step.get_attribute("open") is None
    await step.locator("summary").click()
    assert await step.get_attribute("open") is not None
    logs = step.locator("pre.logs")
    await logs.wait_for(state="visible")
    assert "noisy attempt 1 says browser" in await logs.inner_text()
    assert "noisy failed on purpose" in await step.locator("pre.error").inner_text()
    assert '"note": "browser"' in await step.locator("pre").first.inner_text()
    shot = await _shot(page, "run", backend)
    assert shot.stat().st_size > 10_000
    if backend == "sqlite":  # the README's picture (docs/images/console-run.png) comes from here
        shutil.copyfile(shot, ARTIFACTS / "console-run.png")

    # the runs list shows it, filtered by status
    await page.goto(f"{base}/runs?status=Failed")
    assert await page.locator("#runs tbody tr").count() == 1
    await _shot(page, "runs", backend)


SERIOUS = {"serious", "critical"}


async def test_console_browser_pages_pass_axe_and_work_from_the_keyboard(
    served, browser_page: Page, backend: str
):
    from axe_playwright_python.async_playwright import Axe

    page = browser_page
    resp = await served.post(
        "/api/v1/workflows?autoActivate=true", json=two_steps("browser-a11y", fail=True)
    )
    assert resp.status == 201
    resp = await served.post(
        "/api/v1/workflows/browser-a11y/execute", json={"trigger": {"word": "a11y"}}
    )
    run_id = (await resp.json())["executionId"]
    base = str(served.make_url("/")).rstrip("/")
    await page.goto(f"{base}/runs/{run_id}")
    await page.wait_for_selector('#run-live[data-final="true"]', timeout=WAIT_MS)

    axe = Axe()
    for path in (
        "/",
        "/workflows/browser-a11y",
        "/runs",
        f"/runs/{run_id}",
        "/dead-letters",
        "/plugins",
        "/credentials",
    ):
        await page.goto(base + path)
        results = await axe.run(page)
        bad = [
            (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
            for v in results.response["violations"]
            if v["impact"] in SERIOUS
        ]
        assert not bad, f"{path}: {bad}"
    await page.goto(base + "/api-reference")
    await page.wait_for_selector("#swagger-ui .opblock", timeout=WAIT_MS)  # Swagger UI ran
    await _shot(page, "api-reference", backend)

    # keyboard: the first Tab reaches the skip link, which moves focus to the content
    await page.goto(base + "/")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.activeElement.id") == "main"
    # Tab on through the navigation to "Runs" and follow it with Enter
    await page.goto(base + "/")
    for _ in range(10):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.textContent") == "Runs":
            break
    else:
        pytest.fail("Tab never reached the Runs link")
    await page.keyboard.press("Enter")
    await page.wait_for_url(base + "/runs")
    # on the run page a step opens from the keyboard (summary + Enter)
    await page.goto(f"{base}/runs/{run_id}")
    summary = page.locator('details.step[data-status="Failed"] summary')
    await summary.focus()
    await page.keyboard.press("Enter")
    assert await page.locator('details.step[data-status="Failed"]').get_attribute("open") == ""
    focus_ring = await summary.evaluate("e => getComputedStyle(e).outlineStyle")
    assert focus_ring != "none"
