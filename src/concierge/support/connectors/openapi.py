"""Tools from an OpenAPI 3 document: each named operation becomes one support tool, called over HTTP.

The document is a local file (JSON or YAML) or a URL. An operation is found by its
``operationId``; its arguments are its path, query and header parameters plus the properties of
its JSON request body, flattened into one object (a name used twice is an error). Local ``$ref``
(``#/components/...``) are resolved.

Calls go through one ``httpx.Client`` per connector: ``base_url``, headers (``${ENV}`` expanded at
load, so a token comes from the environment, never from the domain file), a timeout, and retries
on READS only (connection refused, a timeout, 502/503/504), with a short backoff. A write sends an
``Idempotency-Key`` header and is never retried here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml

from concierge.support.connectors import (
    OFFER_PERSON,
    ServiceFailed,
    ServiceRefused,
    ServiceTimeout,
    ServiceUnavailable,
)

log = logging.getLogger(__name__)

METHODS = ("get", "put", "post", "delete", "patch")
RETRY_STATUS = (502, 503, 504)


class OpenAPIError(ValueError):
    """The document cannot serve the domain (unreadable, no such operation, clashing names)."""


def read_document(source: str, base_dir: Path | None = None, *, timeout: float = 10.0) -> dict[str, Any]:
    """An OpenAPI document from a file (relative to ``base_dir``) or an http(s) URL."""
    if source.startswith(("http://", "https://")):
        try:
            response = httpx.get(source, timeout=timeout)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise OpenAPIError(f"cannot fetch {source}: {exc}") from exc
        text = response.text
    else:
        path = Path(source).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.is_file():
            raise OpenAPIError(f"{path} not found")
        text = path.read_text(encoding="utf-8")
    try:
        doc = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise OpenAPIError(f"{source} is not JSON or YAML: {exc}") from exc
    if not isinstance(doc, dict) or not str(doc.get("openapi", "")).startswith("3"):
        raise OpenAPIError(f"{source} is not an OpenAPI 3 document (no 'openapi: 3.x' field)")
    if not isinstance(doc.get("paths"), dict):
        raise OpenAPIError(f"{source} has no paths")
    return doc


def _resolve(node: Any, doc: dict[str, Any], depth: int = 0) -> Any:
    if depth > 32:
        raise OpenAPIError("$ref nesting too deep (a cycle?)")
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            if not ref.startswith("#/"):
                raise OpenAPIError(f"only local $ref are supported, got {ref!r}")
            target: Any = doc
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    raise OpenAPIError(f"$ref {ref!r} points nowhere")
                target = target[part]
            merged = {**_resolve(target, doc, depth + 1), **{k: v for k, v in node.items() if k != "$ref"}}
            return merged
        return {key: _resolve(value, doc, depth + 1) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve(item, doc, depth + 1) for item in node]
    return node


class Operation:
    """One operation: method, path template, where each argument goes, and its arguments' schema."""

    def __init__(self, operation_id: str, method: str, path: str, spec: dict[str, Any], doc: dict[str, Any],
                 shared_params: list[Any]) -> None:
        self.id = operation_id
        self.method = method.upper()
        self.path = path
        self.description = str(spec.get("description") or spec.get("summary") or "").strip()
        self.locations: dict[str, str] = {}  # argument -> path | query | header | body
        properties: dict[str, Any] = {}
        required: list[str] = []
        params = [_resolve(p, doc) for p in [*shared_params, *(spec.get("parameters") or [])]]
        for param in params:
            where, name = param.get("in"), param.get("name")
            if where not in ("path", "query", "header") or not isinstance(name, str):
                continue  # cookie parameters are not for tools
            if where == "header" and name.lower() == "idempotency-key":
                continue  # the connector sends it on every write; not an argument for the model
            self._add(name, where)
            schema = dict(param.get("schema") or {})
            if param.get("description"):
                schema["description"] = param["description"]
            properties[name] = schema
            if param.get("required") or where == "path":
                required.append(name)
        body = _resolve(spec.get("requestBody") or {}, doc)
        content = (body.get("content") or {}).get("application/json") if isinstance(body, dict) else None
        if content:
            schema = content.get("schema") or {}
            if schema.get("type", "object") != "object" or not isinstance(schema.get("properties"), dict):
                raise OpenAPIError(f"operation {operation_id}: the JSON request body must be an object with properties")
            for name, prop in schema["properties"].items():
                self._add(name, "body")
                properties[name] = prop
            if body.get("required", False) or schema.get("required"):
                required.extend(n for n in schema.get("required") or [] if n not in required)
        self.schema: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
        if self.description:
            self.schema["description"] = self.description

    def _add(self, name: str, where: str) -> None:
        if name in self.locations:
            raise OpenAPIError(f"operation {self.id}: argument {name!r} is both a {self.locations[name]} "
                               f"and a {where} field")
        self.locations[name] = where

    def request(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The ``httpx`` request parts for these arguments."""
        path = self.path
        query: dict[str, Any] = {}
        headers: dict[str, str] = {}
        body: dict[str, Any] = {}
        for name, value in arguments.items():
            where = self.locations.get(name)
            if where == "path":
                path = path.replace("{" + name + "}", quote(str(value), safe=""))
            elif where == "query":
                query[name] = json.dumps(value) if isinstance(value, dict | list) else value
            elif where == "header":
                headers[name] = str(value)
            elif where == "body":
                body[name] = value
        parts: dict[str, Any] = {"method": self.method, "url": path, "params": query, "headers": headers}
        if any(where == "body" for where in self.locations.values()):
            parts["json"] = body
        return parts


def operations_of(doc: dict[str, Any]) -> dict[str, Operation]:
    """Every operation of the document that has an ``operationId``."""
    found: dict[str, Operation] = {}
    for path, item in (doc.get("paths") or {}).items():
        if not isinstance(item, dict):
            continue
        shared = item.get("parameters") or []
        for method in METHODS:
            spec = item.get(method)
            if not isinstance(spec, dict) or not spec.get("operationId"):
                continue
            op_id = str(spec["operationId"])
            if op_id in found:
                raise OpenAPIError(f"operationId {op_id!r} is used twice")
            found[op_id] = Operation(op_id, method, path, spec, doc, shared)
    return found


def _detail(response: httpx.Response) -> str:
    """The service's own explanation of an error (FastAPI's ``detail``, RFC 7807 ``title``/``detail``)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message") or body.get("title") or body.get("error")
        if isinstance(detail, dict):
            detail = detail.get("message") or json.dumps(detail)
        if isinstance(detail, list):  # FastAPI validation errors
            detail = "; ".join(
                f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}"
                if isinstance(item, dict) else str(item)
                for item in detail
            )
        if detail:
            return str(detail)[:300]
    return str(body)[:300]


