"""What the web app runs on: the shop and support sessions plus the pages' own settings (no web framework imports)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from concierge import config
from concierge.models.engine import ServingHub
from concierge.shop.session import ShopSession
from concierge.support.session import SupportSession


@dataclass
class WebServices:
    """Everything :func:`concierge.web.routes.mount_web` needs.

    The public pages serve ``tenant``'s shop (the ``shop`` session's default catalogue) and support
    desk (the ``support`` session's default domain and mode).
    """

    hub: ServingHub
    shop: ShopSession
    support: SupportSession
    tenant: str = "demo"
    db_url: str | None = None
    reports_dir: Path | None = None  # default: CONCIERGE_HOME/reports
    secret: bytes | None = None  # cookie-signing key; default: security.load_secret()
    extra_origins: tuple[str, ...] = ()  # public origins when a proxy rewrites Host
    cookie_secure: bool | None = None  # None: Secure cookies when the request came over https
    operator_session_s: int = 8 * 3600
    visitor_session_s: int = 30 * 24 * 3600
    warmers: list[threading.Thread] = field(default_factory=list)

    @property
    def catalog(self) -> str:
        return self.shop.catalog

    @property
    def support_domain(self) -> str:
        return self.support.domain_for(self.tenant)

    @property
    def support_mode(self) -> str:
        return self.support.default_mode

    def reports_folder(self) -> Path:
        return self.reports_dir or (config.home() / "reports")
