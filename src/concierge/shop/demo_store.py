"""A deterministic demo store: a realistic catalogue and shoppers with latent tastes.

``generate_demo_store(seed, n_products, n_shoppers)`` returns product records (the JSONL form of
:mod:`concierge.shop.catalog`) and interaction records (``user``, ``item``, ``event``, ``timestamp``).
Same seed and sizes -> byte-identical output (pure Python ``random`` for the catalogue, a seeded
numpy ``Generator`` for the shoppers).

Shoppers are simulated, not sampled uniformly, so recommenders have real signal to find:

* each shopper has 1-3 favourite leaf categories, 2-3 favourite colours and a price tier
  (budget / mid / premium brands); products also carry a popularity weight;
* a shopper visits in sessions spread over 120 days; a session browses one category (a favourite,
  a complement of the last purchase -- tent -> sleeping bag -- or, sometimes, anything);
* views are drawn by a softmax over popularity + colour match + tier match; views turn into carts,
  and carts into purchases, with a probability rising with the same utility. Carts and purchases
  name the exact variant (favourite colour, in stock, the shopper's size where there is one);
  views name the product.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------------------------------
# Vocabulary

COLOURS = (
    "black", "white", "grey", "navy", "blue", "red", "green", "olive", "beige", "brown",
    "pink", "purple", "yellow", "orange", "cream", "burgundy", "teal",
)  # fmt: skip
NEUTRALS = ("black", "white", "grey", "navy", "beige", "brown", "cream")
TIERS = ("budget", "mid", "premium")
TIER_PRICE = {"budget": 0.6, "mid": 1.0, "premium": 1.8}

APPAREL_SIZES = ("XS", "S", "M", "L", "XL", "XXL")
WOMEN_SHOE_SIZES = ("36", "37", "38", "39", "40", "41", "42")
MEN_SHOE_SIZES = ("40", "41", "42", "43", "44", "45", "46")

# Written shopper requests with their hard constraints (the shop tests and the proof report use them).
DEMO_REQUESTS = Path(__file__).with_name("demo_requests.yaml")


@dataclass(frozen=True)
class _Leaf:
    path: str
    dept: str  # key into BRANDS / DETAILS
    nouns: tuple[str, ...]
    materials: tuple[str, ...]
    price: tuple[float, float]  # mid-tier price band
    size_axis: str | None = None  # option name for the second axis
    sizes: tuple[str, ...] = ()
    colours: tuple[str, ...] = COLOURS
    extras: tuple[tuple[str, tuple[str, ...]], ...] = ()  # product-level attributes


def _leaf(path: str, dept: str, nouns: str, materials: str, price: tuple[float, float], **kw: Any) -> _Leaf:
    return _Leaf(path, dept, tuple(nouns.split("|")), tuple(materials.split("|")), price, **kw)


_FIT = ("fit", ("regular", "slim", "relaxed", "oversized"))
_SEASON = ("season", ("all-season", "summer", "winter"))
LEAVES: tuple[_Leaf, ...] = (
    _leaf("Women > Clothing > Dresses", "apparel", "Wrap Dress|Midi Dress|Maxi Dress|Shirt Dress|Slip Dress|Sundress",
          "cotton|linen|silk|viscose|polyester|jersey", (35, 160), size_axis="size", sizes=APPAREL_SIZES,
          extras=(_FIT, ("pattern", ("solid", "floral", "striped", "polka dot")))),
    _leaf("Women > Clothing > Tops", "apparel", "Blouse|T-Shirt|Tank Top|Cardigan|Sweater|Tunic",
          "cotton|linen|silk|merino wool|cashmere|polyester", (18, 120), size_axis="size", sizes=APPAREL_SIZES,
          extras=(_FIT,)),
    _leaf("Women > Clothing > Trousers", "apparel", "Wide-Leg Trousers|Straight Jeans|Skinny Jeans|Culottes|Chinos",
          "denim|cotton|linen|wool blend", (30, 140), size_axis="size", sizes=APPAREL_SIZES,
          colours=("black", "navy", "blue", "beige", "white", "olive", "grey"), extras=(_FIT,)),
    _leaf("Men > Clothing > Shirts", "apparel", "Oxford Shirt|Flannel Shirt|Polo Shirt|Linen Shirt|T-Shirt|Henley",
          "cotton|linen|flannel|pique cotton", (20, 110), size_axis="size", sizes=APPAREL_SIZES,
          extras=(_FIT, ("pattern", ("solid", "checked", "striped")))),
    _leaf("Men > Clothing > Jackets", "apparel", "Bomber Jacket|Denim Jacket|Parka|Puffer Jacket|Blazer|Rain Jacket",
          "nylon|denim|wool|leather|recycled polyester|cotton twill", (60, 320), size_axis="size",
          sizes=APPAREL_SIZES, colours=("black", "navy", "olive", "brown", "grey", "beige", "blue", "burgundy"),
          extras=(_SEASON, ("waterproof", ("yes", "no")))),
    _leaf("Men > Clothing > Trousers", "apparel", "Chinos|Slim Jeans|Cargo Pants|Joggers|Corduroy Trousers",
          "denim|cotton|cotton twill|corduroy", (30, 130), size_axis="size", sizes=APPAREL_SIZES,
          colours=("black", "navy", "blue", "beige", "olive", "grey", "brown"), extras=(_FIT,)),
    _leaf("Women > Shoes > Sneakers", "shoes", "Running Sneaker|Canvas Sneaker|Low-Top Sneaker|Platform Sneaker|Trail Runner",
          "canvas|leather|suede|mesh|knit|vegan leather", (45, 180), size_axis="size", sizes=WOMEN_SHOE_SIZES,
          extras=(("closure", ("laces", "slip-on", "velcro")),)),
    _leaf("Men > Shoes > Sneakers", "shoes", "Running Sneaker|Canvas Sneaker|Low-Top Sneaker|High-Top Sneaker|Trail Runner",
          "canvas|leather|suede|mesh|knit", (50, 190), size_axis="size", sizes=MEN_SHOE_SIZES,
          extras=(("closure", ("laces", "slip-on")),)),
    _leaf("Women > Shoes > Boots", "shoes", "Chelsea Boot|Ankle Boot|Knee-High Boot|Combat Boot",
          "leather|suede|vegan leather|rubber", (80, 260), size_axis="size", sizes=WOMEN_SHOE_SIZES,
          colours=("black", "brown", "beige", "burgundy", "grey", "olive"), extras=(("heel", ("flat", "block", "stiletto")),)),
    _leaf("Men > Shoes > Boots", "shoes", "Chelsea Boot|Work Boot|Hiking Boot|Chukka Boot",
          "leather|suede|nubuck|rubber", (90, 280), size_axis="size", sizes=MEN_SHOE_SIZES,
          colours=("black", "brown", "beige", "olive", "grey"), extras=(("waterproof", ("yes", "no")),)),
    _leaf("Women > Shoes > Sandals", "shoes", "Slide Sandal|Strappy Sandal|Espadrille|Platform Sandal",
          "leather|suede|raffia|rubber|cork", (25, 120), size_axis="size", sizes=WOMEN_SHOE_SIZES,
          colours=("black", "white", "beige", "brown", "pink", "yellow", "cream")),
    _leaf("Bags > Backpacks", "bags", "Daypack|Laptop Backpack|Rolltop Backpack|Mini Backpack|Travel Backpack",
          "nylon|canvas|leather|recycled polyester", (35, 200),
          extras=(("capacity", ("10 L", "18 L", "22 L", "28 L", "35 L")), ("laptop sleeve", ("13 in", "15 in", "16 in", "none")))),
    _leaf("Bags > Handbags", "bags", "Tote|Crossbody Bag|Shoulder Bag|Clutch|Bucket Bag",
          "leather|vegan leather|canvas|straw|suede", (40, 380)),
    _leaf("Bags > Travel", "bags", "Duffel Bag|Carry-On Suitcase|Weekender|Toiletry Bag|Packing Cubes",
          "nylon|polycarbonate|canvas|leather", (30, 340), colours=("black", "navy", "grey", "olive", "brown", "blue", "red")),
    _leaf("Home > Bedding", "home", "Duvet Cover|Sheet Set|Pillowcase Pair|Throw Blanket|Quilt",
          "cotton|linen|bamboo|flannel|percale cotton", (30, 220), size_axis="size",
          sizes=("Twin", "Full", "Queen", "King"), colours=NEUTRALS + ("blue", "green", "pink", "teal"),
          extras=(("thread count", ("200", "300", "400", "600")),)),
    _leaf("Home > Decor > Lighting", "home", "Table Lamp|Floor Lamp|Pendant Light|Desk Lamp|Wall Sconce",
          "brass|ceramic|rattan|glass|steel|oak", (35, 280), colours=("black", "white", "brass", "green", "beige", "grey"),
          extras=(("bulb", ("E26", "E27", "integrated LED")),)),
    _leaf("Home > Decor > Cushions & Throws", "home", "Cushion Cover|Throw Pillow|Knit Throw|Floor Cushion",
          "cotton|linen|velvet|wool|boucle", (15, 120), size_axis="size", sizes=("40 x 40 cm", "50 x 50 cm", "60 x 60 cm")),
    _leaf("Home > Storage", "home", "Storage Basket|Shelf Unit|Drawer Organizer|Laundry Hamper",
          "seagrass|cotton rope|oak|steel|bamboo", (12, 160), colours=("natural", "white", "black", "grey", "beige")),
    _leaf("Kitchen > Cookware", "kitchen", "Frying Pan|Saucepan|Dutch Oven|Wok|Stockpot|Grill Pan",
          "cast iron|stainless steel|ceramic|carbon steel|nonstick aluminium", (25, 260), size_axis="size",
          sizes=("20 cm", "24 cm", "28 cm", "32 cm"), colours=("black", "silver", "red", "blue", "cream", "green"),
          extras=(("induction ready", ("yes", "no")), ("dishwasher safe", ("yes", "no")))),
    _leaf("Kitchen > Tableware", "kitchen", "Dinner Plate Set|Mug|Bowl Set|Glass Tumbler Set|Serving Platter",
          "stoneware|porcelain|glass|bamboo|enamel", (10, 120), colours=("white", "cream", "grey", "blue", "green", "black"),
          extras=(("pieces", ("1", "2", "4", "6", "12")),)),
    _leaf("Kitchen > Appliances", "kitchen", "Electric Kettle|Blender|Toaster|Coffee Grinder|Hand Mixer|Espresso Machine",
          "stainless steel|plastic|glass|brushed aluminium", (25, 450), colours=("black", "white", "silver", "red", "cream"),
          extras=(("power", ("600 W", "1000 W", "1500 W", "2200 W")),)),
    _leaf("Kitchen > Storage", "kitchen", "Food Container Set|Water Bottle|Lunch Box|Spice Jar Set",
          "glass|stainless steel|bamboo|BPA-free plastic", (8, 60), colours=("clear", "black", "white", "green", "blue", "pink")),
    _leaf("Electronics > Accessories > Headphones", "electronics", "Wireless Earbuds|Over-Ear Headphones|Sport Earphones|On-Ear Headphones",
          "plastic|aluminium|leather", (20, 350), colours=("black", "white", "navy", "grey", "pink", "green"),
          extras=(("noise cancelling", ("yes", "no")), ("battery life", ("8 h", "20 h", "30 h", "40 h")))),
    _leaf("Electronics > Accessories > Phone Cases", "electronics", "Phone Case|Wallet Case|Rugged Case|Clear Case",
          "silicone|leather|TPU|recycled plastic", (12, 60), size_axis="model",
          sizes=("iPhone 15", "iPhone 15 Pro", "Galaxy S24", "Pixel 8")),
    _leaf("Electronics > Accessories > Chargers & Cables", "electronics", "USB-C Charger|Wireless Charging Pad|Power Bank|USB-C Cable",
          "plastic|braided nylon|aluminium", (10, 90), colours=("black", "white", "grey"),
          extras=(("wattage", ("20 W", "30 W", "45 W", "65 W", "100 W")),)),
    _leaf("Electronics > Accessories > Laptop Sleeves", "electronics", "Laptop Sleeve|Tablet Sleeve|Laptop Stand",
          "neoprene|felt|leather|aluminium", (18, 90), size_axis="size", sizes=("13 in", "14 in", "15 in", "16 in")),
    _leaf("Beauty > Skincare", "beauty", "Moisturizer|Serum|Cleanser|Sunscreen SPF 50|Eye Cream|Face Mask",
          "hyaluronic acid|vitamin C|retinol|niacinamide|aloe vera", (9, 95), size_axis="volume",
          sizes=("30 ml", "50 ml", "100 ml"), colours=("none",),
          extras=(("skin type", ("dry", "oily", "combination", "sensitive", "all")),)),
    _leaf("Beauty > Fragrance", "beauty", "Eau de Parfum|Eau de Toilette|Body Mist|Perfume Oil",
          "citrus|floral|woody|amber|fresh", (20, 180), size_axis="volume", sizes=("30 ml", "50 ml", "100 ml"),
          colours=("none",), extras=(("notes", ("bergamot", "jasmine", "sandalwood", "vanilla", "vetiver")),)),
    _leaf("Beauty > Makeup", "beauty", "Lipstick|Mascara|Foundation|Blush|Eyeliner",
          "matte|satin|gloss|cream", (8, 55), colours=("red", "pink", "nude", "brown", "black", "burgundy", "beige")),
    _leaf("Outdoor > Camping > Tents", "outdoor", "Dome Tent|Backpacking Tent|Family Tent|Pop-Up Tent",
          "ripstop nylon|polyester|canvas", (70, 520), size_axis="capacity", sizes=("1-person", "2-person", "4-person", "6-person"),
          colours=("green", "orange", "grey", "blue", "yellow", "olive"), extras=(_SEASON,)),
    _leaf("Outdoor > Camping > Sleeping Bags", "outdoor", "Mummy Sleeping Bag|Rectangular Sleeping Bag|Down Sleeping Bag|Sleeping Pad",
          "down|synthetic insulation|nylon", (40, 380), colours=("green", "blue", "red", "orange", "grey", "black"),
          extras=(("temperature rating", ("-10 C", "-5 C", "0 C", "5 C", "10 C")),)),
    _leaf("Outdoor > Hiking > Jackets", "outdoor", "Rain Shell|Softshell Jacket|Down Jacket|Fleece Jacket|Insulated Vest",
          "Gore-Tex|ripstop nylon|down|fleece|recycled polyester", (60, 420), size_axis="size", sizes=APPAREL_SIZES,
          colours=("black", "navy", "red", "green", "orange", "blue", "yellow", "grey"), extras=(("waterproof", ("yes", "no")),)),
    _leaf("Outdoor > Hiking > Gear", "outdoor", "Trekking Poles|Headlamp|Water Filter|Hydration Pack|Camp Stove",
          "aluminium|carbon fiber|plastic|titanium", (15, 160), colours=("black", "red", "blue", "green", "orange")),
    _leaf("Toys > Building Sets", "toys", "Building Blocks Set|Marble Run|Magnetic Tiles|Construction Kit",
          "plastic|wood|magnetic plastic", (15, 120), colours=("multicolor", "natural", "pastel"),
          extras=(("age", ("3+", "4+", "6+", "8+", "12+")), ("pieces", ("50", "100", "250", "500")))),
    _leaf("Toys > Plush", "toys", "Teddy Bear|Plush Bunny|Plush Dinosaur|Plush Whale|Plush Fox",
          "plush polyester|organic cotton|minky", (10, 60), size_axis="size", sizes=("small", "medium", "large"),
          colours=("brown", "cream", "pink", "grey", "blue", "green"), extras=(("age", ("0+", "3+")),)),
    _leaf("Toys > Games & Puzzles", "toys", "Jigsaw Puzzle|Board Game|Card Game|Wooden Puzzle",
          "cardboard|wood|paper", (9, 70), colours=("multicolor",),
          extras=(("age", ("4+", "8+", "12+", "adult")), ("players", ("1", "2-4", "2-6", "3-8")))),
)  # fmt: skip

# leaf -> leaves a shopper often moves on to after buying there (sequential signal).
COMPLEMENTS: dict[str, tuple[str, ...]] = {
    "Women > Clothing > Dresses": ("Women > Shoes > Sandals", "Bags > Handbags"),
    "Women > Clothing > Tops": ("Women > Clothing > Trousers",),
    "Women > Clothing > Trousers": ("Women > Clothing > Tops", "Women > Shoes > Sneakers"),
    "Men > Clothing > Shirts": ("Men > Clothing > Trousers",),
    "Men > Clothing > Trousers": ("Men > Clothing > Shirts", "Men > Shoes > Sneakers"),
    "Men > Clothing > Jackets": ("Men > Shoes > Boots",),
    "Outdoor > Camping > Tents": ("Outdoor > Camping > Sleeping Bags", "Outdoor > Hiking > Gear"),
    "Outdoor > Camping > Sleeping Bags": ("Outdoor > Hiking > Gear",),
    "Outdoor > Hiking > Jackets": ("Outdoor > Hiking > Gear", "Men > Shoes > Boots"),
    "Kitchen > Cookware": ("Kitchen > Tableware", "Kitchen > Storage"),
    "Kitchen > Appliances": ("Kitchen > Tableware",),
    "Home > Bedding": ("Home > Decor > Cushions & Throws",),
    "Home > Decor > Lighting": ("Home > Decor > Cushions & Throws", "Home > Storage"),
    "Electronics > Accessories > Phone Cases": ("Electronics > Accessories > Chargers & Cables",),
    "Electronics > Accessories > Headphones": ("Electronics > Accessories > Chargers & Cables",),
    "Beauty > Skincare": ("Beauty > Makeup",),
    "Beauty > Makeup": ("Beauty > Skincare", "Beauty > Fragrance"),
    "Toys > Building Sets": ("Toys > Games & Puzzles",),
    "Bags > Travel": ("Bags > Backpacks", "Electronics > Accessories > Chargers & Cables"),
}

BRANDS: dict[str, tuple[tuple[str, str], ...]] = {
    "apparel": (("Basicly", "budget"), ("Threadline", "budget"), ("Northwind", "mid"), ("Harbor & Pine", "mid"),
                ("Atelier Nord", "premium"), ("Maison Lune", "premium"), ("Urban Fold", "mid")),
    "shoes": (("Stride", "budget"), ("Pavement Co.", "mid"), ("Kinetic", "mid"), ("Fieldstone", "premium"),
              ("Solea", "premium"), ("Easy Step", "budget")),
    "bags": (("Carryall", "budget"), ("Roam", "mid"), ("Waxwing", "mid"), ("Vellum & Co.", "premium"),
             ("Atelier Nord", "premium")),
    "home": (("Nestly", "budget"), ("Hearth", "mid"), ("Linen Loft", "mid"), ("Oaken", "premium"),
             ("Casa Calma", "premium")),
    "kitchen": (("KitchenCraft", "budget"), ("Copperpot", "mid"), ("Ironclad", "mid"), ("Forge & Flame", "premium"),
                ("Brewline", "mid")),
    "electronics": (("Voltix", "budget"), ("Soundcore Lab", "mid"), ("Lumen", "mid"), ("Aural", "premium"),
                    ("Charge+", "budget")),
    "beauty": (("Glow Lab", "budget"), ("Pure Botanics", "mid"), ("Derma One", "mid"), ("Maison Ambre", "premium")),
    "outdoor": (("Trailhead", "budget"), ("Ridgeline", "mid"), ("Summit Gear", "mid"), ("Alpenglow", "premium"),
                ("Basecamp", "budget")),
    "toys": (("Playful", "budget"), ("Tinker Town", "mid"), ("Woodland Toys", "mid"), ("Little Atlas", "premium")),
}  # fmt: skip

ADJECTIVES = (
    "Classic", "Essential", "Everyday", "Modern", "Heritage", "Lightweight", "Premium", "Relaxed",
    "Signature", "Vintage", "Minimal", "Soft", "Urban", "Coastal", "Nordic", "Weekend", "Studio", "Iconic",
)  # fmt: skip

DETAILS: dict[str, tuple[str, ...]] = {
    "apparel": ("a breathable weave", "reinforced seams", "a flattering cut", "deep side pockets",
                "a soft brushed finish", "easy-care fabric", "a tailored silhouette", "a relaxed drape"),
    "shoes": ("a cushioned footbed", "a grippy rubber outsole", "a padded collar", "a lightweight midsole",
              "a removable insole", "a water-repellent finish", "a flexible sole"),
    "bags": ("a padded laptop compartment", "water-resistant fabric", "an adjustable strap", "a hidden back pocket",
             "magnetic closures", "a roomy main compartment", "sturdy zips"),
    "home": ("a soft hand feel", "a timeless design", "pre-washed fabric", "a hand-finished look",
             "hidden zip closures", "a warm glow", "a sturdy base"),
    "kitchen": ("even heat distribution", "a stay-cool handle", "a dishwasher-safe body", "a non-slip base",
                "a pour spout", "a compact footprint", "a scratch-resistant surface"),
    "electronics": ("fast charging", "a long-lasting battery", "a slim profile", "drop protection",
                    "Bluetooth 5.3", "a tangle-free cable", "a travel-friendly size"),
    "beauty": ("a lightweight texture", "a fragrance-free formula", "dermatologist-tested ingredients",
               "a long-lasting finish", "a vegan formula", "recyclable packaging"),
    "outdoor": ("taped seams", "a packable design", "reflective details", "an ultralight build",
                "quick-dry fabric", "a weatherproof shell", "an ergonomic grip"),
    "toys": ("rounded edges", "non-toxic paints", "a storage bag", "bright colours", "an easy-grip shape",
             "a picture guide"),
}  # fmt: skip

USES: dict[str, tuple[str, ...]] = {
    "apparel": ("the office", "weekends", "travel", "evenings out", "everyday wear", "layering"),
    "shoes": ("city walks", "running", "long days on your feet", "the weekend", "travel"),
    "bags": ("the commute", "weekend trips", "work", "travel", "everyday errands"),
    "home": ("the bedroom", "the living room", "guest rooms", "cosy evenings", "small spaces"),
    "kitchen": ("everyday cooking", "weeknight dinners", "entertaining", "meal prep", "small kitchens"),
    "electronics": ("the commute", "work calls", "the gym", "travel", "the home office"),
    "beauty": ("morning routines", "evening routines", "sensitive skin", "everyday use", "travel"),
    "outdoor": ("day hikes", "backpacking", "car camping", "rainy trails", "alpine weekends"),
    "toys": ("creative play", "family game night", "rainy days", "little hands", "travel"),
}  # fmt: skip

SENTENCES = (
    "A {adj_l} {noun_l} in {material}, made for {use}.",
    "{brand}'s {noun_l} pairs {detail} with {detail2}.",
    "Cut from {material} with {detail}, it is ready for {use}.",
    "This {noun_l} keeps things simple: {detail}, {detail2} and nothing you do not need.",
    "Designed for {use}, with {detail}.",
)
CARE = {
    "apparel": "Machine wash cold; line dry.",
    "shoes": "Wipe clean with a damp cloth.",
    "bags": "Spot clean only.",
    "home": "Machine washable at 40 C.",
    "kitchen": "Hand washing extends its life.",
    "electronics": "Includes a 2-year warranty.",
    "beauty": "For external use only.",
    "outdoor": "Reproof the finish after several washes.",
    "toys": "Meets EN 71 toy safety standards.",
}

SESSION_START = datetime(2024, 1, 1, tzinfo=UTC)
SIMULATION_DAYS = 120


def _round_price(value: float) -> float:
    # Retail-looking prices: 19.99, 24.5, 129.0 ...
    if value < 20:
        return round(round(value) - 0.01, 2) if round(value) >= 2 else 1.99
    return float(round(value / 5) * 5) - (0.01 if value < 200 else 0.0)


def _join(words: Sequence[str]) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _product(rng: random.Random, index: int, leaf: _Leaf) -> tuple[dict[str, Any], str]:
    """One product record and its brand tier."""
    brand, tier = rng.choice(BRANDS[leaf.dept])
    noun = rng.choice(leaf.nouns)
    material = rng.choice(leaf.materials)
    adj = rng.choice(ADJECTIVES)
    shown = " ".join(w[:1].upper() + w[1:] for w in material.split()) if rng.random() < 0.5 else ""
    named = next((m for m in leaf.materials if m.lower() in noun.lower().split()), None)
    if named is not None:
        # "Linen Shirt", "Canvas Sneaker": the noun already names the material.
        material, shown = named, ""
    title = " ".join(part for part in (brand, adj, shown, noun) if part)
    lo, hi = leaf.price
    base = rng.uniform(lo, hi) * TIER_PRICE[tier] * rng.uniform(0.9, 1.1)
    price = _round_price(base)

    n_colours = min(len(leaf.colours), rng.choice((1, 1, 2, 2, 3, 4)))
    colours = rng.sample(leaf.colours, n_colours)
    sizes: list[str] = []
    if leaf.sizes:
        width = rng.randint(min(2, len(leaf.sizes)), len(leaf.sizes))
        start = rng.randint(0, len(leaf.sizes) - width)
        sizes = list(leaf.sizes[start : start + width])
    pid = f"P{index:06d}"
    variants = []
    step = 0.04 if leaf.size_axis in ("size", "capacity", "volume") else 0.0
    for ci, colour in enumerate(colours):
        for si, size in enumerate(sizes or [None]):
            options = {}
            if colour != "none":
                options["color"] = colour
            if size is not None and leaf.size_axis:
                options[leaf.size_axis] = size
            # Larger sizes cost a little more; stock is sometimes zero (sold out).
            vprice = _round_price(base * (1 + step * si)) if step else price
            stock = 0 if rng.random() < 0.12 else rng.randint(1, 60)
            variants.append(
                {"id": f"{pid}-{len(variants) + 1:02d}", "options": options, "price": vprice, "stock": stock}
            )
            if len(variants) >= 16:
                break
        if len(variants) >= 16 or (ci >= 2 and len(variants) >= 8):
            break

    attributes: dict[str, Any] = {"material": material}
    path = leaf.path.split(" > ")
    if path[0] in ("Women", "Men"):
        attributes["gender"] = path[0].lower()
    for key, values in leaf.extras:
        attributes[key] = rng.choice(values)

    detail, detail2 = rng.sample(DETAILS[leaf.dept], 2)
    use = rng.choice(USES[leaf.dept])
    fill = {
        "adj_l": adj.lower(),
        "noun_l": noun.lower(),
        "material": material,
        "use": use,
        "brand": brand,
        "detail": detail,
        "detail2": detail2,
    }
    first, second = rng.sample(SENTENCES, 2)
    colour_words = [c for c in colours if c != "none"]
    parts = [first.format(**fill), second.format(**fill)]
    if colour_words:
        parts.append(f"Available in {_join(colour_words)}.")
    extra_bits = [f"{key} {attributes[key]}" for key, _ in leaf.extras]
    if extra_bits and rng.random() < 0.7:
        parts.append(f"Specs: {'; '.join(extra_bits)}.")
    parts.append(CARE[leaf.dept])
    record = {
        "id": pid,
        "title": title,
        "description": " ".join(parts),
        "category": leaf.path,
        "brand": brand,
        "price": min(v["price"] for v in variants),
        "currency": "USD",
        "attributes": attributes,
        "image_url": f"https://picsum.photos/seed/{pid}/400/400",
        "variants": variants,
    }
    return record, tier


def generate_products(seed: int = 7, n_products: int = 3000) -> list[dict[str, Any]]:
    """Just the catalogue (see :func:`generate_demo_store`)."""
    return _generate_products(seed, n_products)[0]


def _generate_products(seed: int, n_products: int) -> tuple[list[dict[str, Any]], list[int], list[str]]:
    rng = random.Random(seed)
    # Leaf sizes are uneven (apparel and home are bigger than toys), as in a real shop.
    weights = [3.0 if leaf.dept in ("apparel", "shoes") else 2.0 if leaf.dept in ("home", "kitchen") else 1.4
               for leaf in LEAVES]  # fmt: skip
    products: list[dict[str, Any]] = []
    leaf_of: list[int] = []
    tiers: list[str] = []
    for i in range(n_products):
        li = rng.choices(range(len(LEAVES)), weights)[0]
        record, tier = _product(rng, i + 1, LEAVES[li])
        products.append(record)
        leaf_of.append(li)
        tiers.append(tier)
    return products, leaf_of, tiers


def _simulate(
    seed: int, products: list[dict[str, Any]], leaf_of: list[int], tiers: list[str], n_shoppers: int
) -> list[dict[str, Any]]:
    gen = np.random.default_rng(seed + 1_000_003)
    n_leaves = len(LEAVES)
    leaf_members = [np.flatnonzero(np.asarray(leaf_of) == li) for li in range(n_leaves)]
    leaf_index = {leaf.path: i for i, leaf in enumerate(LEAVES)}
    # Zipf-like popularity: a few hits per category, a long tail.
    log_pop = np.log(gen.pareto(1.2, len(products)) + 1.0)
    tier_idx = np.array([TIERS.index(t) for t in tiers])
    colour_sets = [{v["options"].get("color") for v in p["variants"]} for p in products]
    palette = list(COLOURS)
    events: list[dict[str, Any]] = []
    for u in range(n_shoppers):
        user = f"U{u + 1:05d}"
        populated = [li for li in range(n_leaves) if len(leaf_members[li])]
        favs = list(gen.choice(populated, size=min(len(populated), int(gen.integers(1, 4))), replace=False))
        fav_w = gen.dirichlet(np.ones(len(favs)) * 2.0)
        colours = set(gen.choice(palette, size=int(gen.integers(2, 4)), replace=False).tolist())
        tier = int(gen.choice(3, p=(0.35, 0.45, 0.2)))
        size_pref = float(gen.random())  # position in a size scale: small ... large
        n_sessions = 1 + int(gen.poisson(4))
        starts = np.sort(gen.uniform(0, SIMULATION_DAYS * 86400, n_sessions))
        last_bought: int | None = None
        for start in starts:
            roll = gen.random()
            if last_bought is not None and roll < 0.3 and LEAVES[last_bought].path in COMPLEMENTS:
                options = [leaf_index[c] for c in COMPLEMENTS[LEAVES[last_bought].path]]
                leaf = int(options[int(gen.integers(len(options)))])
            elif roll < 0.9:
                leaf = int(favs[int(gen.choice(len(favs), p=fav_w))])
            else:
                leaf = int(gen.choice(populated))
            members = leaf_members[leaf]
            if not len(members):
                continue
            colour_match = np.array([bool(colour_sets[j] & colours) for j in members], dtype=float)
            utility = (
                log_pop[members]
                + 1.5 * colour_match
                + 1.2 * (tier_idx[members] == tier)
                + gen.gumbel(size=len(members)) * 0.5
            )
            prob = np.exp(utility - utility.max())
            prob /= prob.sum()
            n_views = min(len(members), int(gen.integers(2, 9)))
            viewed = gen.choice(len(members), size=n_views, replace=False, p=prob)
            t = SESSION_START + timedelta(seconds=float(start))
            for pos in viewed:
                j = int(members[pos])
                t += timedelta(seconds=int(gen.integers(20, 240)))
                events.append(_event(user, products[j]["id"], "view", t))
                # About one view in four becomes a cart, more often for items the shopper likes.
                p_cart = 0.3 / (1.0 + np.exp(-(utility[pos] - utility.mean())))
                if gen.random() >= p_cart:
                    continue
                variant = _pick_variant(products[j]["variants"], colours, size_pref)
                if variant is None:
                    continue
                t += timedelta(seconds=int(gen.integers(10, 120)))
                events.append(_event(user, variant["id"], "cart", t))
                if gen.random() < 0.55:
                    t += timedelta(seconds=int(gen.integers(30, 600)))
                    events.append(_event(user, variant["id"], "purchase", t))
                    last_bought = leaf
    events.sort(key=lambda e: (e["timestamp"], e["user"]))
    return events


def _pick_variant(
    variants: list[dict[str, Any]], colours: set[str], size_pref: float
) -> dict[str, Any] | None:
    """The variant a shopper would put in the cart: in stock, a favourite colour, about their size."""
    in_stock = [v for v in variants if v["stock"] > 0]
    if not in_stock:
        return None
    liked = [v for v in in_stock if v["options"].get("color") in colours] or in_stock
    target = round(size_pref * (len(liked) - 1))
    return liked[target]


def _event(user: str, item: str, event: str, ts: datetime) -> dict[str, Any]:
    return {"user": user, "item": item, "event": event, "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ")}


def generate_demo_store(
    seed: int = 7, n_products: int = 3000, n_shoppers: int = 500
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(product records, interaction records), deterministic for a given seed and sizes."""
    products, leaf_of, tiers = _generate_products(seed, n_products)
    interactions = _simulate(seed, products, leaf_of, tiers, n_shoppers) if n_shoppers else []
    return products, interactions


def write_demo_store(
    folder: str | Path, seed: int = 7, n_products: int = 3000, n_shoppers: int = 500
) -> tuple[Path, Path]:
    """Write ``products.jsonl`` and ``interactions.csv`` into ``folder``; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    products, interactions = generate_demo_store(seed, n_products, n_shoppers)
    products_path = folder / "products.jsonl"
    with products_path.open("w", encoding="utf-8") as fh:
        for record in products:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    interactions_path = folder / "interactions.csv"
    with interactions_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["user", "item", "event", "timestamp"])
        writer.writeheader()
        writer.writerows(interactions)
    return products_path, interactions_path
