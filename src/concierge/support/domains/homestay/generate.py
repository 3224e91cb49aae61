"""The homestay demo database: hand-written story records for the tasks, plus seeded filler.

The generator uses its own small PRNG (xorshift64*) rather than ``random`` so that the database,
and therefore the task ids and amounts, are the same on every Python version.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

TODAY = date(2025, 6, 2)
SEED = 20250602

CITIES = ("Lisbon", "Amsterdam", "Barcelona", "Kyoto", "Cape Town", "Montreal", "Edinburgh", "Oaxaca")
KINDS = ("apartment", "house", "private room", "cabin", "loft", "studio")
AMENITIES = (
    "wifi",
    "kitchen",
    "washer",
    "air conditioning",
    "heating",
    "workspace",
    "parking",
    "balcony",
    "crib",
    "pool",
    "elevator",
    "self check-in",
)
ADJECTIVES = (
    "Sunny",
    "Quiet",
    "Cosy",
    "Bright",
    "Spacious",
    "Charming",
    "Modern",
    "Rustic",
    "Airy",
    "Hidden",
)
NOUNS = {
    "apartment": ("flat", "apartment", "terrace flat"),
    "house": ("garden house", "townhouse", "family home"),
    "private room": ("courtyard room", "guest room", "attic room"),
    "cabin": ("cabin", "retreat", "hideaway"),
    "loft": ("loft", "warehouse loft", "skylight loft"),
    "studio": ("studio", "garden studio", "micro studio"),
}
FIRST = (
    "Ava",
    "Ben",
    "Chloe",
    "Diego",
    "Elif",
    "Felix",
    "Hana",
    "Ivan",
    "Jonas",
    "Kira",
    "Leo",
    "Mira",
    "Nia",
    "Oscar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sami",
    "Tara",
    "Umar",
    "Vera",
    "Wen",
    "Yara",
    "Zane",
)
LAST = (
    "Alvarez",
    "Brown",
    "Costa",
    "Dubois",
    "Evans",
    "Fischer",
    "Garcia",
    "Hansen",
    "Ito",
    "Jensen",
    "Khan",
    "Lopez",
    "Meyer",
    "Novak",
    "Olsen",
    "Petrov",
    "Quint",
    "Silva",
    "Torres",
    "Ueda",
    "Vance",
    "Weber",
)
HOSTS = (
    "Ana",
    "Pieter",
    "Jordi",
    "Yuki",
    "Thabo",
    "Camille",
    "Fiona",
    "Mateo",
    "Ines",
    "Kenji",
    "Marta",
    "Rui",
)
BRANDS = ("visa", "mastercard", "amex")


class Rng:
    """xorshift64*: tiny, seeded, identical everywhere."""

    def __init__(self, seed: int) -> None:
        self.state = (seed or 1) & 0xFFFFFFFFFFFFFFFF

    def next(self) -> int:
        x = self.state
        x ^= x >> 12
        x ^= (x << 25) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 27
        self.state = x
        return (x * 0x2545F4914F6CDD1D) & 0xFFFFFFFFFFFFFFFF

    def below(self, n: int) -> int:
        return (self.next() >> 11) % n

    def between(self, low: int, high: int) -> int:
        return low + self.below(high - low + 1)

    def choice(self, items: tuple[Any, ...] | list[Any]) -> Any:
        return items[self.below(len(items))]

    def sample(self, items: tuple[Any, ...], k: int) -> list[Any]:
        pool = list(items)
        return [pool.pop(self.below(len(pool))) for _ in range(min(k, len(pool)))]


def _d(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).isoformat()


def _guest(
    guest_id: str,
    first: str,
    last: str,
    email: str,
    phone: str,
    card: tuple[str, str, str],
    wallet: tuple[str, float] | None,
) -> dict[str, Any]:
    methods: dict[str, Any] = {
        card[0]: {"source": "credit_card", "id": card[0], "brand": card[1], "last_four": card[2]}
    }
    if wallet is not None:
        methods[wallet[0]] = {"source": "wallet", "id": wallet[0], "balance": wallet[1]}
    return {
        "guest_id": guest_id,
        "name": {"first_name": first, "last_name": last},
        "email": email,
        "phone": phone,
        "payment_methods": methods,
        "reservations": [],
    }


def _listing(
    listing_id: str,
    title: str,
    city: str,
    kind: str,
    host: str,
    max_guests: int,
    bedrooms: int,
    nightly_rate: int,
    cleaning_fee: int,
    policy: str,
    amenities: list[str],
    rating: float,
) -> dict[str, Any]:
    return {
        "listing_id": listing_id,
        "title": title,
        "city": city,
        "kind": kind,
        "host_name": host,
        "max_guests": max_guests,
        "bedrooms": bedrooms,
        "nightly_rate": float(nightly_rate),
        "cleaning_fee": float(cleaning_fee),
        "cancellation_policy": policy,
        "amenities": amenities,
        "rating": rating,
    }


def _reservation(
    reservation_id: str,
    guest: dict[str, Any],
    listing: dict[str, Any],
    check_in: str,
    check_out: str,
    guests: int,
    method_id: str,
    created_at: str,
    status: str | None = None,
) -> dict[str, Any]:
    nights = (date.fromisoformat(check_out) - date.fromisoformat(check_in)).days
    total = round(nights * listing["nightly_rate"] + listing["cleaning_fee"], 2)
    if status is None:
        status = "completed" if date.fromisoformat(check_out) <= TODAY else "confirmed"
    record = {
        "reservation_id": reservation_id,
        "guest_id": guest["guest_id"],
        "listing_id": listing["listing_id"],
        "check_in": check_in,
        "check_out": check_out,
        "nights": nights,
        "guests": guests,
        "nightly_rate": listing["nightly_rate"],
        "cleaning_fee": listing["cleaning_fee"],
        "total": total,
        "cancellation_policy": listing["cancellation_policy"],
        "status": status,
        "created_at": created_at,
        "payment_history": [{"type": "payment", "amount": total, "payment_method_id": method_id}],
    }
    if status == "cancelled":
        record["cancel_reason"] = "change of plans"
        record["payment_history"].append({"type": "refund", "amount": total, "payment_method_id": method_id})
    guest["reservations"].append(reservation_id)
    return record


# Story records: the tasks in tasks.json are about these people and stays.
_STORY_LISTINGS = [
    (
        "L101",
        "Tiled apartment above Alfama",
        "Lisbon",
        "apartment",
        "Ana",
        3,
        1,
        120,
        35,
        "flexible",
        ["wifi", "kitchen", "washer", "balcony"],
        4.8,
    ),
    (
        "L102",
        "Canal-side loft in Jordaan",
        "Amsterdam",
        "loft",
        "Pieter",
        4,
        2,
        150,
        40,
        "moderate",
        ["wifi", "kitchen", "heating", "workspace"],
        4.7,
    ),
    (
        "L103",
        "Machiya townhouse near Gion",
        "Kyoto",
        "house",
        "Yuki",
        5,
        2,
        210,
        60,
        "strict",
        ["wifi", "kitchen", "air conditioning", "washer"],
        4.9,
    ),
    (
        "L104",
        "Stone cottage on the Royal Mile",
        "Edinburgh",
        "house",
        "Fiona",
        4,
        2,
        180,
        50,
        "strict",
        ["wifi", "kitchen", "heating", "washer"],
        4.6,
    ),
    (
        "L105",
        "Garden studio in Gràcia",
        "Barcelona",
        "studio",
        "Jordi",
        2,
        1,
        95,
        30,
        "flexible",
        ["wifi", "kitchen", "air conditioning"],
        4.5,
    ),
    (
        "L106",
        "Plateau duplex with terrace",
        "Montreal",
        "apartment",
        "Camille",
        4,
        2,
        140,
        45,
        "moderate",
        ["wifi", "kitchen", "washer", "balcony"],
        4.7,
    ),
    (
        "L107",
        "Courtyard rooms near Santo Domingo",
        "Oaxaca",
        "private room",
        "Mateo",
        2,
        1,
        70,
        20,
        "moderate",
        ["wifi", "air conditioning", "self check-in"],
        4.4,
    ),
    (
        "L108",
        "Sea-view flat in Sea Point",
        "Cape Town",
        "apartment",
        "Thabo",
        4,
        2,
        130,
        45,
        "strict",
        ["wifi", "kitchen", "pool", "parking"],
        4.8,
    ),
    (
        "L109",
        "Bamboo garden house in Arashiyama",
        "Kyoto",
        "house",
        "Kenji",
        6,
        3,
        260,
        70,
        "flexible",
        ["wifi", "kitchen", "heating", "parking"],
        4.9,
    ),
    (
        "L110",
        "Bairro Alto attic",
        "Lisbon",
        "loft",
        "Rui",
        2,
        1,
        88,
        25,
        "moderate",
        ["wifi", "kitchen", "self check-in"],
        4.3,
    ),
]

_STORY_GUESTS = [
    (
        "maya_okafor_1042",
        "Maya",
        "Okafor",
        "maya.okafor@example.com",
        "+1-415-555-0142",
        ("credit_card_1042", "visa", "4242"),
        None,
    ),
    (
        "lucas_moreau_2201",
        "Lucas",
        "Moreau",
        "lucas.moreau@example.com",
        "+33-6-5555-2201",
        ("credit_card_2201", "mastercard", "1881"),
        None,
    ),
    (
        "aiko_tanaka_3310",
        "Aiko",
        "Tanaka",
        "aiko.tanaka@example.com",
        "+81-90-5555-3310",
        ("credit_card_3310", "visa", "7310"),
        ("wallet_3310", 40.0),
    ),
    (
        "daniel_reyes_4478",
        "Daniel",
        "Reyes",
        "daniel.reyes@example.com",
        "+1-312-555-4478",
        ("credit_card_4478", "amex", "0044"),
        ("wallet_4478", 15.5),
    ),
    (
        "sofia_rossi_5120",
        "Sofia",
        "Rossi",
        "sofia.rossi@example.com",
        "+39-347-555-5120",
        ("credit_card_5120", "visa", "5120"),
        ("wallet_5120", 50.0),
    ),
    (
        "omar_haddad_6034",
        "Omar",
        "Haddad",
        "omar.haddad@example.com",
        "+1-647-555-6034",
        ("credit_card_6034", "mastercard", "6034"),
        None,
    ),
    (
        "emma_schmidt_7215",
        "Emma",
        "Schmidt",
        "emma.schmidt@example.com",
        "+49-151-5555-7215",
        ("credit_card_7215", "visa", "7215"),
        None,
    ),
    (
        "noah_becker_8120",
        "Noah",
        "Becker",
        "noah.becker@example.com",
        "+27-82-555-8120",
        ("credit_card_8120", "visa", "8120"),
        ("wallet_8120", 0.0),
    ),
    (
        "grace_kim_9051",
        "Grace",
        "Kim",
        "grace.kim@example.com",
        "+1-206-555-9051",
        ("credit_card_9051", "mastercard", "9051"),
        None,
    ),
    (
        "liam_obrien_9307",
        "Liam",
        "O'Brien",
        "liam.obrien@example.com",
        "+353-87-555-9307",
        ("credit_card_9307", "visa", "9307"),
        None,
    ),
    (
        "ines_duarte_1188",
        "Ines",
        "Duarte",
        "ines.duarte@example.com",
        "+351-91-555-1188",
        ("credit_card_1188", "visa", "1188"),
        None,
    ),
]

# (reservation id, guest index, listing id, check-in offset, nights, guests, pays with wallet?, status)
_STORY_STAYS = [
    ("HS10001", 0, "L101", 10, 3, 2, False, None),  # flexible, 10 days out: full refund
    ("HS10002", 1, "L102", 3, 4, 2, False, None),  # moderate, 3 days out: half the nights + cleaning
    ("HS10003", 2, "L103", 4, 5, 3, False, None),  # strict, 4 days out: cleaning fee only
    ("HS10004", 3, "L104", 10, 2, 2, True, None),  # strict, 10 days out, paid by wallet: half + cleaning
    ("HS10005", 4, "L105", 18, 3, 2, False, None),  # flexible: dates can change
    ("HS10006", 5, "L106", 2, 3, 2, False, None),  # moderate, 2 days out: dates cannot change
    ("HS10007", 6, "L107", 16, 2, 1, False, None),  # moderate, 16 days out: free to move
    ("HS10008", 10, "L107", 19, 3, 2, False, None),  # Ines holds 06-21..06-24 on Emma's listing
    ("HS10009", 7, "L108", -2, 4, 2, False, None),  # stay in progress: service refund
    ("HS10010", 8, "L109", -1, 5, 4, False, None),  # stay in progress: cannot cancel
    ("HS10011", 9, "L110", -40, 3, 2, False, None),  # Liam: a completed Lisbon stay
    ("HS10012", 9, "L109", 20, 2, 2, False, None),  # Liam: the upcoming Kyoto stay
]


def generate(n_guests: int = 100, n_listings: int = 40, seed: int = SEED) -> dict[str, Any]:
    """The demo database: ``{"guests", "listings", "reservations"}`` tables."""
    rng = Rng(seed)
    guests: dict[str, Any] = {}
    listings: dict[str, Any] = {}
    reservations: dict[str, Any] = {}

    for args in _STORY_LISTINGS:
        listings[args[0]] = _listing(*args)
    for args in _STORY_GUESTS:
        guests[args[0]] = _guest(*args)

    story_guests = list(guests.values())
    for rid, gi, lid, offset, nights, n_people, wallet, status in _STORY_STAYS:
        guest = story_guests[gi]
        method = next(
            m for m in guest["payment_methods"] if m.startswith("wallet" if wallet else "credit_card")
        )
        reservations[rid] = _reservation(
            rid,
            guest,
            listings[lid],
            _d(offset),
            _d(offset + nights),
            n_people,
            method,
            _d(min(offset, 0) - 30),
            status,
        )

    number = 111
    while len(listings) < n_listings:
        city = CITIES[(number - 111) % len(CITIES)]
        kind = rng.choice(KINDS)
        bedrooms = 1 if kind in ("private room", "studio") else rng.between(1, 3)
        listing_id = f"L{number}"
        listings[listing_id] = _listing(
            listing_id,
            f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS[kind])} in {city}",
            city,
            kind,
            rng.choice(HOSTS),
            bedrooms * 2,
            bedrooms,
            rng.between(12, 60) * 5,
            rng.between(4, 18) * 5,
            rng.choice(("flexible", "moderate", "strict")),
            sorted(rng.sample(AMENITIES, rng.between(3, 7))),
            rng.between(38, 50) / 10,
        )
        number += 1

    while len(guests) < n_guests:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        digits = rng.between(1000, 9999)
        guest_id = f"{first}_{last}_{digits}".lower()
        if guest_id in guests:
            continue
        card = (
            f"credit_card_{digits}{rng.between(10, 99)}",
            rng.choice(BRANDS),
            f"{rng.between(0, 9999):04d}",
        )
        wallet = (f"wallet_{digits}", float(rng.between(0, 30) * 5)) if rng.below(3) == 0 else None
        guests[guest_id] = _guest(
            guest_id,
            first,
            last,
            f"{first}.{last}{digits % 100}@example.com".lower(),
            f"+1-555-{digits:04d}",
            card,
            wallet,
        )

    # Filler stays: walk each listing's calendar. Story listings stay free for 45 days either side
    # of today, so the date changes in the tasks always find the nights they expect.
    story_ids = {g["guest_id"] for g in story_guests}
    filler_guests = [g for g in guests.values() if g["guest_id"] not in story_ids]
    serial = 20001
    for listing in listings.values():
        quiet = (-45, 45) if any(listing["listing_id"] == args[0] for args in _STORY_LISTINGS) else (0, 0)
        day = -75 + rng.below(10)
        while day < 110:
            nights = rng.between(2, 7)
            check_in, check_out = _d(day), _d(day + nights)
            if not (day < quiet[1] and quiet[0] < day + nights):
                guest = rng.choice(filler_guests)
                status = "cancelled" if rng.below(12) == 0 else None
                method = next(iter(guest["payment_methods"]))
                rid = f"HS{serial}"
                reservations[rid] = _reservation(
                    rid,
                    guest,
                    listing,
                    check_in,
                    check_out,
                    rng.between(1, listing["max_guests"]),
                    method,
                    _d(day - rng.between(7, 60)),
                    status,
                )
                serial += 1
            day += nights + rng.between(1, 14)
    return {"guests": guests, "listings": listings, "reservations": reservations}


def write_db(path: Path | str) -> Path:
    """Write the generated database as JSON (for people who want to inspect or edit it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(generate(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
