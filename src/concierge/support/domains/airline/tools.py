"""τ²-bench's airline domain as concierge tools (same names, arguments, checks and arithmetic).

Reference behaviours kept on purpose, since gold databases depend on them: the clock is fixed at
2024-05-15T15:00:00; new reservations get ids HATHAT, HATHAU, HATHAV and new certificates
certificate_3221322..4; cancelling releases no seats and changing flights books no seats;
one-stop search builds the next day's date as ``2024-05-<day+1>`` (no zero padding).
Ids are matched exactly first, then ignoring case, accents and surrounding spaces.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypedDict

from concierge.support.toolkit import (
    Db,
    ToolError,
    calculate,
    fold_text,
    read,
    transfer_to_human_agents,
    write,
)

FlightType = Literal["round_trip", "one_way"]
CabinClass = Literal["business", "economy", "basic_economy"]
Insurance = Literal["yes", "no"]

NOW = "2024-05-15T15:00:00"
NEW_RESERVATION_IDS = ("HATHAT", "HATHAU", "HATHAV")
NEW_CERTIFICATE_NUMBERS = (3221322, 3221323, 3221324)
AIRPORTS = (
    ("SFO", "San Francisco"),
    ("JFK", "New York"),
    ("LAX", "Los Angeles"),
    ("ORD", "Chicago"),
    ("DFW", "Dallas"),
    ("DEN", "Denver"),
    ("SEA", "Seattle"),
    ("ATL", "Atlanta"),
    ("MIA", "Miami"),
    ("BOS", "Boston"),
    ("PHX", "Phoenix"),
    ("IAH", "Houston"),
    ("LAS", "Las Vegas"),
    ("MCO", "Orlando"),
    ("EWR", "Newark"),
    ("CLT", "Charlotte"),
    ("MSP", "Minneapolis"),
    ("DTW", "Detroit"),
    ("PHL", "Philadelphia"),
    ("LGA", "LaGuardia"),
)


class FlightInfo(TypedDict):
    flight_number: Annotated[str, "Flight number, such as 'HAT001'."]
    date: Annotated[str, "The date for the flight in the format 'YYYY-MM-DD', such as '2024-05-01'."]


class Passenger(TypedDict):
    first_name: Annotated[str, "Passenger's first name"]
    last_name: Annotated[str, "Passenger's last name"]
    dob: Annotated[str, "Date of birth in YYYY-MM-DD format"]


class Payment(TypedDict):
    payment_id: Annotated[str, "Unique identifier for the payment"]
    amount: Annotated[int, "Payment amount in dollars"]


# --------------------------------------------------------------------------- look-ups


def _resolve(table: Any, key: str) -> str | None:
    """The stored key matching ``key`` exactly, else ignoring case, accents and spaces."""
    if key in table:
        return key
    stripped = key.strip()
    if stripped in table:
        return stripped
    folded = fold_text(stripped)
    return next((candidate for candidate in table if fold_text(candidate) == folded), None)


def _user(db: Db, user_id: str) -> dict[str, Any]:
    key = _resolve(db["users"], user_id)
    if key is None:
        raise ToolError(f"User {user_id} not found")
    return db["users"][key]


def _reservation(db: Db, reservation_id: str) -> dict[str, Any]:
    key = _resolve(db["reservations"], reservation_id)
    if key is None:
        raise ToolError(f"Reservation {reservation_id} not found")
    return db["reservations"][key]


def _flight(db: Db, flight_number: str) -> dict[str, Any]:
    key = _resolve(db["flights"], flight_number)
    if key is None:
        raise ToolError(f"Flight {flight_number} not found")
    return db["flights"][key]


def _flight_date(db: Db, flight_number: str, date: str) -> dict[str, Any]:
    flight = _flight(db, flight_number)
    if date not in flight["dates"]:
        raise ToolError(f"Flight {flight_number} not found on date {date}")
    return flight["dates"][date]


def _search_direct(
    db: Db,
    date: str,
    origin: str | None = None,
    destination: str | None = None,
    leave_after: str | None = None,
) -> list[dict[str, Any]]:
    results = []
    for flight in db["flights"].values():
        day = flight["dates"].get(date)
        if (
            (origin is None or flight["origin"] == origin)
            and (destination is None or flight["destination"] == destination)
            and day is not None
            and day["status"] == "available"
            and (leave_after is None or flight["scheduled_departure_time_est"] >= leave_after)
        ):
            results.append(
                {
                    "flight_number": flight["flight_number"],
                    "origin": flight["origin"],
                    "destination": flight["destination"],
                    "status": "available",
                    "scheduled_departure_time_est": flight["scheduled_departure_time_est"],
                    "scheduled_arrival_time_est": flight["scheduled_arrival_time_est"],
                    "date": None,
                    "available_seats": dict(day["available_seats"]),
                    "prices": dict(day["prices"]),
                }
            )
    return results


def _charge_for_update(user: dict[str, Any], payment_id: str, total_price: int) -> dict[str, Any] | None:
    """Check and take payment for a change; returns the payment record (None when nothing is due)."""
    methods = user["payment_methods"]
    if payment_id not in methods:
        raise ToolError("Payment method not found")
    method = methods[payment_id]
    if method["source"] == "certificate":
        raise ToolError("Certificate cannot be used to update reservation")
    if method["source"] == "gift_card" and method["amount"] < total_price:
        raise ToolError("Gift card balance is not enough")
    if method["source"] == "gift_card":
        method["amount"] -= total_price
    return {"payment_id": payment_id, "amount": total_price} if total_price != 0 else None


# --------------------------------------------------------------------------- tools


@write
def book_reservation(
    db: Db,
    user_id: str,
    origin: str,
    destination: str,
    flight_type: FlightType,
    cabin: CabinClass,
    flights: list[FlightInfo],
    passengers: list[Passenger],
    payment_methods: list[Payment],
    total_baggages: int,
    nonfree_baggages: int,
    insurance: Insurance,
) -> dict[str, Any]:
    """
    Book a reservation.

    Args:
        user_id: The ID of the user to book the reservation such as 'sara_doe_496'`.
        origin: The IATA code for the origin city such as 'SFO'.
        destination: The IATA code for the destination city such as 'JFK'.
        flight_type: The type of flight such as 'one_way' or 'round_trip'.
        cabin: The cabin class such as 'basic_economy', 'economy', or 'business'.
        flights: An array of objects containing details about each piece of flight.
        passengers: An array of objects containing details about each passenger.
        payment_methods: An array of objects containing details about each payment method.
        total_baggages: The total number of baggage items to book the reservation.
        nonfree_baggages: The number of non-free baggage items to book the reservation.
        insurance: Whether the reservation has insurance.
    """
    user = _user(db, user_id)
    user_id = user["user_id"]
    reservation_id = next((rid for rid in NEW_RESERVATION_IDS if rid not in db["reservations"]), None)
    if reservation_id is None:
        raise ToolError("Too many reservations")
    booked_flights = []
    days = []
    total_price = 0
    for info in flights:
        flight = _flight(db, info["flight_number"])
        number = flight["flight_number"]
        day = _flight_date(db, number, info["date"])
        if day["status"] != "available":
            raise ToolError(f"Flight {number} not available on date {info['date']}")
        if day["available_seats"][cabin] < len(passengers):
            raise ToolError(f"Not enough seats on flight {number}")
        price = day["prices"][cabin]
        booked_flights.append(
            {
                "origin": flight["origin"],
                "destination": flight["destination"],
                "flight_number": number,
                "date": info["date"],
                "price": price,
            }
        )
        days.append(day)
        total_price += price * len(passengers)
    if insurance == "yes":
        total_price += 30 * len(passengers)
    total_price += 50 * nonfree_baggages
    methods = user["payment_methods"]
    for payment in payment_methods:
        payment_id = payment["payment_id"]
        if payment_id not in methods:
            raise ToolError(f"Payment method {payment_id} not found")
        method = methods[payment_id]
        if method["source"] in ("gift_card", "certificate") and method["amount"] < payment["amount"]:
            raise ToolError(f"Not enough balance in payment method {payment_id}")
    total_payment = sum(payment["amount"] for payment in payment_methods)
    if total_payment != total_price:
        raise ToolError(
            f"Payment amount does not add up, total price is {total_price}, but paid {total_payment}"
        )
    for payment in payment_methods:
        method = methods.get(payment["payment_id"])
        if method is None:  # a certificate listed twice was already used up
            continue
        if method["source"] == "gift_card":
            method["amount"] -= payment["amount"]
        elif method["source"] == "certificate":
            methods.pop(payment["payment_id"])
    for day in days:
        day["available_seats"][cabin] -= len(passengers)
    reservation = {
        "reservation_id": reservation_id,
        "user_id": user_id,
        "origin": origin,
        "destination": destination,
        "flight_type": flight_type,
        "cabin": cabin,
        "flights": booked_flights,
        "passengers": [dict(p) for p in passengers],
        "payment_history": [dict(p) for p in payment_methods],
        "created_at": NOW,
        "total_baggages": total_baggages,
        "nonfree_baggages": nonfree_baggages,
        "insurance": insurance,
    }
    db["reservations"][reservation_id] = reservation
    user["reservations"].append(reservation_id)
    return reservation


@write
def cancel_reservation(db: Db, reservation_id: str) -> dict[str, Any]:
    """
    Cancel the whole reservation.

    Args:
        reservation_id: The reservation ID, such as 'ZFA04Y'.

    Returns:
        The updated reservation.

    Raises:
        ValueError: If the reservation is not found.
    """
    reservation = _reservation(db, reservation_id)
    refunds = [
        {"payment_id": p["payment_id"], "amount": -p["amount"]} for p in reservation["payment_history"]
    ]
    reservation["payment_history"].extend(refunds)
    reservation["status"] = "cancelled"
    return reservation


@read
def get_reservation_details(db: Db, reservation_id: str) -> dict[str, Any]:
    """
    Get the details of a reservation.

    Args:
        reservation_id: The reservation ID, such as '8JX2WO'.

    Returns:
        The reservation details.

    Raises:
        ValueError: If the reservation is not found.
    """
    return _reservation(db, reservation_id)


@read
def get_user_details(db: Db, user_id: str) -> dict[str, Any]:
    """
    Get the details of a user, including their reservations.

    Args:
        user_id: The user ID, such as 'sara_doe_496'.

    Returns:
        The user details.

    Raises:
        ValueError: If the user is not found.
    """
    return _user(db, user_id)


@read
def list_all_airports(db: Db) -> list[dict[str, str]]:
    """Returns a list of all available airports.

    Returns:
        A dictionary mapping IATA codes to AirportInfo objects.
    """
    return [{"iata": iata, "city": city} for iata, city in AIRPORTS]


@read
def search_direct_flight(db: Db, origin: str, destination: str, date: str) -> list[dict[str, Any]]:
    """
    Search for direct flights between two cities on a specific date.

    Args:
        origin: The origin city airport in three letters, such as 'JFK'.
        destination: The destination city airport in three letters, such as 'LAX'.
        date: The date of the flight in the format 'YYYY-MM-DD', such as '2024-01-01'.

    Returns:
        The direct flights between the two cities on the specific date.
    """
    return _search_direct(db, date=date, origin=origin, destination=destination)


@read
def search_onestop_flight(db: Db, origin: str, destination: str, date: str) -> list[list[dict[str, Any]]]:
    """
    Search for one-stop flights between two cities on a specific date.

    Args:
        origin: The origin city airport in three letters, such as 'JFK'.
        destination: The destination city airport in three letters, such as 'LAX'.
        date: The date of the flight in the format 'YYYY-MM-DD', such as '2024-05-01'.

    Returns:
        A list of pairs of DirectFlight objects.
    """
    results = []
    for first in _search_direct(db, date=date, origin=origin):
        first["date"] = date
        # Reference behaviour: an overnight first leg continues on "2024-05-<day+1>".
        try:
            second_date = (
                f"2024-05-{int(date[-2:]) + 1}" if "+1" in first["scheduled_arrival_time_est"] else date
            )
        except ValueError:
            raise ToolError(f"Invalid date {date!r}; use YYYY-MM-DD") from None
        for second in _search_direct(
            db,
            date=second_date,
            origin=first["destination"],
            destination=destination,
            leave_after=first["scheduled_arrival_time_est"],
        ):
            second["date"] = second_date
            results.append([dict(first), second])
    return results


@write
def send_certificate(db: Db, user_id: str, amount: int) -> str:
    """
    Send a certificate to a user. Be careful!

    Args:
        user_id: The ID of the user to book the reservation, such as 'sara_doe_496'.
        amount: The amount of the certificate to send.

    Returns:
        A message indicating the certificate was sent.

    Raises:
        ValueError: If the user is not found.
    """
    user = _user(db, user_id)
    for number in NEW_CERTIFICATE_NUMBERS:
        payment_id = f"certificate_{number}"
        if payment_id not in user["payment_methods"]:
            user["payment_methods"][payment_id] = {
                "source": "certificate",
                "id": payment_id,
                "amount": float(amount),
            }
            return f"Certificate {payment_id} added to user {user_id} with amount {amount}."
    raise ToolError("Too many certificates")


@write
def update_reservation_baggages(
    db: Db, reservation_id: str, total_baggages: int, nonfree_baggages: int, payment_id: str
) -> dict[str, Any]:
    """
    Update the baggage information of a reservation.

    Args:
        reservation_id: The reservation ID, such as 'ZFA04Y'
        total_baggages: The updated total number of baggage items included in the reservation.
        nonfree_baggages: The updated number of non-free baggage items included in the reservation.
        payment_id: The payment id stored in user profile, such as 'credit_card_7815826', 'gift_card_7815826', 'certificate_7815826'.

    Returns:
        The updated reservation.

    Raises:
        ValueError: If the reservation is not found.
        ValueError: If the user is not found.
        ValueError: If the payment method is not found.
        ValueError: If the certificate cannot be used to update reservation.
        ValueError: If the gift card balance is not enough.
    """
    reservation = _reservation(db, reservation_id)
    user = _user(db, reservation["user_id"])
    total_price = 50 * max(0, nonfree_baggages - reservation["nonfree_baggages"])
    payment = _charge_for_update(user, payment_id, total_price)
    if payment is not None:
        reservation["payment_history"].append(payment)
    reservation["total_baggages"] = total_baggages
    reservation["nonfree_baggages"] = nonfree_baggages
    return reservation


@write
def update_reservation_flights(
    db: Db, reservation_id: str, cabin: CabinClass, flights: list[FlightInfo], payment_id: str
) -> dict[str, Any]:
    """
    Update the flight information of a reservation.


    Args:
        reservation_id: The reservation ID, such as 'ZFA04Y'.
        cabin: The cabin class of the reservation
        flights: An array of objects containing details about each piece of flight in the ENTIRE new reservation. Even if the a flight segment is not changed, it should still be included in the array.
        payment_id: The payment id stored in user profile, such as 'credit_card_7815826', 'gift_card_7815826', 'certificate_7815826'.

    Returns:
        The updated reservation.

    Raises:
        ValueError: If the reservation is not found.
        ValueError: If the user is not found.
        ValueError: If the payment method is not found.
        ValueError: If the certificate cannot be used to update reservation.
        ValueError: If the gift card balance is not enough.
    """
    reservation = _reservation(db, reservation_id)
    user = _user(db, reservation["user_id"])
    n_passengers = len(reservation["passengers"])
    total_price = 0
    new_flights = []
    for info in flights:
        flight = _flight(db, info["flight_number"])
        number = flight["flight_number"]
        # A segment kept in the same cabin keeps the price paid for it.
        kept = next(
            (
                segment
                for segment in reservation["flights"]
                if segment["flight_number"] == number
                and segment["date"] == info["date"]
                and cabin == reservation["cabin"]
            ),
            None,
        )
        if kept is not None:
            total_price += kept["price"] * n_passengers
            new_flights.append(kept)
            continue
        day = _flight_date(db, number, info["date"])
        if day["status"] != "available":
            raise ToolError(f"Flight {number} not available on date {info['date']}")
        if day["available_seats"][cabin] < n_passengers:
            raise ToolError(f"Not enough seats on flight {number}")
        segment = {
            "flight_number": number,
            "date": info["date"],
            "price": day["prices"][cabin],
            "origin": flight["origin"],
            "destination": flight["destination"],
        }
        total_price += segment["price"] * n_passengers
        new_flights.append(segment)
    total_price -= sum(segment["price"] for segment in reservation["flights"]) * n_passengers
    payment = _charge_for_update(user, payment_id, total_price)
    if payment is not None:
        reservation["payment_history"].append(payment)
    reservation["flights"] = new_flights
    reservation["cabin"] = cabin
    return reservation


@write
def update_reservation_passengers(db: Db, reservation_id: str, passengers: list[Passenger]) -> dict[str, Any]:
    """
    Update the passenger information of a reservation.

    Args:
        reservation_id: The reservation ID, such as 'ZFA04Y'.
        passengers: An array of objects containing details about each passenger.

    Returns:
        The updated reservation.

    Raises:
        ValueError: If the reservation is not found.
        ValueError: If the number of passengers does not match.
    """
    reservation = _reservation(db, reservation_id)
    if len(passengers) != len(reservation["passengers"]):
        raise ToolError("Number of passengers does not match")
    reservation["passengers"] = [dict(p) for p in passengers]
    return reservation


@read
def get_flight_status(db: Db, flight_number: str, date: str) -> str:
    """
    Get the status of a flight.

    Args:
        flight_number: The flight number.
        date: The date of the flight.

    Returns:
        The status of the flight.

    Raises:
        ValueError: If the flight is not found.
    """
    return _flight_date(db, flight_number, date)["status"]


TOOLS = [
    book_reservation,
    calculate,
    cancel_reservation,
    get_reservation_details,
    get_user_details,
    list_all_airports,
    search_direct_flight,
    search_onestop_flight,
    send_certificate,
    transfer_to_human_agents,
    update_reservation_baggages,
    update_reservation_flights,
    update_reservation_passengers,
    get_flight_status,
]
