"""Product catalog (chain-wide) and planogram (per store), as numpy columns.

The catalog is the chain's: the same seed and size give every store the same products, prices,
unit weights, pack sizes and base popularity. Each store has its own planogram: which facing
holds which SKU and how many units fit, with fast movers on more than one facing, and its own
demand level (store size) on top of the chain popularity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_sim._rng import component_rng
from firmware_sim.scenario import DemandParams, ReplenishmentParams

__all__ = ["Catalog", "Planogram", "CATEGORIES", "build_catalog", "build_planogram"]

#: name, share of SKUs, price range (cents), unit weight range (g), case pack sizes.
CATEGORIES: tuple[tuple[str, float, tuple[int, int], tuple[float, float], tuple[int, ...]], ...] = (
    ("dairy", 0.12, (49, 699), (100, 1100), (6, 12)),
    ("bakery", 0.06, (89, 499), (250, 900), (6, 10)),
    ("produce", 0.08, (79, 599), (150, 1500), (6, 10)),
    ("meat", 0.06, (199, 1999), (200, 1200), (4, 8)),
    ("frozen", 0.08, (129, 999), (250, 1500), (6, 12)),
    ("beverages", 0.12, (49, 1499), (330, 2100), (6, 12, 24)),
    ("snacks", 0.12, (69, 499), (40, 400), (12, 24)),
    ("pantry", 0.16, (59, 899), (200, 1000), (6, 12)),
    ("household", 0.10, (99, 1499), (150, 3000), (6, 12)),
    ("personal_care", 0.10, (99, 1299), (50, 600), (6, 12)),
)

_BRANDS = ("Arlo", "Brisk", "Coral", "Dunmore", "Elba", "Fenwick", "Gala", "Hollis", "Ivo", "Juno",
           "Kestrel", "Lumen", "Morrow", "Nova", "Orla", "Pike", "Quill", "Rowan", "Sable", "Tarn")


@dataclass(frozen=True)
class Catalog:
    """The chain's products, one row per SKU (index = SKU number)."""

    sku: np.ndarray  # str ids, 'sku-00001'
    name: np.ndarray
    category: np.ndarray  # int index into CATEGORIES
    price_cents: np.ndarray
    unit_weight_g: np.ndarray
    pack_size: np.ndarray
    popularity: np.ndarray  # chain-wide mean units per open day, before store size
    substitute: np.ndarray  # index of the SKU shoppers switch to when this one is missing

    def __len__(self) -> int:
        return len(self.sku)

    def rows(self) -> list[dict]:
        """Products as dicts, the master-data shape (``products.csv``)."""
        return [
            {
                "sku": str(self.sku[i]),
                "name": str(self.name[i]),
                "category": CATEGORIES[int(self.category[i])][0],
                "price_cents": int(self.price_cents[i]),
                "unit_weight_g": float(self.unit_weight_g[i]),
                "pack_size": int(self.pack_size[i]),
            }
            for i in range(len(self))
        ]


@dataclass(frozen=True)
class Planogram:
    """One store's facings, one row per facing, ordered by aisle (category)."""

    facing_id: np.ndarray  # str
    sku_index: np.ndarray  # int, into the catalog
    capacity: np.ndarray  # int units
    has_sensor: np.ndarray  # bool
    sibling: np.ndarray  # next facing of the same SKU (ring), or -1 when the SKU has one facing
    primary: np.ndarray  # bool: first facing of its SKU
    rate: np.ndarray  # per-SKU mean units per open day in this store (len = catalog)

    def __len__(self) -> int:
        return len(self.facing_id)


