"""Small HTTP helpers the gateway tests share: a POST with a key, and the OpenAI error-shape check."""

from __future__ import annotations

from typing import Any

import httpx

from helpers.server import LiveServer


def post(live: LiveServer, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
    headers = kwargs.pop("headers", {})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(live.url + path, headers=headers, timeout=20, **kwargs)


def assert_error(response: httpx.Response, status: int, param: str | None = "__any__") -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param != "__any__":
        assert error["param"] == param
    return error
