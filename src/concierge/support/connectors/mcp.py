"""Tools of an MCP server (the ``mcp`` SDK), over stdio (a command concierge starts) or streamable HTTP.

The connection is opened once, on first use, by a background thread running its own event loop,
and kept: a turn's tool calls are requests on it, not a process start each. A call that finds the
connection broken reconnects once (reads only: a write that may have reached the server is not
sent again). The tools' input schemas come from the server's ``tools/list``. A write carries its
idempotency key in the request's ``_meta`` (``idempotency_key``), the MCP place for data about
a request that is not an argument of the tool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from concierge.support.connectors import (
    OFFER_PERSON,
    ServiceFailed,
    ServiceRefused,
    ServiceTimeout,
    ServiceUnavailable,
)

log = logging.getLogger(__name__)

META_KEY = "idempotency_key"


class MCPConnector:
    """One MCP server: ``command`` (stdio) or ``url`` (streamable HTTP)."""

    def __init__(
        self,
        name: str,
        *,
        command: Sequence[str] | None = None,
        url: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 20.0,
        label: str | None = None,
    ) -> None:
        if (command is None) == (url is None):
            raise ValueError("an MCP connector needs exactly one of command (stdio) or url (streamable HTTP)")
        self.name = name
        self.label = label or f"the {name} system"
        self.command = list(command) if command else None
        self.url = url
        self.env = dict(env or {})
        self.cwd = cwd
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._tools: dict[str, dict[str, Any]] | None = None

    # -- the event loop thread

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name=f"mcp-{self.name}", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop

    def _run(self, coro: Any, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise

    def _server(self) -> Any:
        if self.url is not None:
            if not self.headers:
                return self.url
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            return streamable_http_client(self.url, http_client=httpx2.AsyncClient(headers=self.headers))
        from mcp.client.stdio import StdioServerParameters, get_default_environment

        assert self.command is not None
        command = sys.executable if self.command[0] == "python" else self.command[0]
        # The SDK's safe default environment (no secrets), plus where Python finds packages, plus the
        # connector's own env: settings.
        inherited = {k: os.environ[k] for k in ("PYTHONPATH", "VIRTUAL_ENV") if k in os.environ}
        if "PYTHONPATH" in inherited:  # the server runs in the domain folder: relative entries would move
            inherited["PYTHONPATH"] = os.pathsep.join(
                os.path.abspath(p) for p in inherited["PYTHONPATH"].split(os.pathsep) if p
            )
        return StdioServerParameters(
            command=command, args=self.command[1:], env={**get_default_environment(), **inherited, **self.env},
            cwd=self.cwd,
        )

    async def _connect(self) -> None:
        from mcp import Client

        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(Client(self._server(), read_timeout_seconds=self.timeout))
            listed = await client.list_tools()
        except BaseException:
            await stack.aclose()
            raise
        self._client, self._stack = client, stack
        self._tools = {
            tool.name: {"schema": dict(tool.input_schema or {"type": "object", "properties": {}}),
                        "description": tool.description or ""}
            for tool in listed.tools
        }

    async def _disconnect(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            try:
                await stack.aclose()
            except BaseException as exc:  # noqa: BLE001 - a broken connection may fail to close cleanly
                log.debug("%s: closing the MCP connection: %s", self.name, exc)

    def _connected(self) -> None:
        """Connect (call with ``_lock`` held); ServiceUnavailable when the server cannot be reached."""
        if self._client is not None:
            return
        try:
            self._run(self._connect(), self.connect_timeout)
        except Exception as exc:  # noqa: BLE001 - any failure to start or reach the server
            leaf = _leaf(exc)
            log.warning("%s: cannot connect to the MCP server: %s: %s", self.name, type(leaf).__name__, leaf)
            raise ServiceUnavailable(
                f"I cannot reach {self.label} right now, so nothing was changed. {OFFER_PERSON}",
                detail=f"cannot connect to the MCP server: {type(leaf).__name__}: {leaf}",
            ) from exc

    # -- the connector protocol

    def tools(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            self._connected()
            assert self._tools is not None
            return self._tools

    def operations(self) -> list[str]:
        return sorted(self.tools())

    def operation_schema(self, operation: str) -> dict[str, Any]:
        tool = self.tools()[operation]
        schema = dict(tool["schema"])
        if tool["description"] and "description" not in schema:
            schema["description"] = tool["description"]
        return schema

    def call(self, operation: str, arguments: dict[str, Any], *, write: bool, idempotency_key: str | None) -> Any:
        meta = {META_KEY: idempotency_key} if write and idempotency_key else None
        attempts = 1 if write else 2
        with self._lock:
            for attempt in range(attempts):
                self._connected()
                try:
                    result = self._run(self._call(operation, arguments, meta), self.timeout + 1)
                except (concurrent.futures.TimeoutError, TimeoutError) as exc:
                    self._drop()
                    if attempt == attempts - 1:
                        raise self._timeout(write) from exc
                    continue
                except Exception as exc:  # noqa: BLE001 - the connection broke, or the server crashed
                    self._drop()
                    if _is_timeout(exc):
                        if attempt == attempts - 1:
                            raise self._timeout(write) from exc
                        continue
                    if attempt == attempts - 1:
                        exc = _leaf(exc)
                        log.warning("%s: MCP call %s failed: %s", self.name, operation, exc)
                        if write:
                            raise ServiceFailed(
                                f"{self.label[0].upper() + self.label[1:]} failed while making the change, so I "
                                "cannot confirm it; our team has been told and will check it. " + OFFER_PERSON,
                                detail=f"{type(exc).__name__}: {exc}",
                            ) from exc
                        raise ServiceUnavailable(
                            f"I cannot reach {self.label} right now, so nothing was changed. {OFFER_PERSON}",
                            detail=f"{type(exc).__name__}: {exc}",
                        ) from exc
                    continue
                return self._answer(result)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(self, operation: str, arguments: dict[str, Any], meta: dict[str, Any] | None) -> Any:
        assert self._client is not None
        return await self._client.call_tool(operation, arguments, read_timeout_seconds=self.timeout, meta=meta)

    def _drop(self) -> None:
        try:
            self._run(self._disconnect(), 5)
        except Exception:  # noqa: BLE001
            self._client, self._stack = None, None

    def _timeout(self, write: bool) -> ServiceTimeout:
        head = self.label[0].upper() + self.label[1:]
        if write:
            return ServiceTimeout(
                f"{head} did not answer in time, so I cannot confirm the change yet. Asking again is safe: it "
                f"will not be applied twice. {OFFER_PERSON}",
                detail=f"timed out after {self.timeout:g}s",
            )
        return ServiceTimeout(f"{head} did not answer in time; nothing was changed. {OFFER_PERSON}",
                              detail=f"timed out after {self.timeout:g}s")

    @staticmethod
    def _answer(result: Any) -> Any:
        texts = [getattr(block, "text", "") for block in (result.content or []) if getattr(block, "text", None)]
        text = "\n".join(texts).strip()
        if result.is_error:
            # MCPServer prefixes a tool's own message with "Error executing tool <name>: "
            text = re.sub(r"^Error executing tool [\w.-]+: ", "", text)
            raise ServiceRefused(text or "the tool refused the request")
        structured = result.structured_content
        if structured is not None:
            # A tool returning a non-object is wrapped by the SDK as {"result": value}.
            if isinstance(structured, dict) and set(structured) == {"result"}:
                return structured["result"]
            return structured
        try:
            return json.loads(text)
        except ValueError:
            return text

    def close(self) -> None:
        with self._lock:
            if self._loop is None:
                return
            try:
                self._run(self._disconnect(), 10)
            except Exception:  # noqa: BLE001
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            self._loop, self._thread = None, None


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, which anyio task groups raise."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _is_timeout(exc: BaseException) -> bool:
    from mcp.shared.exceptions import MCPError

    if isinstance(exc, MCPError):
        code = getattr(getattr(exc, "error", None), "code", None)
        text = str(exc).lower()
        return code == 408 or "timed out" in text or "timeout" in text
    return False
