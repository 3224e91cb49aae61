"""The home-stay booking service over HTTP: a small FastAPI app with its own OpenAPI document.

    python -m concierge.demo_services.homestay_api --port 8765            # serve
    python -m concierge.demo_services.homestay_api --write-openapi FILE   # the document, for a domain folder

Every write honours an ``Idempotency-Key`` header (:mod:`.backend`): the same key and request get the
first answer again, with ``Idempotent-Replayed: true``. ``--token`` (or ``HOMESTAY_API_TOKEN``) makes it require ``Authorization: Bearer <token>``. ``--faults`` adds ``/_admin/*`` routes (not in
the document) that make the service slow or fail its writes, for tests and demos of failure handling.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, create_model

from concierge.demo_services.backend import Backend, Faults, KeyReused, status_of
from concierge.support.toolkit import ToolError

# tool -> (method, path, operationId): the service's API, as a company would design it
ROUTES: dict[str, tuple[str, str]] = {
    "find_guest_by_email": ("GET", "/guests/by-email"),
    "get_guest_details": ("GET", "/guests/{guest_id}"),
    "list_guest_reservations": ("GET", "/guests/{guest_id}/reservations"),
    "get_reservation_details": ("GET", "/reservations/{reservation_id}"),
    "quote_cancellation": ("GET", "/reservations/{reservation_id}/cancellation-quote"),
    "get_listing_details": ("GET", "/listings/{listing_id}"),
    "search_listings": ("GET", "/listings"),
    "cancel_reservation": ("POST", "/reservations/{reservation_id}/cancel"),
    "modify_reservation_dates": ("POST", "/reservations/{reservation_id}/dates"),
    "issue_service_refund": ("POST", "/reservations/{reservation_id}/service-refunds"),
}


def create_app(backend: Backend | None = None, *, faults: bool = False, token: str | None = None) -> FastAPI:
    backend = backend or Backend()
    app = FastAPI(
        title="Homestay booking service",
        version="1.0.0",
        description="Guests, listings and reservations of Homestay. Writes accept an Idempotency-Key header.",
    )
    app.state.backend = backend
    for tool, (method, path) in ROUTES.items():
        _add_route(app, backend, tool, method, path)
    if faults:
        _add_admin(app, backend)
    if token:

        @app.middleware("http")
        async def bearer(request: Request, call_next: Any) -> Any:
            open_path = request.url.path.startswith("/_admin/") or request.url.path in ("/openapi.json", "/docs")
            if not open_path and request.headers.get("authorization") != f"Bearer {token}":
                return JSONResponse({"detail": "The booking service did not accept concierge's credentials."},
                                    status_code=401)
            return await call_next(request)

    return app


def _add_route(app: FastAPI, backend: Backend, tool: str, method: str, path: str) -> None:
    spec = backend.specs[tool]
    write = backend.is_write(tool)
    in_path = [p for p in spec.params if "{" + p.name + "}" in path]
    rest = [p for p in spec.params if p not in in_path]
    params: list[inspect.Parameter] = []
    for p in in_path:
        params.append(inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, annotation=p.annotation,
                                        default=PathParam(description=p.description or None)))
    body_model: type[BaseModel] | None = None
    if write:
        fields: dict[str, Any] = {
            p.name: (p.annotation, ... if p.required else p.default) for p in rest
        }
        body_model = create_model(f"{''.join(w.title() for w in tool.split('_'))}Request", **fields)
        params.append(inspect.Parameter("body", inspect.Parameter.KEYWORD_ONLY, annotation=body_model,
                                        default=Body()))
        params.append(inspect.Parameter(
            "idempotency_key", inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
            default=Header(None, alias="Idempotency-Key",
                           description="A key the client derives per write: the same key and request are applied once."),
        ))
    else:
        for p in rest:
            params.append(inspect.Parameter(
                p.name, inspect.Parameter.KEYWORD_ONLY, annotation=p.annotation,
                default=Query(... if p.required else p.default, description=p.description or None),
            ))

    def endpoint(**kwargs: Any) -> Any:
        key = kwargs.pop("idempotency_key", None)
        body = kwargs.pop("body", None)
        arguments = {**kwargs, **(body.model_dump(exclude_unset=True) if body is not None else {})}
        if write:
            with backend.lock:
                backend.attempts += 1
        if write and backend.faults.fail_writes and backend.faults.applies(tool):
            backend.late()
            raise HTTPException(backend.faults.fail_writes, detail="the booking database is unavailable")
        try:
            result, replayed = backend.run(tool, arguments, key)
        except KeyReused as exc:
            raise HTTPException(422, detail=str(exc)) from None
        except ToolError as exc:
            raise HTTPException(status_of(exc), detail=exc.message) from None
        finally:
            if backend.faults.applies(tool):
                backend.late()
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return JSONResponse(result, headers=headers)

    endpoint.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    endpoint.__name__ = tool
    app.add_api_route(
        path, endpoint, methods=[method], operation_id=tool, summary=spec.description.split("\n")[0],
        description=spec.description, response_model=None,
        responses={404: {"description": "No such record"}, 409: {"description": "Refused by the booking rules"}},
    )


def _add_admin(app: FastAPI, backend: Backend) -> None:
    @app.post("/_admin/faults", include_in_schema=False)
    def set_faults(body: dict[str, Any]) -> dict[str, Any]:
        backend.faults = Faults(
            latency_s=float(body.get("latency_s", 0)), fail_writes=int(body.get("fail_writes", 0)),
            tools=list(body.get("tools") or []),
        )
        return {"ok": True}

    @app.post("/_admin/reset", include_in_schema=False)
    def reset() -> dict[str, Any]:
        backend.faults = Faults()
        backend.reset()
        return {"ok": True}

    @app.get("/_admin/stats", include_in_schema=False)
    def stats() -> dict[str, Any]:
        return backend.stats()


def openapi_document() -> dict[str, Any]:
    return create_app().openapi()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The home-stay booking service (demo) over HTTP.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--faults", action="store_true", help="add the /_admin routes that inject failures")
    parser.add_argument("--token", default=os.environ.get("HOMESTAY_API_TOKEN"),
                        help="require 'Authorization: Bearer TOKEN' (default: $HOMESTAY_API_TOKEN)")
    parser.add_argument("--write-openapi", type=Path, metavar="FILE", help="write the OpenAPI document and exit")
    args = parser.parse_args(argv)
    if args.write_openapi:
        args.write_openapi.write_text(json.dumps(openapi_document(), indent=1) + "\n", encoding="utf-8")
        return 0
    import uvicorn

    uvicorn.run(create_app(faults=args.faults, token=args.token), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
