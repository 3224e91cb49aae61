"""The web app end to end: a live server (uvicorn in a thread) driven by httpx and by a real browser.

The server is the gateway app with the web app mounted, over ``FakeHub`` (deterministic answers)
and the real shop assistant, search and guided support session, on a temporary ``CONCIERGE_HOME``.
Browser tests use Playwright for Python with Debian's chromium (``scripts/install_browser.sh``) and
skip, saying why, where either is missing. Screenshots go to ``test-output/screenshots/``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from concierge import tenancy
from concierge.store import db
from helpers.apps import build_app
from helpers.hubs import ShopHub as FakeHub
from helpers.paths import ROOT
from helpers.server import LiveServer

CHROMIUM = Path(os.environ.get("CONCIERGE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
PHONE = {"width": 390, "height": 844}
CANCEL_REQUEST = "I want to cancel reservation HS10001, my plans changed. My email is maya.okafor@example.com"


class Live:
    """A running server and what the tests need to know about it."""

    def __init__(self, base: str, home: Path, operator_key: str, api_key: str, services: Any) -> None:
        self.base = base
        self.home = home
        self.operator_key = operator_key
        self.api_key = api_key
        self.services = services

    def client(self, **kwargs: Any) -> httpx.Client:
        """A client that sends the Origin a page of this site would send."""
        headers = {"Origin": self.base, **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("web-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONCIERGE_HOME", str(home))
        mp.delenv("CONCIERGE_DATABASE_URL", raising=False)
        mp.delenv("CONCIERGE_SUPPORT_DATA", raising=False)
        mp.delenv("CONCIERGE_WEB_SECRET", raising=False)
        db.reset_engines()
        app, services = build_app(FakeHub())
        operator_key = tenancy.create_key("ops", scope="operator").key
        api_key = tenancy.create_key("demo").key
        try:
            with LiveServer(app) as server:
                yield Live(server.url, home, operator_key, api_key, services)
        finally:
            db.reset_engines()


# ---------------------------------------------------------------------------------------------
# Over HTTP (no browser needed)
# ---------------------------------------------------------------------------------------------
def test_pages_render_with_local_assets_and_strict_headers(live: Live) -> None:
    with live.client() as client:
        for path in ("/", "/support", "/console/login"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert page.headers["content-type"].startswith("text/html")
            csp = page.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert '<html lang="en">' in page.text
            assert 'name="viewport"' in page.text
            # Every script and stylesheet is served by the app itself: no CDN at run time.
            for url in re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', page.text):
                assert url.startswith("/static/"), url
                assert client.get(url).status_code == 200, url
        htmx = client.get("/static/htmx.min.js").text
        assert "0BSD" in htmx.splitlines()[0]


def test_posts_from_other_sites_are_refused(live: Live) -> None:
    with httpx.Client(base_url=live.base, timeout=30) as bare:
        assert bare.post("/ui/support/chat", data={"message": "hi"}).status_code == 403
        forged = bare.post("/ui/support/chat", data={"message": "hi"}, headers={"Origin": "https://evil.example"})
        assert forged.status_code == 403
        login = bare.post("/console/login", data={"api_key": live.operator_key},
                          headers={"Origin": "https://evil.example"})
        assert login.status_code == 403
        assert "concierge_operator" not in login.headers.get("set-cookie", "")


def _ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


def _chip_forms(html_text: str) -> dict[str, dict[str, str]]:
    """The filter chips of an answer's HTML: label -> the form fields its remove button posts."""
    out = {}
    for form in re.findall(r'<li class="chip chip-\w+">(.*?)</li>', html_text, re.S):
        label = html.unescape(re.search(r'<span class="chip-label">(.*?)</span>', form).group(1))
        fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form))
        out[label] = {k: html.unescape(v) for k, v in fields.items()}
    return out


