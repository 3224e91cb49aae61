"""Assembles the concierge app: the gateway's model routers, the shop and support routers, and the
web app when asked. ``concierge serve`` (``commands/gateway.py``) and ``concierge demo`` both use it.

The entry-point layer (beside ``cli.py``): the only module that knows both the gateway and the web
app. The shop and support APIs (``/v1/shop/*``, ``/v1/support/*``) serve every tenant's catalogues
and support domains, with or without the web UI.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from fastapi import FastAPI

from concierge.gateway.app import create_app
from concierge.gateway.settings import GatewaySettings
from concierge.gateway.shop.routes import shop_router
from concierge.gateway.support.routes import support_router
from concierge.models.engine import ServingHub
from concierge.shop.session import AssistantFactory, ShopSession, role_alias
from concierge.store.db import session_scope
from concierge.support.session import SupportSession
from concierge.web.context import WebServices

log = logging.getLogger(__name__)

__all__ = [
    "WebServices", "build_app", "build_demo_services", "build_services", "close_services", "ensure_demo_store",
    "mount_all", "serve_workers", "worker_app",
]

WORKER_OPTIONS_ENV = "CONCIERGE_WORKER_OPTIONS"  # what ``serve --workers`` hands each worker process


def ensure_demo_store(
    tenant: str = "demo", catalog: str = "demo", *, n_products: int = 3000, n_shoppers: int = 500, seed: int = 7,
    db_url: str | None = None, progress: Callable[[str, int, int], None] | None = None,
) -> bool:
    """Generate and ingest the demo store unless ``tenant/catalog`` exists; True when it was written.

    ``progress(phase, done, total)`` hears of ``generating`` and ``writing`` (each 0/1 then 1/1)."""
    from concierge.shop.catalog import CatalogError, ingest_catalog, ingest_interactions, list_catalogs
    from concierge.shop.demo_store import generate_demo_store

    with session_scope(db_url) as db:
        if any(c.name == catalog for c in list_catalogs(db, tenant)):
            return False
    step = progress or (lambda phase, done, total: None)
    step("generating", 0, 1)
    products, events = generate_demo_store(seed=seed, n_products=n_products, n_shoppers=n_shoppers)
    step("generating", 1, 1)
    step("writing", 0, 1)
    label = f"demo(seed={seed}, products={n_products}, shoppers={n_shoppers})"
    with session_scope(db_url) as db:
        report = ingest_catalog(db, tenant, catalog, products, source_label=label)
        if not report.ok:
            raise CatalogError(f"demo store rejected: {report.summary()}")
        if events:
            events_report = ingest_interactions(db, tenant, catalog, events, source_label=label)
            if not events_report.ok:
                raise CatalogError(f"demo interactions rejected: {events_report.summary()}")
    step("writing", 1, 1)
    return True


def build_services(
    hub: ServingHub,
    *,
    tenant: str = "demo",
    catalog: str = "demo",
    support_domain: str = "homestay",
    support_mode: str = "guided",
    use_model: bool = True,
    db_url: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> WebServices:
    """The shop and support sessions over ``hub`` (every tenant's catalogues and domains).

    ``tenant``, ``catalog``, ``support_domain`` and ``support_mode`` are the defaults: what the web
    pages serve, and what an API request that names no catalogue or domain gets.
    """
    from concierge.support.domains.external import configure_from_deployment

    shop = ShopSession(AssistantFactory(hub, progress=progress), catalog=catalog, db_url=db_url)
    # The deployment config's support: section: domain folders (a company's own systems) and which
    # domain each tenant's support desk opens on.
    configured = configure_from_deployment(getattr(hub, "deployment", None))
    support = SupportSession(
        hub, alias=role_alias(hub, "support", "support-agent"), default_mode=support_mode,
        default_domain=configured.default_domain or support_domain, use_model=use_model, db_url=db_url,
        tenant_domains=configured.tenants,
    )
    return WebServices(hub=hub, shop=shop, support=support, tenant=tenant, db_url=db_url)


def build_demo_services(
    hub: ServingHub,
    *,
    tenant: str = "demo",
    catalog: str = "demo",
    n_products: int = 3000,
    n_shoppers: int = 500,
    support_mode: str = "guided",
    use_model: bool = True,
    warm: bool = True,
    db_url: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> WebServices:
    """Services on the demo store and the homestay support desk (what ``concierge serve`` shows).

    The demo store is generated and ingested on first start only. With ``warm`` the shop assistant
    (catalogue, search index: built once with the hub's embedding model, then reused from disk) is
    prepared in a background thread so the first shopper does not wait for it; on a first start
    only a spread of the catalogue is embedded before it serves, the rest in the background
    (``AssistantFactory``). ``progress(phase, done, total)``: ``generating``, ``writing``,
    ``embedding`` (the first index) and ``completing`` (the rest), for a progress bar.
    """
    from concierge import tenancy

    tenancy.create_tenant(tenant, db_url=db_url)
    ensure_demo_store(tenant, catalog, n_products=n_products, n_shoppers=n_shoppers, db_url=db_url,
                      progress=progress)
    services = build_services(hub, tenant=tenant, catalog=catalog, support_mode=support_mode, use_model=use_model,
                              db_url=db_url, progress=progress)
    if warm:

        def prepare() -> None:
            try:
                services.shop.assistant(tenant, catalog)
                services.support.domain(services.support_domain)
            except Exception:  # noqa: BLE001  (the first request will report the error to its caller)
                log.exception("preparing the demo shop and support failed")

        thread = threading.Thread(target=prepare, name="concierge-web-warm", daemon=True)
        thread.start()
        services.warmers.append(thread)
    return services


def mount_all(app: FastAPI, services: WebServices, *, web: bool = True) -> None:
    """The shop and support JSON API (``/v1/shop/*``, ``/v1/support/chat``), plus the web app with ``web``."""
    app.include_router(shop_router(services.shop))
    app.include_router(support_router(services.support))
    if web:
        from concierge.web.routes import mount_web

        mount_web(app, services)


def build_app(
    hub: ServingHub, settings: GatewaySettings | None = None, *, web: bool = True, services: WebServices | None = None,
) -> FastAPI:
    """The whole app over ``hub``: gateway, shop and support APIs, and (with ``web``) the web app.

    Without ``services``: with ``web`` the demo store is prepared (:func:`build_demo_services`);
    without, the shop and support APIs serve the tenants' own catalogues and domains as they are.
    """
    app = create_app(hub, settings)
    if services is None:
        services = build_demo_services(hub) if web else build_services(hub)
    mount_all(app, services, web=web)
    app.state.concierge_services = services  # for the entry points' shutdown (close_services)
    return app


def close_services(app: FastAPI) -> None:
    """Stop the app's background work (a first start's index completion) before the models close."""
    services = getattr(app.state, "concierge_services", None)
    close = getattr(getattr(getattr(services, "shop", None), "assistants", None), "close", None)
    if close is not None:
        close()


# ---- several gateway processes on one port (``concierge serve --workers N``) ------------------------


def worker_app() -> FastAPI:
    """The app of one worker process of ``concierge serve --workers N`` (a uvicorn factory).

    Built from the options the parent put in ``CONCIERGE_WORKER_OPTIONS``: the deployment config,
    the gateway settings and whether to serve the web app. Each worker loads its own models; keys,
    budgets, rate limits, usage, conversations and support writes are shared through the database.
    When its background preparation (the demo store's search index) is done, the worker touches
    the ``ready_file`` the parent waits for before it starts the next worker.
    """
    import json
    import os
    from contextlib import asynccontextmanager
    from pathlib import Path

    from concierge.models.hub import ModelHub

    options = json.loads(os.environ[WORKER_OPTIONS_ENV])
    try:
        hub = ModelHub.from_config(Path(options["config"]) if options.get("config") else None)
        app = build_app(hub, GatewaySettings(**options.get("settings", {})), web=bool(options.get("web", True)))
    except Exception:  # a worker that cannot start would only fail again: uvicorn's supervisor stops on this code
        log.exception("the gateway worker could not start")
        raise SystemExit(3) from None  # uvicorn.config.STARTUP_FAILURE
    services: WebServices = app.state.concierge_services
    ready = options.get("ready_file")
    if ready:

        def signal_ready() -> None:
            for thread in list(services.warmers):
                thread.join()
            Path(ready).touch()

        threading.Thread(target=signal_ready, name="concierge-worker-ready", daemon=True).start()
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI):  # noqa: ANN202
        async with inner(application) as state:
            yield state
        close_services(application)
        hub.close()

    app.router.lifespan_context = lifespan
    return app


def serve_workers(
    host: str, port: int, workers: int, *, config: str | None, settings: GatewaySettings, web: bool,
    run_dir: str,
) -> None:
    """Serve the app from ``workers`` processes sharing one listening socket, until SIGINT/SIGTERM.

    The first worker starts alone; the others start once it serves and has finished its first-start
    preparation (so they find the search index on disk instead of all building it at once). A worker
    that dies is replaced (uvicorn's supervisor). The caller prepares the database beforehand.
    """
    import dataclasses
    import json
    import os
    import time
    from pathlib import Path

    import uvicorn
    from uvicorn.supervisors.multiprocess import Multiprocess, Process

    ready_file = Path(run_dir) / f"worker-ready-{os.getpid()}"
    ready_file.parent.mkdir(parents=True, exist_ok=True)
    ready_file.unlink(missing_ok=True)
    os.environ[WORKER_OPTIONS_ENV] = json.dumps({
        "config": config, "settings": dataclasses.asdict(settings), "web": web, "ready_file": str(ready_file),
    })
    uv_config = uvicorn.Config("concierge.server:worker_app", factory=True, host=host, port=port, workers=workers,
                               log_level="info", access_log=False)

    class Staggered(Multiprocess):
        def init_processes(self) -> None:
            first = Process(self.config, self.sockets)
            first.start()
            self.processes.append(first)
            while not self.should_exit.is_set():
                self.handle_signals()
                if not first.process.is_alive():
                    return  # the supervisor's loop sees the failed start and stops
                if ready_file.exists() and first.is_ready(timeout=1):
                    break
                time.sleep(0.2)
            for _ in range(self.processes_num - 1):
                if self.should_exit.is_set():
                    return
                process = Process(self.config, self.sockets)
                process.start()
                self.processes.append(process)

    sock = uv_config.bind_socket()
    try:
        Staggered(uv_config, sockets=[sock]).run()
    finally:
        sock.close()
        ready_file.unlink(missing_ok=True)
