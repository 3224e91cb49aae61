"""τ²-bench's retail domain as concierge tools (same names, arguments, checks and arithmetic).

The database comes from the user's τ² data folder (``db.json``, ``policy.md``). Behaviour follows
τ²-bench's reference toolkit closely enough that replaying a task's gold actions gives the same
final database, including its quirks, which the gold databases depend on:

* ``modify_pending_order_items`` gives every modified item the price and options of the *last*
  new variant in the list;
* amounts are unrounded floats summed in the same order (``modify_pending_order_items`` records
  ``abs(diff)`` unrounded, ``exchange_delivered_order_items`` rounds the difference to cents);
* ``cancel_pending_order`` and ``modify_pending_order_items`` need the status to be exactly
  ``pending``, while address and payment changes accept any ``pending ...`` status.
"""

from __future__ import annotations

import json
from typing import Any

from concierge.support.toolkit import (
    Db,
    ToolError,
    calculate,
    fold_text,
    read,
    transfer_to_human_agents,
    write,
)

# The domain's clock: τ² retail has none, so guided mode reads today's date.
NOW: str | None = None

CANCEL_REASONS = ("no longer needed", "ordered by mistake")

# τ²'s reference replay (the shared gold files) ran a toolkit without get_item_details, so the
# gold marks calls to it as "Tool 'get_item_details' not found.". Replays compared with that gold
# exclude it; agents get the full toolkit.
REFERENCE_MISSING_TOOLS = ("get_item_details",)


# --------------------------------------------------------------------------- look-ups


def _order(db: Db, order_id: str) -> dict[str, Any]:
    orders = db["orders"]
    if order_id not in orders:
        raise ToolError("Order not found")
    return orders[order_id]


def _user(db: Db, user_id: str) -> dict[str, Any]:
    users = db["users"]
    if user_id not in users:
        raise ToolError("User not found")
    return users[user_id]


def _product(db: Db, product_id: str) -> dict[str, Any]:
    products = db["products"]
    if product_id not in products:
        raise ToolError("Product not found")
    return products[product_id]


def _variant(db: Db, product_id: str, item_id: str) -> dict[str, Any]:
    variants = _product(db, product_id)["variants"]
    if item_id not in variants:
        raise ToolError("Variant not found")
    return variants[item_id]


def _payment_method(db: Db, user_id: str, payment_method_id: str) -> dict[str, Any]:
    methods = _user(db, user_id)["payment_methods"]
    if payment_method_id not in methods:
        raise ToolError("Payment method not found")
    return methods[payment_method_id]


def _is_gift_card(method: dict[str, Any]) -> bool:
    return method.get("source") == "gift_card"


def _check_items_in_order(order: dict[str, Any], item_ids: list[str], message: str) -> None:
    """Every requested item (duplicates counted) must be in the order as often."""
    present = [item["item_id"] for item in order["items"]]
    for item_id in item_ids:
        if item_ids.count(item_id) > present.count(item_id):
            raise ToolError(message.format(item_id=item_id))


def _first_item(order: dict[str, Any], item_id: str) -> dict[str, Any]:
    item = next((item for item in order["items"] if item["item_id"] == item_id), None)
    if item is None:
        raise ToolError(f"Item {item_id} not found")
    return item


def _address(address1: str, address2: str, city: str, state: str, country: str, zip: str) -> dict[str, str]:
    return {
        "address1": address1,
        "address2": address2,
        "city": city,
        "country": country,
        "state": state,
        "zip": zip,
    }


# --------------------------------------------------------------------------- tools


@write
def cancel_pending_order(db: Db, order_id: str, reason: str) -> dict[str, Any]:
    """Cancel a pending order. If the order is already processed or delivered,
    it cannot be cancelled. The agent needs to explain the cancellation detail
    and ask for explicit user confirmation (yes/no) to proceed. If the user confirms,
    the order status will be changed to 'cancelled' and the payment will be refunded.
    The refund will be added to the user's gift card balance immediately if the payment
    was made using a gift card, otherwise the refund would take 5-7 business days to process.
    The function returns the order details after the cancellation.

    Args:
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.
        reason: The reason for cancellation, which should be either 'no longer needed' or 'ordered by mistake'.

    Returns:
        Order: The order details after the cancellation.
    """
    order = _order(db, order_id)
    if order["status"] != "pending":
        raise ToolError("Non-pending order cannot be cancelled")
    if reason not in CANCEL_REASONS:
        raise ToolError("Invalid reason")
    refunds = []
    for payment in order["payment_history"]:
        method_id = payment["payment_method_id"]
        refunds.append(
            {"transaction_type": "refund", "amount": payment["amount"], "payment_method_id": method_id}
        )
        method = _payment_method(db, order["user_id"], method_id)
        if _is_gift_card(method):  # gift cards are refunded at once
            method["balance"] = round(method["balance"] + payment["amount"], 2)
    order["status"] = "cancelled"
    order["cancel_reason"] = reason
    order["payment_history"].extend(refunds)
    return order


