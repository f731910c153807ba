"""A synthetic shop log, seeded: the worked example of docs/own-data.md (never committed data).

    python bench/shop_log.py                      # .cache/shop/{orders,products}.csv
    python bench/shop_log.py --out DIR --seed 7   # elsewhere, another draw
    python bench/shop_log.py --hostile            # also the hostile files of the guide

A grocery-like shop, shaped like a real export rather than like MovieLens:

- ``orders.csv``: ``customer_id,sku,purchased_at`` — 3,000 customers, 1,500 SKUs,
  60,000 purchases from 2024-01-01 to 2024-06-30, ISO 8601 timestamps in UTC
  (``2024-03-05T14:22:10Z``); no rating column (implicit feedback), no users file (no
  demographics). About a quarter of purchases repeat an earlier purchase of the same
  customer (staples bought again), which is what `evaluate.mask_history` is about.
- ``products.csv``: ``sku,product_name,category`` — a name for the text encoder and
  one category (mapped to ``genres``); no year.
- ``next-week/interactions.csv``: one more week (2024-07-01 to 07-07) of the same
  customers, canonical column names, as an append batch for the landing folder.

Behaviour, so that models have something to find: each customer has two favourite
categories (popularity within a category is Zipf-like); a purchase is a repeat of the
customer's own earlier items (weighted by how often they bought each) with probability
0.16, else a complement of the previous item (one fixed companion SKU per SKU) with
probability 0.2, else a new item from a favourite category (10% from anywhere). A
complement can be an item bought before too: 25.1% of purchases are repeats in all.

``--hostile`` adds the files the guide feeds to `ingest` to show each refusal:
``hostile/nulls.csv`` (NULL / N/A / None as customer ids), ``hostile/header.csv`` (a
misspelt header), ``hostile/stamps.csv`` (a date that is not a date and one in
milliseconds) and ``hostile/tiny.csv`` (6 customers: nothing survives the 5-core filter).
"""

from __future__ import annotations

import argparse
import csv
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

CATEGORIES = {
    "coffee": ["espresso beans", "ground coffee", "decaf beans", "cold brew", "instant coffee"],
    "tea": ["green tea", "black tea", "herbal tea", "chai", "matcha"],
    "dairy": ["whole milk", "oat milk", "greek yoghurt", "butter", "cheddar"],
    "bakery": ["sourdough loaf", "rye bread", "croissants", "bagels", "oat cookies"],
    "produce": ["bananas", "apples", "spinach", "tomatoes", "avocados"],
    "pantry": ["basmati rice", "penne", "olive oil", "chickpeas", "peanut butter"],
    "snacks": ["sea salt crisps", "dark chocolate", "trail mix", "rice cakes", "pretzels"],
    "frozen": ["frozen peas", "ice cream", "veggie burgers", "frozen berries", "pizza"],
    "beverages": ["sparkling water", "orange juice", "cola", "kombucha", "lemonade"],
    "household": ["dish soap", "laundry liquid", "paper towels", "bin bags", "sponges"],
    "personal care": ["shampoo", "toothpaste", "hand soap", "deodorant", "body lotion"],
    "pet": ["dry cat food", "dog treats", "cat litter", "wet dog food", "bird seed"],
}
BRANDS = ["Northfield", "Green Valley", "Harbour", "Oakridge", "Sunny Side", "Blue Hill",
          "Meadow", "Riverbend", "Stonegate", "Willow", "Ashby", "Kestrel", "Larkspur",
          "Fenwick", "Marlow", "Thistle", "Cobalt", "Juniper", "Hazel", "Elmstead",
          "Bramble", "Copper Pot", "Saltmarsh", "Highgate", "Primrose"]  # fmt: skip
SIZES = ["small", "medium", "large", "family pack", "value pack"]

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2024, 6, 30, 23, 59, 59, tzinfo=UTC)
NEXT_WEEK_END = datetime(2024, 7, 7, 23, 59, 59, tzinfo=UTC)

P_REPEAT, P_COMPLEMENT, P_EXPLORE = 0.16, 0.2, 0.1


def iso(seconds: int) -> str:
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def products(n_items: int, rng: np.random.Generator) -> list[dict[str, str]]:
    """``n_items`` distinct products, spread evenly over the categories."""
    names = sorted(
        {
            (category, f"{brand} {noun}, {size}")
            for category, nouns in CATEGORIES.items()
            for noun in nouns
            for brand in BRANDS
            for size in SIZES
        }
    )
    chosen = rng.choice(len(names), size=n_items, replace=False)
    rows = [names[i] for i in sorted(chosen)]
    return [
        {"sku": f"SKU-{i + 1:05d}", "product_name": name, "category": category}
        for i, (category, name) in enumerate(rows)
    ]


