"""The gateway app with the shop/support routers and the web app mounted, over a fake hub."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from helpers.hubs import ShopHub

N_PRODUCTS = 150
N_SHOPPERS = 20


def build_app(hub: ShopHub, **web: Any) -> tuple[FastAPI, Any]:
    """The gateway app with the shop/support routers and the web app, as ``concierge serve`` wires them."""
    from concierge.gateway.app import create_app
    from concierge.server import build_demo_services, mount_all

    services = build_demo_services(hub, n_products=N_PRODUCTS, n_shoppers=N_SHOPPERS, use_model=False, warm=False)
    for name, value in web.items():
        setattr(services, name, value)
    app = create_app(hub)
    mount_all(app, services)  # the routers and the web app, exactly as the serve command wires them
    return app, services