@write
def exchange_delivered_order_items(
    db: Db, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
) -> dict[str, Any]:
    """Exchange items in a delivered order to new items of the same product type.
    For a delivered order, return or exchange can be only done once by the agent.
    The agent needs to explain the exchange detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.
        item_ids: The item ids to be exchanged, each such as '1008292230'. There could be duplicate items in the list.
        new_item_ids: The item ids to be exchanged for, each such as '1008292230'.
                     There could be duplicate items in the list. Each new item id should match the item id
                     in the same position and be of the same product.
        payment_method_id: The payment method id to pay or receive refund for the item price difference,
                         such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked up
                         from the user or order details.

    Returns:
        Order: The order details after the exchange.

    Raises:
        ValueError: If the order is not delivered.
        ValueError: If the items to be exchanged do not exist.
        ValueError: If the new items do not exist or do not match the old items.
        ValueError: If the number of items to be exchanged does not match.
    """
    order = _order(db, order_id)
    if order["status"] != "delivered":
        raise ToolError("Non-delivered order cannot be exchanged")
    _check_items_in_order(order, item_ids, "Number of {item_id} not found.")
    if len(item_ids) != len(new_item_ids):
        raise ToolError("The number of items to be exchanged should match.")
    diff_price: float = 0
    for item_id, new_item_id in zip(item_ids, new_item_ids, strict=True):
        item = _first_item(order, item_id)
        variant = _variant(db, item["product_id"], new_item_id)
        if not variant["available"]:
            raise ToolError(f"New item {new_item_id} not found or available")
        diff_price += variant["price"] - item["price"]
    diff_price = round(diff_price, 2)
    method = _payment_method(db, order["user_id"], payment_method_id)
    if _is_gift_card(method) and method["balance"] < diff_price:
        raise ToolError("Insufficient gift card balance to pay for the price difference")
    order["status"] = "exchange requested"
    order["exchange_items"] = sorted(item_ids)
    order["exchange_new_items"] = sorted(new_item_ids)
    order["exchange_payment_method_id"] = payment_method_id
    order["exchange_price_difference"] = diff_price
    return order


@read
def find_user_id_by_name_zip(db: Db, first_name: str, last_name: str, zip: str) -> str:
    """Find user id by first name, last name, and zip code. If the user is not found, the function
    will return an error message. By default, find user id by email, and only call this function
    if the user is not found by email or cannot remember email.

    Args:
        first_name: The first name of the customer, such as 'John'.
        last_name: The last name of the customer, such as 'Doe'.
        zip: The zip code of the customer, such as '12345'.

    Returns:
        str: The user id if found, otherwise an error message.

    Raises:
        ValueError: If the user is not found.
    """
    # Names match case- and accent-insensitively (as upstream τ² does now); the zip is the
    # verification factor and must match exactly.
    first, last = fold_text(first_name), fold_text(last_name)
    for user_id, user in db["users"].items():
        name = user["name"]
        if fold_text(name["first_name"]) == first and fold_text(name["last_name"]) == last:
            if user["address"]["zip"] == zip:
                return user_id
    raise ToolError("User not found")


@read
def find_user_id_by_email(db: Db, email: str) -> str:
    """Find user id by email. If the user is not found, the function will return an error message.

    Args:
        email: The email of the user, such as 'something@example.com'.

    Returns:
        str: The user id if found, otherwise an error message.

    Raises:
        ValueError: If the user is not found.
    """
    wanted = fold_text(email)
    for user_id, user in db["users"].items():
        if fold_text(user["email"]) == wanted:
            return user_id
    raise ToolError("User not found")


@read
def get_order_details(db: Db, order_id: str) -> dict[str, Any]:
    """Get the status and details of an order.

    Args:
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.

    Returns:
        Order: The order details.

    Raises:
        ValueError: If the order is not found.
    """
    return _order(db, order_id)


@read
def get_product_details(db: Db, product_id: str) -> dict[str, Any]:
    """Get the inventory details of a product.

    Args:
        product_id: The product id, such as '6086499569'. Be careful the product id is different from the item id.

    Returns:
        Product: The product details.

    Raises:
        ValueError: If the product is not found.
    """
    return _product(db, product_id)


