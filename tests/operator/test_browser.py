"""The dashboard in a real headless browser (Debian's chromium, driven by Playwright) against
a real `outdial serve`: sign in, watch a campaign finish, pause one, a wrong key refused."""

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.conftest import TenantHandle
from tests.operator.conftest import Server

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = os.environ.get("OUTDIAL_DASHBOARD_SCREENSHOT")
"""Where to keep a screenshot of the dashboard (the README's: docs/dashboard.png)."""

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("CI") != "true",
    reason="needs Debian's chromium (make chromium)",
)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    yield context
    await context.close()


async def sign_in(page: Page, server: Server, key: str) -> None:
    await page.goto(f"{server.url}/dashboard")
    await expect(page).to_have_url(f"{server.url}/dashboard/login")
    await page.fill("input[name=key]", key)
    await page.click("button[type=submit]")


async def test_a_wrong_key_is_refused(context: BrowserContext, server: Server) -> None:
    page = await context.new_page()
    await sign_in(page, server, "sb_secret_not-a-key-at-all")
    await expect(page.locator("#login-error")).to_have_text("Unknown API key.")
    assert page.url == f"{server.url}/dashboard/login"
    assert not [c for c in await context.cookies() if c["name"].startswith("outdial")]
    await page.goto(f"{server.url}/dashboard")  # still signed out
    await expect(page).to_have_url(f"{server.url}/dashboard/login")


async def test_a_campaign_started_from_the_page_reaches_100_percent_live(
    context: BrowserContext, server: Server
) -> None:
    tenant = await server.make_tenant()
    campaign_id = await server.campaign(tenant, contacts=40, calls_per_second=40, name="Spring")
    page = await context.new_page()
    await sign_in(page, server, tenant.key)
    await expect(page).to_have_url(f"{server.url}/dashboard")
    cookie = next(c for c in await context.cookies() if c["name"] == "outdial_dashboard_key")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    row = page.locator(f"#campaign-{campaign_id}")
    await expect(row).to_have_attribute("data-status", "draft")
    await page.evaluate("window.notReloaded = true")

    await row.locator("button[data-action=start]").click()
    await expect(page.locator("#notice")).to_contain_text("started")
    await expect(row).to_have_attribute("data-status", "running", timeout=5000)
    await expect(row).to_have_attribute("data-progress", "100", timeout=30_000)
    await expect(row).to_have_attribute("data-status", "completed", timeout=5000)
    await expect(row.locator(".bar")).to_have_attribute("aria-valuenow", "100")
    assert await page.evaluate("window.notReloaded === true")  # updated in place
    await expect(page.locator("#queue dd[data-state=completed]")).to_have_text("40")
    if SCREENSHOT:
        await page.screenshot(path=SCREENSHOT)

    # a call's timeline, from the recent calls
    await page.locator("#calls a").first.click()
    await expect(page.locator("#timeline")).to_contain_text("placed")
    await expect(page.locator("#timeline")).to_contain_text("ended: answered")


async def test_pausing_from_the_page_pauses_the_campaign(
    context: BrowserContext, server: Server, shared_tenant: TenantHandle
) -> None:
    campaign_id = await server.campaign(
        shared_tenant, contacts=300, calls_per_second=2, name="Slow"
    )
    async with server.client(shared_tenant.key) as api:
        started = await api.post(f"/v1/campaigns/{campaign_id}/start")
        assert started.status_code == 200, started.text
    page = await context.new_page()
    await sign_in(page, server, shared_tenant.key)
    row = page.locator(f"#campaign-{campaign_id}")
    await expect(row).to_have_attribute("data-status", "running")
    await row.locator("button[data-action=pause]").click()
    await expect(page.locator("#notice")).to_contain_text("paused")

    async with server.client(shared_tenant.key) as api:
        campaign = (await api.get(f"/v1/campaigns/{campaign_id}")).json()
        assert campaign["status"] == "paused"
    await expect(row).to_have_attribute("data-status", "paused", timeout=5000)
    await expect(row.locator("button[data-action=resume]")).to_be_visible()

    # pausing again is the API's 409, shown on the page as its message
    await page.evaluate(f"htmx.ajax('POST', '/dashboard/campaigns/{campaign_id}/pause', '#notice')")
    await expect(page.locator("#notice")).to_contain_text("is paused; it cannot pause")

    # another tenant signed in elsewhere never sees this campaign
    other = await server.make_tenant()
    other_page = await (await page.context.browser.new_context()).new_page()  # type: ignore[union-attr]
    await sign_in(other_page, server, other.key)
    await expect(other_page.locator("#campaigns")).to_contain_text("No campaigns yet.")
    await expect(other_page.locator(f"#campaign-{campaign_id}")).to_have_count(0)
    await other_page.context.close()

    await page.click("text=Sign out")
    await expect(page).to_have_url(f"{server.url}/dashboard/login")
    assert not [c for c in await context.cookies() if c["name"].startswith("outdial")]
