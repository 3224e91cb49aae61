"""The gateway's shared HTTP helpers: the worker pool for blocking calls and the direct route table."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient

from concierge.gateway.http import DirectRoutes, Workers, direct

_caller = contextvars.ContextVar("caller", default="nobody")


def test_workers_run_with_the_callers_context_and_a_cancelled_caller_waits_for_its_call() -> None:
    workers = Workers(2)
    release = threading.Event()
    finished: list[bool] = []

    def blocking() -> str:
        release.wait(5)
        finished.append(True)
        return _caller.get()

    async def scenario() -> None:
        _caller.set("acme")
        assert await workers.run(_caller.get) == "acme"
        task = asyncio.ensure_future(workers.run(blocking))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.1)
        assert not task.done()  # the call still runs (it may hold a model slot): the caller waits
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished  # the cancellation went on only once the call had ended

    asyncio.run(scenario())
    workers.close()


def test_a_queued_call_whose_caller_is_cancelled_never_runs() -> None:
    workers = Workers(1)
    release = threading.Event()
    ran: list[str] = []

    async def scenario() -> None:
        busy = asyncio.ensure_future(workers.run(lambda: release.wait(5)))
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(workers.run(lambda: ran.append("queued")))
        await asyncio.sleep(0.05)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        release.set()
        await busy
        assert await workers.run(lambda: "next") == "next"  # the pool goes on serving

    asyncio.run(scenario())
    assert ran == []
    workers.close()


def _app() -> FastAPI:
    """Routes that report whether FastAPI's router served them (it puts ``route`` in the scope)."""

    def seen(request: Request, name: str) -> Response:
        return JSONResponse({"by": name, "router": "route" in request.scope})

    router = APIRouter()

    @router.post("/v1/plain")
    @direct
    async def plain(request: Request) -> Response:
        return seen(request, "plain")

    @router.post("/v1/shadowed")
    async def first(request: Request) -> Response:  # registered first: the router always picks it
        return seen(request, "first")

    @router.post("/v1/shadowed")
    @direct
    async def second(request: Request) -> Response:
        return seen(request, "second")

    @router.post("/v1/items/{item}")
    @direct
    async def item(request: Request) -> Response:
        return seen(request, "item")

    @router.post("/v1/unmarked")
    async def unmarked(request: Request) -> Response:
        return seen(request, "unmarked")

    @router.post("/v1/guarded", dependencies=[Depends(lambda: None)])
    async def guarded(request: Request) -> Response:
        return seen(request, "guarded")

    app = FastAPI()
    app.include_router(router)
    app.add_middleware(DirectRoutes, routes=lambda: app.router.routes)
    return app


def test_direct_routes_serve_marked_endpoints_without_the_router_and_change_no_choice_of_route() -> None:
    with TestClient(_app()) as client:
        def post(path: str) -> dict:
            response = client.post(path, json={})
            assert response.status_code == 200, response.text
            return response.json()

        # The first request goes through the router, which names the endpoint; the next ones skip it.
        assert post("/v1/plain") == {"by": "plain", "router": True}
        assert post("/v1/plain") == {"by": "plain", "router": False}
        # A marked endpoint that the router never picks for that path is never served directly.
        assert [post("/v1/shadowed") for _ in range(3)] == [{"by": "first", "router": True}] * 3
        # Path parameters and unmarked endpoints always go through the router.
        assert [post("/v1/items/7") for _ in range(2)] == [{"by": "item", "router": True}] * 2
        assert [post("/v1/unmarked") for _ in range(2)] == [{"by": "unmarked", "router": True}] * 2
        assert [post("/v1/guarded") for _ in range(2)] == [{"by": "guarded", "router": True}] * 2
        # Another method on a direct path still gets the router's 405.
        assert client.get("/v1/plain").status_code == 405
