"""Homestay tools: look-ups, tiered cancellation, date changes and service refunds.

Every rule of ``policy.md`` that a tool can check, it checks: an agent that skips a step gets a
ToolError, not a wrong database. The clock is fixed (``TODAY``) so tasks replay the same way.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Literal

from concierge.support.domains.homestay.generate import TODAY
from concierge.support.toolkit import Db, ToolError, fold_text, read, write

CancelReason = Literal[
    "change of plans", "found other accommodation", "travel restrictions", "booked by mistake"
]
ServiceIssue = Literal["cleanliness", "missing amenity", "noise", "host issue"]

# Days before check-in at or above which a cancellation is refunded in full.
FULL_REFUND_DAYS = {"flexible": 1, "moderate": 5, "strict": 14}
STRICT_HALF_REFUND_DAYS = 7
SERVICE_REFUND_CAP = 0.20
SERVICE_REFUND_WINDOW_DAYS = 14
MAX_NIGHTS = 28


# --------------------------------------------------------------------------- helpers


def _guest(db: Db, guest_id: str) -> dict[str, Any]:
    if guest_id not in db["guests"]:
        raise ToolError(f"Guest {guest_id} not found")
    return db["guests"][guest_id]


def _reservation(db: Db, reservation_id: str) -> dict[str, Any]:
    key = reservation_id.strip().upper()
    if key not in db["reservations"]:
        raise ToolError(f"Reservation {reservation_id} not found")
    return db["reservations"][key]


def _listing(db: Db, listing_id: str) -> dict[str, Any]:
    key = listing_id.strip().upper()
    if key not in db["listings"]:
        raise ToolError(f"Listing {listing_id} not found")
    return db["listings"][key]


def _day(value: str, what: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ToolError(f"{what} must be a date written YYYY-MM-DD, got {value!r}") from None


def _stay(check_in: str, check_out: str) -> tuple[date, date, int]:
    start, end = _day(check_in, "check_in"), _day(check_out, "check_out")
    nights = (end - start).days
    if nights < 1:
        raise ToolError("check_out must be after check_in")
    if nights > MAX_NIGHTS:
        raise ToolError(f"A stay can be at most {MAX_NIGHTS} nights")
    return start, end, nights


def _days_before(reservation: dict[str, Any]) -> int:
    return (date.fromisoformat(reservation["check_in"]) - TODAY).days


def _is_free(db: Db, listing_id: str, start: date, end: date, ignore: str | None = None) -> bool:
    first, last = start.isoformat(), end.isoformat()
    for other in db["reservations"].values():
        if (
            other["listing_id"] != listing_id
            or other["status"] == "cancelled"
            or other["reservation_id"] == ignore
        ):
            continue
        if other["check_in"] < last and first < other["check_out"]:
            return False
    return True


def _payment_method(guest: dict[str, Any], payment_method_id: str) -> dict[str, Any]:
    method = guest["payment_methods"].get(payment_method_id)
    if method is None:
        raise ToolError(f"Payment method {payment_method_id} not found for guest {guest['guest_id']}")
    return method


def _original_method(reservation: dict[str, Any]) -> str:
    return next(p["payment_method_id"] for p in reservation["payment_history"] if p["type"] == "payment")


def _credit(db: Db, reservation: dict[str, Any], method_id: str, amount: float) -> None:
    """Record a refund; wallets are credited at once (cards settle outside the system)."""
    if amount <= 0:
        return
    reservation["payment_history"].append(
        {"type": "refund", "amount": amount, "payment_method_id": method_id}
    )
    method = db["guests"][reservation["guest_id"]]["payment_methods"].get(method_id)
    if method is not None and method["source"] == "wallet":
        method["balance"] = round(method["balance"] + amount, 2)


def cancellation_quote(reservation: dict[str, Any]) -> dict[str, Any]:
    """What cancelling now would refund, by the reservation's cancellation policy."""
    if reservation["status"] != "confirmed":
        raise ToolError(
            f"Reservation {reservation['reservation_id']} is {reservation['status']} and cannot be cancelled"
        )
    days = _days_before(reservation)
    if days < 1:
        raise ToolError(
            f"The stay of reservation {reservation['reservation_id']} has started (check-in {reservation['check_in']}); "
            "it cannot be cancelled here"
        )
    tier = reservation["cancellation_policy"]
    nights_cost = reservation["nightly_rate"] * reservation["nights"]
    cleaning = reservation["cleaning_fee"]
    if days >= FULL_REFUND_DAYS[tier]:
        refund, rule = (
            reservation["total"],
            f"full refund ({tier}: {FULL_REFUND_DAYS[tier]}+ days before check-in)",
        )
    elif tier == "moderate" or (tier == "strict" and days >= STRICT_HALF_REFUND_DAYS):
        refund = round(nights_cost * 0.5 + cleaning, 2)
        rule = f"50% of the nights plus the cleaning fee ({tier}, {days} days before check-in)"
    else:
        refund, rule = cleaning, f"cleaning fee only ({tier}, {days} days before check-in)"
    return {
        "reservation_id": reservation["reservation_id"],
        "cancellation_policy": tier,
        "days_before_check_in": days,
        "refund": refund,
        "not_refunded": round(reservation["total"] - refund, 2),
        "rule": rule,
        "refund_to": _original_method(reservation),
    }