def test_shop_page_shows_filters_that_can_be_removed_or_changed(live: Live) -> None:
    from concierge.shop.catalog import load_catalog

    catalog = load_catalog(None, "demo", "demo")
    with live.client() as client:
        events = _ndjson(client.post("/ui/shop/chat", data={"message": "sneakers under $60 please"}))
        answer = events[-1]
        assert answer["type"] == "answer", events
        assert events[0]["type"] == "products" and "Filters:" in events[0]["html"]  # with the early cards
        chips = _chip_forms(answer["html"])
        assert "under $60" in chips and "Sneakers" in chips, chips
        assert "Meets: sneakers, under $60" in html.unescape(answer["html"])  # each card says what it meets
        prices = [float(x.replace(",", "")) for x in re.findall(r'card-price">\$([\d,.]+)<', answer["html"])]
        assert prices and max(prices) <= 60
        # Remove the price filter: the same search without it.
        events = _ndjson(client.post("/ui/shop/chat", data=chips["under $60"]))
        again = events[-1]
        assert again["type"] == "answer", events
        chips_after = _chip_forms(again["html"])
        assert "Sneakers" in chips_after and not any(label.startswith("under $") for label in chips_after)
        prices = [float(x.replace(",", "")) for x in re.findall(r'card-price">\$([\d,.]+)<', again["html"])]
        assert any(
            v.price > 60 for p in catalog.products if p.category.endswith("Sneakers") for v in p.variants if v.in_stock
        )
        assert prices and max(prices) > 60
        # Change the price instead: the price form posts the current filters with new bounds.
        query = json.loads(chips_after["Sneakers"]["query"])  # (any chip's query carries the other filters)
        query["category"] = json.loads(chips["under $60"]["query"])["category"]
        events = _ndjson(client.post("/ui/shop/chat", data={"message": "Change the price", "query": json.dumps(query),
                                                           "price_min": "70", "price_max": ""}))
        changed = events[-1]
        chips_changed = _chip_forms(changed["html"])
        assert "over $70" in chips_changed, chips_changed
        prices = [float(x.replace(",", "")) for x in re.findall(r'card-price">\$([\d,.]+)<', changed["html"])]
        assert prices and min(prices) >= 70
        # Filters a form could not have sent are a plain error line, not a 500.
        bad = _ndjson(client.post("/ui/shop/chat", data={"message": "x", "query": "{not json"}))
        assert bad == [{"type": "error", "message": "the filters could not be read"}]
        bad = _ndjson(client.post("/ui/shop/chat", data={"message": "x", "query": "{}", "price_max": "lots"}))
        assert bad[0]["type"] == "error" and "not a price" in bad[0]["message"]


def test_visitor_cookie_is_signed_httponly_and_strict(live: Live) -> None:
    with live.client() as client:
        reply = client.post("/ui/support/chat", data={"message": "hello", "after": "0"},
                            headers={"HX-Request": "true"})
        assert reply.status_code == 200
        cookie = reply.headers["set-cookie"]
        assert "concierge_visitor=" in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("samesite", "SameSite")
        assert 'data-id="' in reply.text
        assert 'id="after"' in reply.text and 'hx-swap-oob="true"' in reply.text
        # A tampered cookie is ignored: the visitor starts afresh instead of reading someone's chat.
        value = client.cookies["concierge_visitor"]
        client.cookies.clear()
        client.cookies.set("concierge_visitor", value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1])
        page = client.get("/support")
        assert "hello" not in page.text


def test_operator_login_needs_an_operator_key(live: Live) -> None:
    with live.client(follow_redirects=False) as client:
        assert client.get("/console").headers["location"] == "/console/login"
        assert client.post("/console/login", data={"api_key": "ck-wrong"}).status_code == 401
        refused = client.post("/console/login", data={"api_key": live.api_key})
        assert refused.status_code == 403
        assert "operator key" in refused.text
        ok = client.post("/console/login", data={"api_key": live.operator_key})
        assert ok.status_code == 303 and ok.headers["location"] == "/console"
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        assert live.operator_key not in cookie  # the key itself never goes to the browser
        console = client.get("/console")
        assert console.status_code == 200
        for heading in ("Handoff queue", "Live conversations", "Models in use", "Usage per tenant", "reports"):
            assert heading in console.text
        assert "shop-assistant" in console.text and "all-minilm-l6-v2" in console.text
        logout = client.post("/console/logout")
        assert logout.headers["location"] == "/console/login"
        client.cookies.clear()
        assert client.get("/console").status_code == 303


def test_revoking_the_key_ends_the_console_session(live: Live) -> None:
    key = tenancy.create_key("ops", scope="operator")
    with live.client(follow_redirects=False) as client:
        assert client.post("/console/login", data={"api_key": key.key}).status_code == 303
        assert client.get("/console").status_code == 200
        tenancy.revoke_key(str(key.info.id))
        assert client.get("/console").status_code == 303