def purchases(
    catalogue: list[dict[str, str]],
    n_users: int,
    n_events: int,
    rng: np.random.Generator,
    start: datetime,
    end: datetime,
    customers: list[str] | None = None,
) -> list[tuple[str, str, int]]:
    """(customer, sku, unix seconds) rows in time order, ``n_events`` of them roughly."""
    n_items = len(catalogue)
    categories = sorted(CATEGORIES)
    item_category = np.array([categories.index(p["category"]) for p in catalogue])
    by_category = [np.flatnonzero(item_category == c) for c in range(len(categories))]
    # Zipf-like popularity within each category, in a random order of the items
    weight = np.zeros(n_items)
    for members in by_category:
        weight[rng.permutation(members)] = 1.0 / np.arange(1, len(members) + 1) ** 0.9
    companion = rng.integers(0, n_items, size=n_items)
    ids = customers or [f"C{u + 1:06d}" for u in range(n_users)]
    activity = rng.lognormal(mean=0.0, sigma=0.8, size=len(ids))
    counts = np.maximum(1, np.round(activity / activity.sum() * n_events)).astype(int)
    span = int((end - start).total_seconds())
    rows: list[tuple[str, str, int]] = []
    for customer, count in zip(ids, counts, strict=True):
        favourites = rng.choice(len(categories), size=2, replace=False)
        pool = np.concatenate([by_category[c] for c in favourites])
        pool_weight = weight[pool] / weight[pool].sum()
        stamps = np.sort(rng.choice(span, size=count, replace=False)) + int(start.timestamp())
        bought: list[int] = []
        for stamp in stamps:
            draw = rng.random()
            if bought and draw < P_REPEAT:
                values, times = np.unique(bought, return_counts=True)
                item = int(rng.choice(values, p=times / times.sum()))
            elif bought and draw < P_REPEAT + P_COMPLEMENT:
                item = int(companion[bought[-1]])
            elif rng.random() < P_EXPLORE:
                item = int(rng.choice(n_items, p=weight / weight.sum()))
            else:
                item = int(rng.choice(pool, p=pool_weight))
            bought.append(item)
            rows.append((customer, catalogue[item]["sku"], int(stamp)))
    rows.sort(key=lambda row: (row[2], row[0]))
    return rows


def repeat_share(rows: list[tuple[str, str, int]]) -> float:
    seen: dict[str, set[str]] = {}
    repeats = 0
    for customer, sku, _ in rows:
        mine = seen.setdefault(customer, set())
        repeats += sku in mine
        mine.add(sku)
    return repeats / max(len(rows), 1)


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_hostile(out: Path, orders: list[tuple[str, str, int]]) -> None:
    """The guide's hostile files: small, each with one kind of problem."""
    head = orders[:200]
    nulls = [[c, s, iso(t)] for c, s, t in head]
    for row, token in zip(nulls[::40], ("NULL", "N/A", "None", "", "-"), strict=False):
        row[0] = token
    write_csv(out / "hostile" / "nulls.csv", ["customer_id", "sku", "purchased_at"], nulls)
    rows = [[c, s, iso(t)] for c, s, t in head]
    write_csv(out / "hostile" / "header.csv", ["customer", "sku", "purchased_at"], rows)
    stamps = [[c, s, iso(t)] for c, s, t in head]
    stamps[3][2] = "last tuesday"
    stamps[7][2] = str(head[7][2] * 1000)  # milliseconds: far in the future as seconds
    write_csv(out / "hostile" / "stamps.csv", ["customer_id", "sku", "purchased_at"], stamps)
    customers = sorted({c for c, _, _ in head})[:6]
    tiny = [[c, s, iso(t)] for c, s, t in head if c in customers]
    write_csv(out / "hostile" / "tiny.csv", ["customer_id", "sku", "purchased_at"], tiny)


def generate(
    out: Path,
    *,
    seed: int = 2024,
    n_users: int = 3000,
    n_items: int = 1500,
    n_events: int = 60_000,
    hostile: bool = False,
) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    catalogue = products(n_items, rng)
    orders = purchases(catalogue, n_users, n_events, rng, START, END)
    write_csv(
        out / "products.csv",
        ["sku", "product_name", "category"],
        [[p["sku"], p["product_name"], p["category"]] for p in catalogue],
    )
    write_csv(
        out / "orders.csv",
        ["customer_id", "sku", "purchased_at"],
        [[c, s, iso(t)] for c, s, t in orders],
    )
    known = sorted({c for c, _, _ in orders})
    week = purchases(
        catalogue,
        len(known),
        n_events // 26,
        rng,
        END + timedelta(seconds=1),
        NEXT_WEEK_END,
        customers=known,
    )
    write_csv(
        out / "next-week" / "interactions.csv",
        ["user_id", "item_id", "timestamp"],
        [[c, s, iso(t)] for c, s, t in week],
    )
    if hostile:
        write_hostile(out, orders)
    return {
        "folder": str(out),
        "customers": len(known),
        "skus": len(catalogue),
        "purchases": len(orders),
        "repeat_share": round(repeat_share(orders), 4),
        "next_week": len(week),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".cache/shop"), help="output folder")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=1500)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--hostile", action="store_true", help="also write hostile/*.csv")
    args = parser.parse_args(argv)
    made = generate(
        args.out,
        seed=args.seed,
        n_users=args.users,
        n_items=args.items,
        n_events=args.events,
        hostile=args.hostile,
    )
    print(", ".join(f"{k}: {v}" for k, v in made.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