class OpenAPIConnector:
    """A company's HTTP service described by an OpenAPI 3 document."""

    def __init__(
        self,
        name: str,
        doc: dict[str, Any],
        *,
        base_url: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        backoff: float = 0.2,
        label: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        self.label = label or f"the {name} system"
        self.ops = operations_of(doc)
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.base_url, headers=dict(headers or {}), timeout=httpx.Timeout(timeout), transport=transport
        )

    @property
    def _head(self) -> str:
        return self.label[0].upper() + self.label[1:]

    def operations(self) -> list[str]:
        return sorted(self.ops)

    def operation_schema(self, operation: str) -> dict[str, Any]:
        return self.ops[operation].schema

    def call(self, operation: str, arguments: dict[str, Any], *, write: bool, idempotency_key: str | None) -> Any:
        op = self.ops[operation]
        parts = op.request(arguments)
        if write and idempotency_key:
            parts["headers"]["Idempotency-Key"] = idempotency_key
        attempts = 1 if write else 1 + self.retries
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self.client.request(**parts)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # refused, DNS, no route: the request never left, so nothing can have changed
                if last:
                    log.warning("%s: %s %s unreachable: %s", self.name, op.method, op.path, exc)
                    raise ServiceUnavailable(
                        f"I cannot reach {self.label} right now, so nothing was changed. {OFFER_PERSON}",
                        detail=f"{type(exc).__name__}: {exc}",
                    ) from exc
            except httpx.TimeoutException as exc:  # sent, no answer in time: a write may have applied
                if last:
                    raise self._timeout(write) from exc
            except httpx.TransportError as exc:  # the connection broke after the request went out
                if last:
                    log.warning("%s: %s %s broke off: %s", self.name, op.method, op.path, exc)
                    if write:
                        raise ServiceFailed(
                            f"{self._head} stopped answering while making the change, so I cannot confirm it; "
                            f"our team has been told and will check it. {OFFER_PERSON}",
                            detail=f"{type(exc).__name__}: {exc}",
                        ) from exc
                    raise ServiceUnavailable(
                        f"I cannot reach {self.label} right now, so nothing was changed. {OFFER_PERSON}",
                        detail=f"{type(exc).__name__}: {exc}",
                    ) from exc
            else:
                if response.status_code in RETRY_STATUS and not last:
                    pass
                else:
                    return self._answer(op, response, write)
            time.sleep(self.backoff * (2**attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _timeout(self, write: bool) -> ServiceTimeout:
        if write:
            return ServiceTimeout(
                f"{self.label[0].upper() + self.label[1:]} did not answer in time, so I cannot confirm the change "
                "yet. Asking again is safe: it will not be applied twice. " + OFFER_PERSON,
                detail=f"timed out after {self.timeout:g}s",
            )
        return ServiceTimeout(
            f"{self.label[0].upper() + self.label[1:]} did not answer in time; nothing was changed. {OFFER_PERSON}",
            detail=f"timed out after {self.timeout:g}s",
        )

    def _answer(self, op: Operation, response: httpx.Response, write: bool) -> Any:
        status = response.status_code
        if status >= 500:
            detail = _detail(response)
            if write:
                log.error("%s: write %s answered HTTP %s (not retried): %s", self.name, op.id, status, detail)
                raise ServiceFailed(
                    f"{self.label[0].upper() + self.label[1:]} failed while making the change (HTTP {status}), "
                    "so I cannot confirm it; our team has been told and will check it. " + OFFER_PERSON,
                    status=status, detail=detail,
                )
            raise ServiceFailed(
                f"{self.label[0].upper() + self.label[1:]} is having a problem (HTTP {status}); nothing was "
                f"changed. {OFFER_PERSON}",
                status=status, detail=detail,
            )
        if status >= 400:
            detail = _detail(response)
            raise ServiceRefused(detail or f"{self.label} refused the request (HTTP {status})", status=status,
                                 detail=detail)
        if status == 204 or not response.content:
            return None
        if "json" in response.headers.get("content-type", ""):
            try:
                return response.json()
            except ValueError as exc:
                raise ServiceFailed(f"{self.label} sent an answer I cannot read. {OFFER_PERSON}",
                                    status=status) from exc
        return response.text

    def close(self) -> None:
        self.client.close()
