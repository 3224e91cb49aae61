"""Signed cookies and same-origin checks for the browser pages (no web framework imports).

Cookies carry a small JSON payload and an HMAC-SHA256 tag, so the server keeps no session table
and any replica with the same secret can read them. The secret comes from
``CONCIERGE_WEB_SECRET`` or from ``$CONCIERGE_HOME/web_secret`` (32 random bytes, created 0600 on
first use), so sessions survive a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from concierge import config

SECRET_ENV = "CONCIERGE_WEB_SECRET"


def load_secret(home: Path | None = None) -> bytes:
    """The cookie-signing secret: the environment's, else the one kept under the state folder."""
    value = os.environ.get(SECRET_ENV)
    if value:
        return value.encode("utf-8")
    path = (home or config.home()) / "web_secret"
    if path.is_file():
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    data = secrets.token_bytes(32)
    # O_EXCL: two processes starting together must not each write a different secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return data


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _tag(secret: bytes, purpose: str, body: str) -> str:
    # The purpose is part of the MAC so a shopper cookie can never pass as an operator cookie.
    return _b64(hmac.new(secret, f"{purpose}|{body}".encode(), hashlib.sha256).digest())


def sign(payload: Mapping[str, Any], secret: bytes, purpose: str, max_age_s: int) -> str:
    """``payload`` as a cookie value that expires after ``max_age_s``."""
    body = _b64(json.dumps({**payload, "exp": int(time.time()) + max_age_s}, separators=(",", ":")).encode())
    return f"{body}.{_tag(secret, purpose, body)}"


def unsign(value: str | None, secret: bytes, purpose: str) -> dict[str, Any] | None:
    """The payload of a cookie value made by :func:`sign`, or None if forged, garbled or expired."""
    if not value or value.count(".") != 1 or len(value) > 4096:
        return None
    body, tag = value.split(".")
    if not hmac.compare_digest(tag, _tag(secret, purpose, body)):
        return None
    try:
        payload = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or int(payload.get("exp", 0)) < time.time():
        return None
    payload.pop("exp", None)
    return payload


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(
    headers: Mapping[str, str], scheme: str, extra_origins: Collection[str] = ()
) -> bool:
    """Whether a state-changing request comes from this site's own pages.

    Browsers send ``Origin`` on every POST from a page (Referer is the fallback for old ones); it
    must match the Host the request was sent to, or one of ``extra_origins`` (a proxy's public
    address). A request with neither header is refused: pages always send one.
    """
    host = headers.get("host")
    allowed = {o.rstrip("/").lower() for o in extra_origins}
    if host:
        allowed.add(f"{scheme}://{host}".lower())
    origin = headers.get("origin")
    if origin and origin != "null":
        return origin.rstrip("/").lower() in allowed
    referer = headers.get("referer")
    if referer:
        return _origin_of(referer) in allowed
    return False
