"""A lake with a ``gold.features`` Delta table built from the model's tiny synthetic stores
(``models._synthetic``), for the retraining and drift tests: seconds, not the simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from cloud.lake.features import feature_vectors
from models._synthetic import synthetic_store
from models.dataset import build_rows


def gold_features(stores: list[str], *, facings: int = 16, days: int = 5, seed: int = 0, sensor_share: float = 0.8,
                  shuffle: tuple[str, ...] = (), start_ms: int = 1_764_547_200_000, demand: float = 1.0) -> pa.Table:
    """gold.features rows of synthetic stores, hourly in opening hours; the labels of stores in
    ``shuffle`` are permuted within the store (a broken label feed). ``demand`` scales every
    sales-rate feature (a drifted population for PSI)."""
    histories = [synthetic_store(s, facings=facings, days=days, seed=seed + i, sensor_share=sensor_share,
                                 start_ms=start_ms) for i, s in enumerate(stores)]
    data = build_rows(histories, 2.0, every_min=60, warmup_days=1.0)
    X = data.rows.X.astype(np.float64)
    if demand != 1.0:
        from models.features import FEATURES

        for name in ("rate_1h", "rate_4h", "rate_24h", "rate_168h", "demand_next_2h", "demand_to_restock"):
            X[:, FEATURES.index(name)] *= demand
    y = data.y.astype(np.int32)
    store = data.rows.store.astype(str)
    rng = np.random.default_rng(seed)
    for s in shuffle:
        idx = np.flatnonzero(store == s)
        y[idx] = y[rng.permutation(idx)]
    return pa.table({
        "store_id": store.tolist(), "facing_id": data.rows.facing.astype(str).tolist(),
        "sku": [None] * len(y), "hour_ms": data.rows.t.astype(np.int64),
        "features": feature_vectors(X),
        "label": y, "empty_now": data.empty_now.astype(np.int32), "horizon_h": np.full(len(y), 2.0)})


def write_gold(lake: Path, table: pa.Table, mode: str = "append") -> int:
    """Append (or overwrite) ``lake/gold/features``; return the new Delta version."""
    uri = str(Path(lake) / "gold" / "features")
    write_deltalake(uri, table, mode=mode)
    return int(DeltaTable(uri).version())