def build_catalog(seed: int, n_skus: int, demand: DemandParams) -> Catalog:
    """The chain catalog for ``n_skus`` products; deterministic in (seed, n_skus)."""
    if n_skus < 2:
        raise ValueError("a catalog needs at least 2 SKUs")
    rng = component_rng(seed, "chain", "catalog", n_skus)
    shares = np.array([c[1] for c in CATEGORIES])
    counts = np.floor(shares / shares.sum() * n_skus).astype(int)
    counts[np.argsort(-shares)[: n_skus - counts.sum()]] += 1
    category = np.repeat(np.arange(len(CATEGORIES)), counts)
    lo_p = np.array([c[2][0] for c in CATEGORIES])[category]
    hi_p = np.array([c[2][1] for c in CATEGORIES])[category]
    # Prices are log-uniform in the category's range and end in 9, like shelf prices do.
    price = np.exp(rng.uniform(np.log(lo_p), np.log(hi_p)))
    price_cents = (np.floor(price / 10) * 10 + 9).astype(np.int64)
    lo_w = np.array([c[3][0] for c in CATEGORIES])[category]
    hi_w = np.array([c[3][1] for c in CATEGORIES])[category]
    weight = np.round(np.exp(rng.uniform(np.log(lo_w), np.log(hi_w))), 1)
    pack = np.array([rng.choice(CATEGORIES[c][4]) for c in category], dtype=np.int64)
    # Heavy-tailed popularity: lognormal with the configured mean.
    sigma = demand.rate_sigma
    mu = np.log(demand.mean_units_per_sku_day) - sigma**2 / 2
    popularity = rng.lognormal(mu, sigma, n_skus)
    # A substitute from the same category (a different brand or size of the same need).
    substitute = np.empty(n_skus, dtype=np.int64)
    start = 0
    for count in counts:
        idx = np.arange(start, start + count)
        if count > 1:
            shift = rng.integers(1, count, size=count)
            substitute[idx] = start + (idx - start + shift) % count
        else:
            substitute[idx] = idx
        start += count
    brands = rng.integers(0, len(_BRANDS), n_skus)
    sku = np.array([f"sku-{i + 1:05d}" for i in range(n_skus)])
    name = np.array(
        [f"{_BRANDS[b]} {CATEGORIES[c][0].replace('_', ' ')} {w:g}g" for b, c, w in zip(brands, category, weight)]
    )
    return Catalog(sku, name, category, price_cents, weight, pack, popularity, substitute)


def build_planogram(
    seed: int,
    store_id: str,
    catalog: Catalog,
    repl: ReplenishmentParams,
    sensor_share: float,
) -> Planogram:
    """Facings of one store: every SKU once, fast movers on two or three facings."""
    rng = component_rng(seed, store_id, "planogram")
    n = len(catalog)
    # Store size and local taste: a store-level factor and a per-SKU wobble.
    store_factor = rng.lognormal(0.0, 0.25)
    rate = catalog.popularity * store_factor * rng.lognormal(-0.045, 0.3, n)
    rank = np.argsort(np.argsort(-rate))
    n_facings = np.where(rank < 0.02 * n, 3, np.where(rank < 0.12 * n, 2, 1))
    sku_index = np.repeat(np.arange(n), n_facings)
    first = np.r_[0, np.cumsum(n_facings)[:-1]]
    position = np.arange(len(sku_index)) - np.repeat(first, n_facings)
    lo, hi = repl.capacity_bounds
    per_sku = np.ceil(rate * repl.shelf_cover_days)
    # Capacity in whole units, at least the low bound per facing, rounded up to half a case.
    cap = np.ceil(per_sku[sku_index] / n_facings[sku_index])
    half_case = np.maximum(catalog.pack_size[sku_index] // 2, 1)
    cap = np.ceil(cap / half_case) * half_case
    capacity = np.clip(cap, lo, hi).astype(np.int64)
    # Each SKU's facings form a ring so an empty facing can send shoppers to the next one.
    sibling = np.where(n_facings[sku_index] > 1,
                       np.repeat(first, n_facings) + (position + 1) % n_facings[sku_index], -1)
    has_sensor = rng.random(len(sku_index)) < sensor_share
    facing_id = np.array([f"{store_id}-f{i + 1:05d}" for i in range(len(sku_index))])
    return Planogram(facing_id, sku_index, capacity, has_sensor, sibling.astype(np.int64), position == 0, rate)