def test_console_lists_and_serves_reports_safely(live: Live) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = live.home / "reports" / "recsys"
    reports.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    fig.savefig(reports / "recall.png")
    plt.close(fig)
    (reports / "summary.json").write_text('{"recall@10": 0.3}')
    (live.home / "reports" / "proof.html").write_text("<h1>proof</h1><script>alert(1)</script>")
    with live.client(follow_redirects=False) as client:
        assert client.get("/console/reports/recsys/recall.png").status_code == 303  # not logged in
        client.post("/console/login", data={"api_key": live.operator_key})
        console = client.get("/console").text
        for name in ("recsys/recall.png", "recsys/summary.json", "proof.html"):
            assert f'href="/console/reports/{name}"' in console
        assert '<img src="/console/reports/recsys/recall.png"' in console
        png = client.get("/console/reports/recsys/recall.png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
        html = client.get("/console/reports/proof.html")
        assert html.status_code == 200 and "sandbox" in html.headers["content-security-policy"]
        assert client.get("/console/reports/summary.json").status_code == 404
        for sneaky in ("/console/reports/..%2Fweb_secret", "/console/reports/%2e%2e/concierge.db"):
            assert client.get(sneaky).status_code == 404


def test_handoff_takeover_and_reply_over_http(live: Live) -> None:
    hx = {"HX-Request": "true"}
    with live.client() as customer, live.client() as operator:
        customer.post("/ui/support/chat", data={"message": "Hi, my email is grace.kim@example.com", "after": "0"},
                      headers=hx)
        handoff = customer.post("/ui/support/handoff", data={"after": "0"}, headers=hx)
        assert "passing you to a person" in handoff.text
        after = re.search(r'id="after" name="after" value="(\d+)"', handoff.text).group(1)
        conversation_id = live.services.support.handoffs()[-1]["conversation_id"]

        operator.post("/console/login", data={"api_key": live.operator_key})
        queue = operator.get("/console/fragments/queue", headers=hx).text
        assert conversation_id in queue and "grace_kim" in queue
        pane = operator.post(f"/console/conversations/{conversation_id}/take-over", headers=hx).text
        assert "Reply as a person" in pane
        operator.post(f"/console/conversations/{conversation_id}/reply",
                      data={"message": "Hello Grace, Sam here."}, headers=hx)

        update = customer.get("/ui/support/updates", params={"after": after}, headers=hx)
        assert update.status_code == 200
        assert "Hello Grace, Sam here." in update.text and "Support team" in update.text
        assert "ck-" not in update.text  # the customer never sees which key the operator used
        newest = re.search(r'id="after" name="after" value="(\d+)"', update.text).group(1)
        assert customer.get("/ui/support/updates", params={"after": newest}, headers=hx).status_code == 204

        # While a person has the case the agent stays out; after hand-back it answers again.
        held = customer.post("/ui/support/chat", data={"message": "thanks", "after": newest}, headers=hx)
        assert "passed to our team" in held.text
        operator.post(f"/console/conversations/{conversation_id}/hand-back", headers=hx)
        assert live.services.support.state(conversation_id)["status"] == "open"
        back = customer.post("/ui/support/chat", data={"message": "what are my reservations?", "after": "0"},
                             headers=hx)
        assert "HS10010" in back.text


# ---------------------------------------------------------------------------------------------
# In a browser
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (run scripts/install_browser.sh)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Playwright for Python is not installed (run scripts/install_browser.sh)"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _context(browser: Any) -> Any:
    context = browser.new_context(viewport=PHONE, device_scale_factor=1)
    context.set_default_timeout(15_000)
    return context


def _no_horizontal_scroll(page: Any) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width}px wide at a {PHONE['width']}px viewport"


def test_shopping_conversation_shows_product_cards(live: Live, browser: Any) -> None:
    context = _context(browser)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(live.base + "/")
    log = page.locator("#shop-log")
    assert log.get_attribute("aria-live") == "polite"
    box = page.get_by_label("Your message")
    box.fill("I am looking for running shoes")
    box.press("Enter")  # the keyboard alone sends a message
    cards = page.locator("#shop-log .card")
    cards.first.wait_for()
    first = cards.first
    assert first.locator(".card-title").inner_text().strip()
    assert re.match(r"^\$\d", first.locator(".card-price").inner_text())
    # The cards arrive before the answer's last event: wait for the stream to finish, then check.
    page.wait_for_function("document.querySelectorAll('#shop-log .msg-assistant[aria-busy]').length === 0")
    assert page.evaluate("document.activeElement.id") == "shop-message"  # focus back in the box
    _no_horizontal_scroll(page)
    page.screenshot(path=str(SCREENSHOTS / "shop-cards.png"), full_page=True)

    # Refine in the same conversation, then ask for more like one card.
    before = page.locator("#shop-log .msg-assistant").count()
    box.fill("something cheaper")
    box.press("Enter")
    # (Locators, not wait_for_function: the page's CSP forbids the eval that needs.)
    page.locator("#shop-log .msg-assistant:not([aria-busy])").nth(before).wait_for()
    title = cards.first.locator(".card-title").inner_text().strip()
    shown = cards.count()
    page.get_by_role("button", name=f"More like this: {title}").first.click()
    page.get_by_text(f"More like {title}").wait_for()
    cards.nth(shown).wait_for()
    page.screenshot(path=str(SCREENSHOTS / "shop-more-like-this.png"), full_page=True)

    # The conversation survives a reload (it is kept on the server, named by the visitor cookie).
    page.reload()
    assert page.locator("#shop-log .msg-user").count() == 2
    assert not errors, errors
    context.close()