# --------------------------------------------------------------------------- read tools


@read
def find_guest_by_email(db: Db, email: str) -> str:
    """Find a guest's id from their email address.

    Args:
        email: The guest's email, such as 'maya.okafor@example.com'.

    Returns:
        The guest id.
    """
    wanted = fold_text(email)
    for guest_id, guest in db["guests"].items():
        if fold_text(guest["email"]) == wanted:
            return guest_id
    raise ToolError("Guest not found")


@read
def get_guest_details(db: Db, guest_id: str) -> dict[str, Any]:
    """Get a guest's profile: name, contact, payment methods and reservation ids.

    Args:
        guest_id: The guest id, such as 'maya_okafor_1042'.

    Returns:
        The guest record.
    """
    return _guest(db, guest_id)


@read
def list_guest_reservations(db: Db, guest_id: str) -> list[dict[str, Any]]:
    """List a guest's reservations with their listing, city, dates and status.

    Args:
        guest_id: The guest id, such as 'maya_okafor_1042'.

    Returns:
        One summary per reservation, oldest check-in first.
    """
    guest = _guest(db, guest_id)
    rows = []
    for reservation_id in guest["reservations"]:
        reservation = db["reservations"][reservation_id]
        listing = db["listings"][reservation["listing_id"]]
        rows.append(
            {
                "reservation_id": reservation_id,
                "listing_id": listing["listing_id"],
                "title": listing["title"],
                "city": listing["city"],
                "check_in": reservation["check_in"],
                "check_out": reservation["check_out"],
                "status": reservation["status"],
            }
        )
    return sorted(rows, key=lambda row: row["check_in"])


@read
def get_reservation_details(db: Db, reservation_id: str) -> dict[str, Any]:
    """Get a reservation: listing, dates, guests, prices, cancellation policy, status and payments.

    Args:
        reservation_id: The reservation id, such as 'HS10001'.

    Returns:
        The reservation record.
    """
    return _reservation(db, reservation_id)


@read
def get_listing_details(db: Db, listing_id: str) -> dict[str, Any]:
    """Get a listing: title, city, kind, capacity, prices, cancellation policy, amenities and rating.

    Args:
        listing_id: The listing id, such as 'L101'.

    Returns:
        The listing record.
    """
    return _listing(db, listing_id)


@read
def search_listings(db: Db, city: str, check_in: str, check_out: str, guests: int) -> list[dict[str, Any]]:
    """Find listings in a city that are free on the given dates and fit the number of guests.

    Args:
        city: The city, such as 'Lisbon'.
        check_in: The check-in date, YYYY-MM-DD.
        check_out: The check-out date, YYYY-MM-DD.
        guests: How many people will stay.

    Returns:
        The free listings with the price of the stay, best rated first.
    """
    start, end, nights = _stay(check_in, check_out)
    if start <= TODAY:
        raise ToolError("check_in must be after today")
    if guests < 1:
        raise ToolError("guests must be at least 1")
    wanted = fold_text(city)
    found = []
    for listing in db["listings"].values():
        if fold_text(listing["city"]) != wanted or listing["max_guests"] < guests:
            continue
        if not _is_free(db, listing["listing_id"], start, end):
            continue
        found.append(
            {
                "listing_id": listing["listing_id"],
                "title": listing["title"],
                "kind": listing["kind"],
                "max_guests": listing["max_guests"],
                "nightly_rate": listing["nightly_rate"],
                "cleaning_fee": listing["cleaning_fee"],
                "nights": nights,
                "total": round(nights * listing["nightly_rate"] + listing["cleaning_fee"], 2),
                "cancellation_policy": listing["cancellation_policy"],
                "rating": listing["rating"],
            }
        )
    return sorted(found, key=lambda row: (-row["rating"], row["total"], row["listing_id"]))


@read
def quote_cancellation(db: Db, reservation_id: str) -> dict[str, Any]:
    """Tell how much cancelling a reservation today would refund, and why.

    Args:
        reservation_id: The reservation id, such as 'HS10001'.

    Returns:
        The refund, the part not refunded, the rule applied and the payment method refunded.
    """
    return cancellation_quote(_reservation(db, reservation_id))


# --------------------------------------------------------------------------- write tools


@write
def cancel_reservation(db: Db, reservation_id: str, reason: CancelReason) -> dict[str, Any]:
    """Cancel a confirmed reservation before check-in, refunding what its cancellation policy allows
    to the payment method that paid for it. Explain the refund and get the guest's explicit yes first.

    Args:
        reservation_id: The reservation id, such as 'HS10001'.
        reason: Why the guest cancels.

    Returns:
        The reservation after cancellation.
    """
    reservation = _reservation(db, reservation_id)
    quote = cancellation_quote(reservation)
    reservation["status"] = "cancelled"
    reservation["cancel_reason"] = reason
    reservation["cancelled_at"] = TODAY.isoformat()
    reservation["refund_amount"] = quote["refund"]
    _credit(db, reservation, quote["refund_to"], quote["refund"])
    return reservation