@read
def get_item_details(db: Db, item_id: str) -> dict[str, Any]:
    """Get the inventory details of an item.

    Args:
        item_id: The item id, such as '6086499569'. Be careful the item id is different from the product id.

    Returns:
        Variant: The item details.

    Raises:
        ValueError: If the item is not found.
    """
    for product in db["products"].values():
        if item_id in product["variants"]:
            return product["variants"][item_id]
    raise ToolError("Item not found")


@read
def get_user_details(db: Db, user_id: str) -> dict[str, Any]:
    """Get the details of a user, including their orders.

    Args:
        user_id: The user id, such as 'sara_doe_496'.

    Returns:
        User: The user details.

    Raises:
        ValueError: If the user is not found.
    """
    return _user(db, user_id)


@read
def list_all_product_types(db: Db) -> str:
    """List the name and product id of all product types.
    Each product type has a variety of different items with unique item ids and options.
    There are only 50 product types in the store.

    Returns:
        str: A JSON string mapping product names to their product IDs, sorted alphabetically by name.
    """
    return json.dumps({p["name"]: p["product_id"] for p in db["products"].values()}, sort_keys=True)


@write
def modify_pending_order_address(
    db: Db, order_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
) -> dict[str, Any]:
    """Modify the shipping address of a pending order. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.
        address1: The first line of the address, such as '123 Main St'.
        address2: The second line of the address, such as 'Apt 1' or ''.
        city: The city, such as 'San Francisco'.
        state: The state, such as 'CA'.
        country: The country, such as 'USA'.
        zip: The zip code, such as '12345'.

    Returns:
        Order: The order details after the modification.

    Raises:
        ValueError: If the order is not pending.
    """
    order = _order(db, order_id)
    if "pending" not in order["status"]:
        raise ToolError("Non-pending order cannot be modified")
    order["address"] = _address(address1, address2, city, state, country, zip)
    return order


@write
def modify_pending_order_items(
    db: Db, order_id: str, item_ids: list[str], new_item_ids: list[str], payment_method_id: str
) -> dict[str, Any]:
    """Modify items in a pending order to new items of the same product type. For a pending order, this function can only be called once. The agent needs to explain the exchange detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.
        item_ids: The item ids to be modified, each such as '1008292230'. There could be duplicate items in the list.
        new_item_ids: The item ids to be modified for, each such as '1008292230'. There could be duplicate items in the list. Each new item id should match the item id in the same position and be of the same product.
        payment_method_id: The payment method id to pay or receive refund for the item price difference, such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked up from the user or order details.

    Returns:
        Order: The order details after the modification.

    Raises:
        ValueError: If the order is not pending.
        ValueError: If the items to be modified do not exist.
        ValueError: If the new items do not exist or do not match the old items.
        ValueError: If the number of items to be modified does not match.
    """
    order = _order(db, order_id)
    if order["status"] != "pending":
        raise ToolError("Non-pending order cannot be modified")
    _check_items_in_order(order, item_ids, "{item_id} not found")
    if len(item_ids) != len(new_item_ids):
        raise ToolError("The number of items to be exchanged should match")
    diff_price: float = 0
    variant: dict[str, Any] = {}
    for item_id, new_item_id in zip(item_ids, new_item_ids, strict=True):
        if item_id == new_item_id:
            raise ToolError("The new item id should be different from the old item id")
        item = _first_item(order, item_id)
        variant = _variant(db, item["product_id"], new_item_id)
        if not variant["available"]:
            raise ToolError(f"New item {new_item_id} not found or available")
        diff_price += variant["price"] - item["price"]
    method = _payment_method(db, order["user_id"], payment_method_id)
    if _is_gift_card(method) and method["balance"] < diff_price:
        raise ToolError("Insufficient gift card balance to pay for the new item")
    # τ² records the unrounded difference on the order and rounds only the gift card balance.
    order["payment_history"].append(
        {
            "transaction_type": "payment" if diff_price > 0 else "refund",
            "amount": abs(diff_price),
            "payment_method_id": payment_method_id,
        }
    )
    if _is_gift_card(method):
        method["balance"] = round(method["balance"] - diff_price, 2)
    for item_id, new_item_id in zip(item_ids, new_item_ids, strict=True):
        item = _first_item(order, item_id)
        item["item_id"] = new_item_id
        # Reference quirk: price and options come from the last variant checked above.
        item["price"] = variant["price"]
        item["options"] = dict(variant["options"])
    order["status"] = "pending (item modified)"
    return order


