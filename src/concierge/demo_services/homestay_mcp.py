"""The home-stay booking system as an MCP server (the ``mcp`` SDK's MCPServer).

    python -m concierge.demo_services.homestay_mcp                      # stdio (a client starts it)
    python -m concierge.demo_services.homestay_mcp --http --port 8766   # streamable HTTP at /mcp

Its tools are the booking system's operations, with the same arguments as the HTTP service's. A write
honours an idempotency key sent in the request's ``_meta`` (``idempotency_key``): the same key and
request are applied once (:mod:`.backend`). ``HOMESTAY_MCP_LATENCY`` (seconds) makes every answer
late, for tests of timeouts.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError as MCPToolError
from pydantic import Field

from concierge.demo_services.backend import SERVICE_TOOLS, Backend, KeyReused
from concierge.support.toolkit import ToolError

META_KEY = "idempotency_key"


def create_server(backend: Backend | None = None) -> MCPServer:
    backend = backend or Backend()
    latency = float(os.environ.get("HOMESTAY_MCP_LATENCY", "0") or 0)
    backend.faults.latency_s = latency
    server = MCPServer("homestay-bookings", instructions="Homestay's booking system: guests, listings, reservations.",
                       log_level="WARNING")
    for fn in SERVICE_TOOLS:
        spec = backend.specs[fn.__name__]
        server.add_tool(_tool(backend, spec.name), name=spec.name, description=spec.description,
                        structured_output=False)
    return server


def _tool(backend: Backend, name: str) -> Any:
    spec = backend.specs[name]

    def call(ctx: Context, **kwargs: Any) -> str:
        meta = ctx.request_context.meta or {}
        key = meta.get(META_KEY) if isinstance(meta, dict) else None
        try:
            result, _ = backend.run(name, {k: v for k, v in kwargs.items() if v is not None or k in kwargs}, key)
        except (ToolError, KeyReused) as exc:
            raise MCPToolError(str(exc)) from None
        finally:
            backend.late()
        import json

        return json.dumps(result, ensure_ascii=False)

    params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    annotations: dict[str, Any] = {"ctx": Context, "return": str}
    for p in spec.params:
        # the argument's description from the tool's docstring reaches the client's model in the schema
        hint = Annotated[p.annotation, Field(description=p.description)] if p.description else p.annotation
        params.append(inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, annotation=hint,
                                        default=inspect.Parameter.empty if p.required else p.default))
        annotations[p.name] = hint
    call.__signature__ = inspect.Signature(params, return_annotation=str)  # type: ignore[attr-defined]
    call.__annotations__ = annotations
    call.__name__ = name
    call.__doc__ = spec.description
    return call


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The home-stay booking system (demo) as an MCP server.")
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args(argv)
    server = create_server()
    if args.http:
        server.run("streamable-http", host=args.host, port=args.port)
    else:
        server.run("stdio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