@write
def modify_reservation_dates(
    db: Db, reservation_id: str, check_in: str, check_out: str, payment_method_id: str
) -> dict[str, Any]:
    """Move a confirmed reservation to new dates, while it is still inside its full-refund window.
    The booked nightly rate and cleaning fee are kept; a higher total is charged to the payment
    method, a lower one refunded to it. Explain the change and get the guest's explicit yes first.

    Args:
        reservation_id: The reservation id, such as 'HS10001'.
        check_in: The new check-in date, YYYY-MM-DD.
        check_out: The new check-out date, YYYY-MM-DD.
        payment_method_id: The guest's payment method to charge or refund the difference, such as 'credit_card_1042' or 'wallet_1042'.

    Returns:
        The reservation after the change.
    """
    reservation = _reservation(db, reservation_id)
    if reservation["status"] != "confirmed":
        raise ToolError(
            f"Reservation {reservation['reservation_id']} is {reservation['status']}; dates cannot change"
        )
    days = _days_before(reservation)
    tier = reservation["cancellation_policy"]
    if days < FULL_REFUND_DAYS[tier]:
        raise ToolError(
            f"Dates can change only {FULL_REFUND_DAYS[tier]}+ days before check-in under the {tier} policy "
            f"(check-in is in {days} days)"
        )
    start, end, nights = _stay(check_in, check_out)
    if start <= TODAY:
        raise ToolError("The new check-in must be after today")
    if (start.isoformat(), end.isoformat()) == (reservation["check_in"], reservation["check_out"]):
        raise ToolError("The new dates are the same as the current ones")
    if not _is_free(db, reservation["listing_id"], start, end, ignore=reservation["reservation_id"]):
        raise ToolError(f"Listing {reservation['listing_id']} is not free from {start} to {end}")
    guest = db["guests"][reservation["guest_id"]]
    method = _payment_method(guest, payment_method_id)
    new_total = round(nights * reservation["nightly_rate"] + reservation["cleaning_fee"], 2)
    difference = round(new_total - reservation["total"], 2)
    if difference > 0 and method["source"] == "wallet" and method["balance"] < difference:
        raise ToolError(
            f"Wallet balance {method['balance']:.2f} does not cover the difference of {difference:.2f}"
        )
    if difference > 0:
        reservation["payment_history"].append(
            {"type": "payment", "amount": difference, "payment_method_id": payment_method_id}
        )
        if method["source"] == "wallet":
            method["balance"] = round(method["balance"] - difference, 2)
    elif difference < 0:
        _credit(db, reservation, payment_method_id, -difference)
    reservation["check_in"] = start.isoformat()
    reservation["check_out"] = end.isoformat()
    reservation["nights"] = nights
    reservation["total"] = new_total
    return reservation


@write
def issue_service_refund(db: Db, reservation_id: str, amount: float, reason: ServiceIssue) -> dict[str, Any]:
    """Refund part of a stay for a problem during it (stay started, or ended at most 14 days ago).
    All service refunds of a reservation together are capped at 20% of its total; the refund goes
    to the original payment method. Explain the amount and get the guest's explicit yes first.

    Args:
        reservation_id: The reservation id, such as 'HS10001'.
        amount: The amount to refund, such as 45.5.
        reason: What went wrong.

    Returns:
        The reservation after the refund.
    """
    reservation = _reservation(db, reservation_id)
    if reservation["status"] == "cancelled":
        raise ToolError(f"Reservation {reservation['reservation_id']} is cancelled")
    if _days_before(reservation) > 0:
        raise ToolError("The stay has not started; service refunds are for problems during a stay")
    if TODAY > date.fromisoformat(reservation["check_out"]) + timedelta(days=SERVICE_REFUND_WINDOW_DAYS):
        raise ToolError(
            f"Service refunds are possible up to {SERVICE_REFUND_WINDOW_DAYS} days after check-out"
        )
    if amount <= 0:
        raise ToolError("amount must be positive")
    amount = round(amount, 2)
    cap = round(reservation["total"] * SERVICE_REFUND_CAP, 2)
    already = round(sum(r.get("amount", 0) for r in reservation.get("service_refunds", [])), 2)
    if amount > round(cap - already, 2):
        raise ToolError(
            f"Service refunds are capped at 20% of the total ({cap:.2f}); {round(cap - already, 2):.2f} can still be refunded"
        )
    reservation.setdefault("service_refunds", []).append(
        {"amount": amount, "reason": reason, "date": TODAY.isoformat()}
    )
    _credit(db, reservation, _original_method(reservation), amount)
    return reservation