@write
def modify_pending_order_payment(db: Db, order_id: str, payment_method_id: str) -> dict[str, Any]:
    """Modify the payment method of a pending order. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.
        payment_method_id: The payment method id to pay or receive refund for the item price difference, such as 'gift_card_0000000' or 'credit_card_0000000'. These can be looked up from the user or order details.

    Returns:
        Order: The order details after the modification.

    Raises:
        ValueError: If the order is not pending.
        ValueError: If the payment method does not exist.
        ValueError: If the payment history has more than one payment.
        ValueError: If the new payment method is the same as the current one.
    """
    order = _order(db, order_id)
    if "pending" not in order["status"]:
        raise ToolError("Non-pending order cannot be modified")
    method = _payment_method(db, order["user_id"], payment_method_id)
    history = order["payment_history"]
    if len(history) != 1 or history[0]["transaction_type"] != "payment":
        raise ToolError("There should be exactly one payment for a pending order")
    old_method_id = history[0]["payment_method_id"]
    if old_method_id == payment_method_id:
        raise ToolError("The new payment method should be different from the current one")
    amount = history[0]["amount"]
    if _is_gift_card(method) and method["balance"] < amount:
        raise ToolError("Insufficient gift card balance to pay for the order")
    old_method = _payment_method(db, order["user_id"], old_method_id)
    history.extend(
        [
            {"transaction_type": "payment", "amount": amount, "payment_method_id": payment_method_id},
            {"transaction_type": "refund", "amount": amount, "payment_method_id": old_method_id},
        ]
    )
    if _is_gift_card(method):
        method["balance"] = round(method["balance"] - amount, 2)
    if _is_gift_card(old_method):
        old_method["balance"] = round(old_method["balance"] + amount, 2)
    return order


@write
def modify_user_address(
    db: Db, user_id: str, address1: str, address2: str, city: str, state: str, country: str, zip: str
) -> dict[str, Any]:
    """Modify the default address of a user. The agent needs to explain the modification detail and ask for explicit user confirmation (yes/no) to proceed.

    Args:
        user_id: The user id, such as 'sara_doe_496'.
        address1: The first line of the address, such as '123 Main St'.
        address2: The second line of the address, such as 'Apt 1' or ''.
        city: The city, such as 'San Francisco'.
        state: The state, such as 'CA'.
        country: The country, such as 'USA'.
        zip: The zip code, such as '12345'.

    Returns:
        User: The user details after the modification.

    Raises:
        ValueError: If the user is not found.
    """
    user = _user(db, user_id)
    user["address"] = _address(address1, address2, city, state, country, zip)
    return user


@write
def return_delivered_order_items(
    db: Db, order_id: str, item_ids: list[str], payment_method_id: str
) -> dict[str, Any]:
    """Return some items of a delivered order.
    The order status will be changed to 'return requested'.
    The agent needs to explain the return detail and ask for explicit user confirmation (yes/no) to proceed.
    The user will receive follow-up email for how and where to return the item.

    Args:
        order_id: The order id, such as '#W0000000'. Be careful there is a '#' symbol at the beginning of the order id.
        item_ids: The item ids to be returned, each such as '1008292230'. There could be duplicate items in the list.
        payment_method_id: The payment method id to pay or receive refund for the item price difference, such as 'gift_card_0000000' or 'credit_card_0000000'.
                         These can be looked up from the user or order details.

    Returns:
        Order: The order details after requesting the return.

    Raises:
        ValueError: If the order is not delivered.
        ValueError: If the payment method is not the original payment method or a gift card.
        ValueError: If the items to be returned do not exist.
    """
    order = _order(db, order_id)
    if order["status"] != "delivered":
        raise ToolError("Non-delivered order cannot be returned")
    method = _payment_method(db, order["user_id"], payment_method_id)
    if not _is_gift_card(method) and payment_method_id != order["payment_history"][0]["payment_method_id"]:
        raise ToolError("Payment method should be the original payment method")
    _check_items_in_order(order, item_ids, "Some item not found")
    order["status"] = "return requested"
    order["return_items"] = sorted(item_ids)
    order["return_payment_method_id"] = payment_method_id
    return order


TOOLS = [
    calculate,
    cancel_pending_order,
    exchange_delivered_order_items,
    find_user_id_by_name_zip,
    find_user_id_by_email,
    get_order_details,
    get_product_details,
    get_item_details,
    get_user_details,
    list_all_product_types,
    modify_pending_order_address,
    modify_pending_order_items,
    modify_pending_order_payment,
    modify_user_address,
    return_delivered_order_items,
    transfer_to_human_agents,
]
