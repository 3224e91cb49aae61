"""The web app: shopper page (``/``), support page (``/support``) and operator console (``/console``).

Server-rendered Jinja2 templates with htmx (vendored under ``static/``, no build step, no CDN):
pages work at phone width and stay plain HTML forms for assistive technology. The shopper's
answers stream over ``fetch`` as NDJSON (``static/shop.js``), because htmx swaps whole responses.

Security: the public pages never hold an API key. A signed, httponly, SameSite=Strict visitor
cookie names the browser's conversations, which belong to the demo tenant. The console takes an
operator-scope key once, at login, and keeps only a signed cookie naming that key (checked against
the database on every request, so revoking the key ends the session). Every POST must come from
this site's own pages (``Origin`` check), on top of SameSite=Strict.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import secrets
import traceback
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from concierge import tenancy
from concierge.shop.assistant import ShopProducts
from concierge.shop.query import ShopError
from concierge.shop.session import ShopWarming
from concierge.store import conversations as convs
from concierge.store.conversations import ConversationConflict
from concierge.store.db import session_scope
from concierge.store.tables import ApiKey
from concierge.support import handoffs
from concierge.support.connectors import audit
from concierge.support.session import awaiting_confirmation
from concierge.web import filters, security
from concierge.web.context import WebServices

log = logging.getLogger("concierge.web")

HERE = Path(__file__).resolve().parent
VISITOR_COOKIE = "concierge_visitor"
OPERATOR_COOKIE = "concierge_operator"
REPORT_SUFFIXES = {".json", ".html", ".png", ".md", ".csv", ".txt", ".svg"}
MAX_REPORTS = 60
MAX_MESSAGE_ID = 2**31 - 1  # ``after`` is a message id: an INTEGER column (PostgreSQL: int4; bigger overflows)
_END = object()
WARMING_MESSAGE = "The shop is still getting ready (its product search is being built). Please try again in a minute."

# Pages only load what this server serves; htmx's own indicator styles are switched off in base.html.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

__all__ = ["WebServices", "mount_web"]


# --------------------------------------------------------------------------------------------------
# Template helpers


def _money(value: Any, currency: str | None = None) -> str:
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return ""
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get((currency or "USD").upper())
    return f"{symbol}{amount:,.2f}" if symbol else f"{amount:,.2f} {currency}"


def _options(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items() if v not in (None, ""))
    return str(value or "")


def _swatch(text: Any) -> int:
    # A stable colour class per category/title for the image placeholder (no images are fetched).
    return sum(ord(c) for c in str(text or "")) % 6


def _initials(title: Any) -> str:
    words = [w for w in str(title or "").split() if w[:1].isalnum()]
    return "".join(w[0] for w in words[:2]).upper() or "?"


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value or "")


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.filters.update(money=_money, options=_options, swatch=_swatch, initials=_initials, when=_when)
    return templates


# --------------------------------------------------------------------------------------------------
# The app


def mount_web(app: FastAPI, services: WebServices) -> None:
    """Add the pages, their browser endpoints and ``/static`` to ``app`` (any FastAPI app; the server passes the gateway's)."""
    templates = _templates()
    secret = services.secret or security.load_secret()
    shop = services.shop
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # ---- plumbing ------------------------------------------------------------------------------

    def secure(request: Request) -> bool:
        return services.cookie_secure if services.cookie_secure is not None else request.url.scheme == "https"

    def page(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
        response = templates.TemplateResponse(request, name, context, status_code=status_code)
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-store"
        return response

    def fragment(request: Request, name: str, context: dict[str, Any]) -> HTMLResponse:
        return page(request, name, context)

    def same_origin(request: Request) -> bool:
        return security.same_origin(request.headers, request.url.scheme, services.extra_origins)

    def forbidden() -> HTMLResponse:
        return HTMLResponse("Cross-site request refused.", status_code=403, headers=SECURITY_HEADERS)

    def visitor(request: Request) -> dict[str, Any]:
        return security.unsign(request.cookies.get(VISITOR_COOKIE), secret, "visitor") or {}

    def set_visitor(request: Request, response: Response, data: dict[str, Any]) -> None:
        response.set_cookie(
            VISITOR_COOKIE, security.sign(data, secret, "visitor", services.visitor_session_s),
            max_age=services.visitor_session_s, httponly=True, samesite="strict", secure=secure(request), path="/",
        )

    def operator(request: Request) -> dict[str, Any] | None:
        """The logged-in operator, or None. The key behind the cookie must still be an active operator key."""
        data = security.unsign(request.cookies.get(OPERATOR_COOKIE), secret, "operator")
        if not data or not isinstance(data.get("key_id"), int):
            return None
        with session_scope(services.db_url) as db:
            row = db.scalar(select(ApiKey).where(ApiKey.id == data["key_id"]))
            if row is None or row.revoked_at is not None or row.scope != "operator":
                return None
        return data

    def oops(exc: BaseException, where: str) -> str:
        ref = secrets.token_hex(4)
        log.error(
            "unexpected %s in %s (ref %s)\n%s", type(exc).__name__, where, ref,
            "\n".join(f"  {f.filename}:{f.lineno} in {f.name}" for f in traceback.extract_tb(exc.__traceback__)),
        )
        return f"Sorry, something went wrong on our side (ref {ref}). Please try again."

    async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args)

    async def form_text(request: Request, name: str, limit: int = 4000) -> str:
        value = (await request.form()).get(name)
        # Pages never send NUL, and it cannot be stored (PostgreSQL refuses it): dropped, not a 500.
        return value.replace("\x00", "").strip()[:limit] if isinstance(value, str) else ""

    # ---- shopper ---------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def shop_page(request: Request) -> Response:
        history: list[dict[str, Any]] = []
        conversation_id = visitor(request).get("shop")
        if conversation_id:
            try:
                history = await in_thread(lambda: convs.messages(conversation_id, db_url=services.db_url))
            except Exception:  # noqa: BLE001  (an unreadable history only costs the visitor their old chat)
                history = []
        return page(request, "shop.html", {"history": history, "catalog": services.catalog, "active": "shop"})

    @app.post("/ui/shop/chat", include_in_schema=False)
    async def shop_chat(request: Request) -> Response:
        if not same_origin(request):
            return forbidden()
        text = await form_text(request, "message")
        data = visitor(request)
        form = await request.form()
        edited: dict[str, Any] | None = None
        raw_query = form.get("query")
        if isinstance(raw_query, str) and raw_query.strip():
            # A filter removed or changed: search again with exactly the filters the form sends.
            price = {k: v if isinstance(v := form.get(k), str) else None for k in ("price_min", "price_max")}
            try:
                edited = filters.edited_query(raw_query, price["price_min"], price["price_max"])
            except filters.FilterError as exc:
                return _ndjson_once({"type": "error", "message": str(exc)})

        def start() -> tuple[Any, Any]:
            try:
                turn = shop.prepare(services.tenant, text, conversation_id=data.get("shop"), query=edited)
            except convs.ConversationNotFound:
                # The conversation is gone (a reset database): start a new one rather than fail.
                turn = shop.prepare(services.tenant, text, query=edited)
            return turn, shop.stream(turn)

        try:
            turn, source = await in_thread(start)
        except ShopError as exc:
            return _ndjson_once({"type": "error", "message": exc.message})
        except ShopWarming:
            return _ndjson_once({"type": "error", "message": WARMING_MESSAGE})
        except Exception as exc:  # noqa: BLE001
            return _ndjson_once({"type": "error", "message": oops(exc, "shop chat")})
        cards = templates.get_template("_cards.html")

        def render_cards(item: Any) -> str:
            chips = [] if item.clarifying else filters.filter_chips(item.query)
            return cards.render(products=item.products, alternatives=item.alternatives, chips=chips,
                                query=json.dumps(item.query or {}, sort_keys=True), price=item.query or {})

        async def lines() -> AsyncIterator[str]:
            try:
                while True:
                    item = await in_thread(next, source, _END)
                    if item is _END:
                        break
                    if isinstance(item, str):
                        yield json.dumps({"type": "delta", "text": item}) + "\n"
                    elif isinstance(item, ShopProducts):
                        # Cards first: the shopper sees products while the answer is still being written.
                        yield json.dumps({"type": "products", "html": render_cards(item)}) + "\n"
                    else:
                        yield json.dumps({"type": "answer", "message": item.message, "html": render_cards(item),
                                          "clarifying": bool(item.clarifying)}) + "\n"
            except Exception as exc:  # noqa: BLE001  (reported in-band: the stream has started)
                yield json.dumps({"type": "error", "message": oops(exc, "shop stream")}) + "\n"
            finally:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(source.close)

        response = StreamingResponse(
            lines(), media_type="application/x-ndjson", headers={**SECURITY_HEADERS, "Cache-Control": "no-store"}
        )
        if data.get("shop") != turn.conversation_id:
            set_visitor(request, response, {**data, "shop": turn.conversation_id})
        return response

    @app.post("/ui/shop/similar", response_class=HTMLResponse, include_in_schema=False)
    async def shop_similar(request: Request) -> Response:
        if not same_origin(request):
            return forbidden()
        product_id = await form_text(request, "product_id", 200)
        title = await form_text(request, "title", 300)
        try:
            products = await in_thread(shop.similar, services.tenant, services.catalog, product_id, 6)
            error = None
        except ShopError as exc:
            products, error = [], exc.message
        except ShopWarming:
            products, error = [], WARMING_MESSAGE
        except Exception as exc:  # noqa: BLE001
            products, error = [], oops(exc, "shop similar")
        return fragment(request, "_similar.html", {"products": products, "title": title, "error": error})

    @app.post("/ui/shop/reset", include_in_schema=False)
    async def shop_reset(request: Request) -> Response:
        if not same_origin(request):
            return forbidden()
        response = RedirectResponse("/", status_code=303)
        data = {k: v for k, v in visitor(request).items() if k != "shop"}
        set_visitor(request, response, data)
        return response

    # ---- support ---------------------------------------------------------------------------------

    def support_view(conversation_id: str | None, after: int) -> dict[str, Any]:
        """New messages after ``after`` and what the page shows around them (status, Yes/No)."""
        if not conversation_id:
            return {"messages": [], "after": after, "status": None, "confirm": False}
        conv = convs.conversation(conversation_id, db_url=services.db_url)
        rows = convs.messages(conversation_id, after, db_url=services.db_url)
        shown = [m for m in rows if m["role"] in ("user", "assistant", handoffs.STAFF_ROLE, "system")]
        last = rows[-1]["id"] if rows else after
        confirm = False
        if shown and shown[-1]["role"] == "assistant":
            confirm = awaiting_confirmation({**conv["state"], "status": conv["status"]}, shown[-1]["content"])
        return {"messages": shown, "after": last, "status": conv["status"], "confirm": confirm}

    def support_conversation(request: Request) -> str | None:
        conversation_id = visitor(request).get("support")
        if not conversation_id:
            return None
        try:
            conv = convs.conversation(conversation_id, db_url=services.db_url)
        except convs.ConversationNotFound:
            return None
        return conversation_id if conv["kind"] == "support" else None

    @app.get("/support", response_class=HTMLResponse, include_in_schema=False)
    async def support_page(request: Request) -> Response:
        conversation_id = await in_thread(support_conversation, request)
        view = await in_thread(support_view, conversation_id, 0)
        return page(request, "support.html", {**view, "active": "support", "conversation_id": conversation_id})

    async def after_of(request: Request) -> int:
        raw = (await request.form()).get("after") if request.method == "POST" else request.query_params.get("after")
        try:
            # Clamped to what the id column holds: a bigger one was a 500 (OverflowError, integer out of range).
            return min(max(0, int(raw or 0)), MAX_MESSAGE_ID)
        except (TypeError, ValueError):
            return 0

    async def support_answer(request: Request, conversation_id: str | None, after: int,
                             error: str | None) -> Response:
        if request.headers.get("hx-request"):
            view = await in_thread(support_view, conversation_id, after)
            response: Response = fragment(request, "_support_update.html", {**view, "error": error})
        else:
            # A plain form post (no JavaScript): show the whole page again.
            response = RedirectResponse("/support", status_code=303)
        data = visitor(request)
        if conversation_id and data.get("support") != conversation_id:
            set_visitor(request, response, {**data, "support": conversation_id})
        return response

    @app.post("/ui/support/chat", response_class=HTMLResponse, include_in_schema=False)
    async def support_chat(request: Request) -> Response:
        if not same_origin(request):
            return forbidden()
        text = await form_text(request, "message")
        after = await after_of(request)
        conversation_id = await in_thread(support_conversation, request)
        error = None
        if not text:
            error = "Please type a message first."
        else:
            try:
                result = await in_thread(
                    lambda: services.support.turn(text, conversation_id=conversation_id, tenant=services.tenant)
                )
                conversation_id = result.conversation_id
            except ConversationConflict:
                error = "Your message crossed with another reply. Please send it again."
            except Exception as exc:  # noqa: BLE001
                error = oops(exc, "support chat")
        return await support_answer(request, conversation_id, after, error)

    @app.post("/ui/support/handoff", response_class=HTMLResponse, include_in_schema=False)
    async def support_handoff(request: Request) -> Response:
        if not same_origin(request):
            return forbidden()
        after = await after_of(request)
        conversation_id = await in_thread(support_conversation, request)
        error = None
        try:
            if conversation_id is None:
                session = services.support
                conversation_id = await in_thread(
                    session.start, services.support_domain, services.support_mode, services.tenant
                )
            await in_thread(
                lambda: handoffs.request_handoff(
                    conversation_id, "The customer pressed 'Talk to a person'.", services.tenant,
                    db_url=services.db_url,
                )
            )
        except Exception as exc:  # noqa: BLE001
            error = oops(exc, "support handoff")
        return await support_answer(request, conversation_id, after, error)

    @app.get("/ui/support/updates", response_class=HTMLResponse, include_in_schema=False)
    async def support_updates(request: Request) -> Response:
        conversation_id = await in_thread(support_conversation, request)
        view = await in_thread(support_view, conversation_id, await after_of(request))
        if not view["messages"]:
            return Response(status_code=204)  # htmx swaps nothing on 204
        return fragment(request, "_support_update.html", {**view, "error": None})

    @app.post("/ui/support/reset", include_in_schema=False)
    async def support_reset(request: Request) -> Response:
        if not same_origin(request):
            return forbidden()
        response = RedirectResponse("/support", status_code=303)
        set_visitor(request, response, {k: v for k, v in visitor(request).items() if k != "support"})
        return response

    # ---- operator console ------------------------------------------------------------------------

    def to_login() -> Response:
        return RedirectResponse("/console/login", status_code=303)

    def htmx_login(request: Request) -> Response:
        # An htmx call from an expired session: send the whole page to the login form.
        if request.headers.get("hx-request"):
            return Response(status_code=200, headers={"HX-Redirect": "/console/login"})
        return to_login()

    @app.get("/console/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_page(request: Request) -> Response:
        if await in_thread(operator, request):
            return RedirectResponse("/console", status_code=303)
        return page(request, "login.html", {"error": None, "active": "console"})

    @app.post("/console/login", response_class=HTMLResponse, include_in_schema=False)
    async def login(request: Request) -> Response:
        if not same_origin(request):
            return forbidden()
        key = await form_text(request, "api_key", 300)
        principal = await in_thread(lambda: tenancy.authenticate(key, db_url=services.db_url)) if key else None
        if principal is None:
            return page(request, "login.html", {"error": "That key is not valid (unknown or revoked).",
                                                "active": "console"}, status_code=401)
        if principal.scope != "operator":
            return page(request, "login.html", {"error": "That is an API key; the console needs an operator key.",
                                                "active": "console"}, status_code=403)
        response = RedirectResponse("/console", status_code=303)
        value = security.sign({"key_id": principal.key_id, "tenant": principal.tenant, "prefix": key[:11]},
                              secret, "operator", services.operator_session_s)
        response.set_cookie(OPERATOR_COOKIE, value, max_age=services.operator_session_s, httponly=True,
                            samesite="strict", secure=secure(request), path="/")
        return response

    @app.post("/console/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        if not same_origin(request):
            return forbidden()
        response = to_login()
        response.delete_cookie(OPERATOR_COOKIE, path="/", httponly=True, samesite="strict", secure=secure(request))
        return response

    def reports() -> list[dict[str, Any]]:
        folder = services.reports_folder()
        if not folder.is_dir():
            return []
        files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in REPORT_SUFFIXES]
        files.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        return [
            {"path": p.relative_to(folder).as_posix(), "kind": p.suffix.lower().lstrip("."),
             "size": p.stat().st_size, "modified": datetime.fromtimestamp(p.stat().st_mtime, UTC)}
            for p in files[:MAX_REPORTS]
        ]

    def models() -> list[Any]:
        try:
            return list(services.hub.models())
        except Exception as exc:  # noqa: BLE001
            oops(exc, "console models")
            return []

    @app.get("/console", response_class=HTMLResponse, include_in_schema=False)
    async def console(request: Request) -> Response:
        who = await in_thread(operator, request)
        if who is None:
            return to_login()
        context = {
            "who": who, "active": "console", "models": models(),
            "usage": await in_thread(lambda: tenancy.usage_summary(db_url=services.db_url)),
            "reports": await in_thread(reports),
            "queue": await in_thread(lambda: handoffs.handoff_queue(db_url=services.db_url)),
            "conversations": await in_thread(lambda: convs.list_conversations(db_url=services.db_url)),
            "external_writes": await in_thread(external_writes),
        }
        return page(request, "console.html", context)

    def external_writes() -> list[dict[str, Any]]:
        return audit.list_writes(limit=50, db_url=services.db_url)

    @app.get("/console/fragments/external-writes", response_class=HTMLResponse, include_in_schema=False)
    async def external_writes_fragment(request: Request) -> Response:
        if await in_thread(operator, request) is None:
            return htmx_login(request)
        rows = await in_thread(external_writes)
        return fragment(request, "_external_writes.html", {"external_writes": rows})

    @app.get("/console/fragments/queue", response_class=HTMLResponse, include_in_schema=False)
    async def queue_fragment(request: Request) -> Response:
        if await in_thread(operator, request) is None:
            return htmx_login(request)
        queue = await in_thread(lambda: handoffs.handoff_queue(db_url=services.db_url))
        return fragment(request, "_queue.html", {"queue": queue})

    @app.get("/console/fragments/conversations", response_class=HTMLResponse, include_in_schema=False)
    async def conversations_fragment(request: Request) -> Response:
        if await in_thread(operator, request) is None:
            return htmx_login(request)
        rows = await in_thread(lambda: convs.list_conversations(db_url=services.db_url))
        return fragment(request, "_conversations.html", {"conversations": rows})

    def transcript_context(conversation_id: str, notice: str | None = None) -> dict[str, Any]:
        conv = convs.conversation(conversation_id, db_url=services.db_url)
        rows = convs.messages(conversation_id, db_url=services.db_url)
        return {"conv": conv, "messages": rows, "notice": notice}

    def no_such_conversation() -> HTMLResponse:
        return HTMLResponse("<p role='alert'>No such conversation.</p>", status_code=404, headers=SECURITY_HEADERS)

    def impossible_id(conversation_id: str) -> bool:
        # No conversation id holds NUL, and PostgreSQL refuses it in a query (a 500 before this check).
        return "\x00" in conversation_id

    async def transcript_response(request: Request, conversation_id: str, name: str,
                                  notice: str | None = None) -> Response:
        if impossible_id(conversation_id):
            return no_such_conversation()
        try:
            context = await in_thread(transcript_context, conversation_id, notice)
        except convs.ConversationNotFound:
            return no_such_conversation()
        return fragment(request, name, context)

    @app.get("/console/conversations/{conversation_id}", response_class=HTMLResponse, include_in_schema=False)
    async def conversation_pane(request: Request, conversation_id: str) -> Response:
        if await in_thread(operator, request) is None:
            return htmx_login(request)
        return await transcript_response(request, conversation_id, "_transcript.html")

    @app.get("/console/conversations/{conversation_id}/messages", response_class=HTMLResponse,
             include_in_schema=False)
    async def conversation_messages(request: Request, conversation_id: str) -> Response:
        if await in_thread(operator, request) is None:
            return htmx_login(request)
        return await transcript_response(request, conversation_id, "_messages.html")

    async def operator_action(request: Request, conversation_id: str, action: str) -> Response:
        if not same_origin(request):
            return forbidden()
        who = await in_thread(operator, request)
        if who is None:
            return htmx_login(request)
        if impossible_id(conversation_id):
            return no_such_conversation()
        label = f"{who.get('prefix', 'operator')} ({who.get('tenant')})"
        notice = None
        try:
            if action == "take-over":
                await in_thread(lambda: handoffs.take_over(conversation_id, label, db_url=services.db_url))
            elif action == "hand-back":
                await in_thread(lambda: handoffs.hand_back(conversation_id, label, db_url=services.db_url))
            else:
                text = await form_text(request, "message")
                await in_thread(lambda: handoffs.staff_reply(conversation_id, text, label, db_url=services.db_url))
        except convs.ConversationNotFound:
            notice = "Only support conversations can be handed over."
        except ValueError as exc:
            notice = str(exc).capitalize() + "."
        if not request.headers.get("hx-request"):
            return RedirectResponse("/console", status_code=303)
        return await transcript_response(request, conversation_id, "_transcript.html", notice)

    @app.post("/console/conversations/{conversation_id}/take-over", response_class=HTMLResponse,
              include_in_schema=False)
    async def take_over(request: Request, conversation_id: str) -> Response:
        return await operator_action(request, conversation_id, "take-over")

    @app.post("/console/conversations/{conversation_id}/reply", response_class=HTMLResponse,
              include_in_schema=False)
    async def staff_reply(request: Request, conversation_id: str) -> Response:
        return await operator_action(request, conversation_id, "reply")

    @app.post("/console/conversations/{conversation_id}/hand-back", response_class=HTMLResponse,
              include_in_schema=False)
    async def hand_back(request: Request, conversation_id: str) -> Response:
        return await operator_action(request, conversation_id, "hand-back")

    @app.get("/console/reports/{path:path}", include_in_schema=False)
    async def report_file(request: Request, path: str) -> Response:
        if await in_thread(operator, request) is None:
            return to_login()
        folder = services.reports_folder().resolve()
        try:
            target = (folder / path).resolve()
            # resolve() follows links and "..": anything that ends up outside the folder is refused.
            found = target.is_relative_to(folder) and target.is_file() and target.suffix.lower() in REPORT_SUFFIXES
        except (OSError, ValueError):  # a name too long for the file system, a NUL in it: a 500 before
            found = False
        if not found:
            return HTMLResponse("No such report.", status_code=404, headers=SECURITY_HEADERS)
        media = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix.lower() in (".md", ".csv", ".txt"):
            media = "text/plain; charset=utf-8"
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
        if target.suffix.lower() in (".html", ".svg"):
            # Reports are generated files, but a sandbox keeps any script in them away from the console.
            headers["Content-Security-Policy"] = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"
        return FileResponse(target, media_type=media, headers=headers)


def _ndjson_once(event: dict[str, Any]) -> Response:
    return Response(json.dumps(event) + "\n", media_type="application/x-ndjson", headers=SECURITY_HEADERS)