def test_removing_a_filter_in_the_browser_searches_again(live: Live, browser: Any) -> None:
    context = _context(browser)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live.base + "/")
    box = page.get_by_label("Your message")
    box.fill("sneakers under $60")
    box.press("Enter")
    remove = page.get_by_role("button", name="Remove filter under $60")
    remove.first.wait_for()
    page.locator("#shop-log .msg-assistant:not([aria-busy])").first.wait_for()
    remove.first.click()
    page.locator("#shop-log .msg-user").nth(1).wait_for()
    page.locator("#shop-log .msg-assistant:not([aria-busy])").nth(1).wait_for()
    last = page.locator("#shop-log .msg-assistant").nth(1)
    assert last.locator(".chip-label", has_text="Sneakers").count() == 1
    assert last.locator(".chip-label", has_text="under $60").count() == 0
    _no_horizontal_scroll(page)
    page.screenshot(path=str(SCREENSHOTS / "shop-filters.png"), full_page=True)
    assert not errors, errors
    context.close()


def test_support_conversation_confirms_a_cancellation(live: Live, browser: Any) -> None:
    context = _context(browser)
    page = context.new_page()
    page.goto(live.base + "/support")
    box = page.get_by_label("Your message")
    box.fill(CANCEL_REQUEST)
    box.press("Enter")
    yes = page.get_by_role("button", name="Yes, go ahead")
    yes.wait_for()
    assert page.get_by_role("button", name="No, keep it").is_visible()
    assert "Shall I cancel it" in page.locator("#support-log .msg-assistant").last.inner_text()
    _no_horizontal_scroll(page)
    page.screenshot(path=str(SCREENSHOTS / "support-confirm.png"), full_page=True)
    yes.click()
    page.get_by_text("Reservation HS10001 is cancelled").wait_for()
    assert page.locator(".confirm-box").count() == 0  # the question is answered: the buttons go
    assert page.evaluate("document.activeElement.id") == "support-message"
    page.screenshot(path=str(SCREENSHOTS / "support-cancelled.png"), full_page=True)
    context.close()


def test_operator_takes_over_a_handed_off_conversation(live: Live, browser: Any) -> None:
    customer = _context(browser)
    page = customer.new_page()
    page.goto(live.base + "/support")
    box = page.get_by_label("Your message")
    box.fill("Hello, I am noah.becker@example.com")
    box.press("Enter")
    page.get_by_text("I found your account").wait_for()
    page.get_by_role("button", name="Talk to a person").click()
    page.get_by_text("Waiting for a person from our team").wait_for()
    assert page.get_by_role("button", name="Talk to a person").count() == 0  # asked once is enough

    operator = _context(browser)
    console = operator.new_page()
    console.goto(live.base + "/console")
    assert console.url.endswith("/console/login")
    key_box = console.get_by_label("Operator key")
    key_box.fill(live.api_key)
    key_box.press("Enter")
    console.get_by_role("alert").wait_for()
    assert "operator key" in console.get_by_role("alert").inner_text()
    console.get_by_label("Operator key").fill(live.operator_key)
    console.get_by_label("Operator key").press("Enter")
    console.get_by_role("heading", name="Handoff queue").wait_for()
    queued = console.locator("#queue li", has_text="noah_becker")
    queued.get_by_role("button", name=re.compile("^Open")).click()
    console.get_by_role("button", name="Take over").click()
    reply = console.get_by_label("Reply as a person")
    reply.fill("Hi Noah, this is Sam from Homestay. I can help with that.")
    reply.press("Enter")
    console.locator("#transcript .msg-staff").wait_for()
    assert console.evaluate("document.activeElement.id") == "staff-message"
    console.screenshot(path=str(SCREENSHOTS / "console-takeover.png"), full_page=True)

    # The customer's page polls and shows the person's reply.
    page.get_by_text("Hi Noah, this is Sam from Homestay").wait_for()
    page.get_by_text("A person from our team is handling your conversation").wait_for()
    page.screenshot(path=str(SCREENSHOTS / "support-human-reply.png"), full_page=True)

    console.get_by_role("button", name="Hand back to the assistant").click()
    console.get_by_role("button", name="Take over").wait_for()
    page.get_by_text("You are back with the assistant").wait_for()
    page.get_by_role("button", name="Talk to a person").wait_for()
    operator.close()
    customer.close()


def test_screenshot_folder_is_ignored_by_git() -> None:
    root = ROOT
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    import subprocess

    out = subprocess.run(["git", "check-ignore", "-q", "test-output/screenshots/x.png"], cwd=root, check=False)
    assert out.returncode == 0, "test-output/ must be in .gitignore"
