"""Shop errors (the HTTP layer maps ``status_code``/``code``; the CLI prints the message)."""

from __future__ import annotations


class ShopError(Exception):
    """Base of the shop assistant's caller-facing errors."""

    status_code = 400
    error_type = "invalid_request_error"
    code: str | None = "bad_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ShopRequestError(ShopError):
    """A malformed request: empty or badly shaped messages, a bad argument."""


class ShopperNotFoundError(ShopError):
    status_code = 404
    code = "shopper_not_found"


class ProductNotFoundError(ShopError):
    status_code = 404
    code = "product_not_found"


class CatalogNotFoundError(ShopError):
    status_code = 404
    code = "catalog_not_found"
