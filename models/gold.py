"""Training rows from the lake: the ``gold.features`` Delta table (written by ``cloud.lake``).

``gold.features`` holds, per facing and sample instant, the feature vector computed by
``models.replay.features_from_silver`` (the gateway's own code) as an Arrow ``list<float>``
column ``features``, and the label (tables written before it hold ``features_json`` text; both read).
:func:`rows_from_gold` is a pure function over an Arrow table; :func:`read_gold_features`
opens the Delta table under a lake root (``ROOT/gold/features``, the lake's layout) and returns
it with its version, which the model manifest records as the training data's lineage.
``models`` does not import ``cloud``: the Delta table is read with ``deltalake`` directly.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from gondola.errors import ConfigError, StorageError
from models.dataset import LabelledRows
from models.features import FEATURES
from models.replay import FeatureRows, facing_groups

__all__ = ["GOLD_FEATURES", "rows_from_gold", "read_gold_features", "observed_in_lake"]

GOLD_FEATURES = "gold.features"


def rows_from_gold(table: Any) -> LabelledRows:
    """``gold.features`` rows -> labelled training rows (all of them: filter with :func:`observed_in_lake`).

    ``empty_now`` comes from the table's ``empty_now`` column when it has one; tables written
    before that column existed give ``None`` there, and training then puts no extra weight on
    forecast rows (it cannot tell them apart).

    Raises:
        ConfigError: the table lacks a column, or its vectors have another length than
            ``FEATURES`` (computed by another build: recompute gold before training).
    """
    cols = set(table.column_names)
    vec_col = "features" if "features" in cols or "features_json" not in cols else "features_json"
    need = {"store_id", "facing_id", "hour_ms", vec_col, "label"}
    if not need <= cols:
        raise ConfigError(f"{GOLD_FEATURES} lacks column(s) {', '.join(sorted(need - cols))}")
    X = _matrix(table.column(vec_col))
    d = table.select(sorted(need - {vec_col})).to_pydict()
    rows = FeatureRows(np.array(d["store_id"], dtype=object), np.array(d["facing_id"], dtype=object),
                       np.array(d["hour_ms"], dtype=np.int64), X)
    # NULL labels (nobody observed them) read as 0 here; observed_in_lake says which rows to keep.
    y = np.array([v is not None and v > 0 for v in d["label"]], dtype=bool)
    if "empty_now" in cols:
        now = np.array([bool(v) for v in table.column("empty_now").to_pylist()], dtype=bool)
        return LabelledRows(rows, y, now, [], 0.0)
    return LabelledRows(rows, y, np.zeros(len(y), bool), [], 0.0, empty_now_known=False)


def observed_in_lake(table: Any, data: LabelledRows, horizon_h: float) -> np.ndarray:
    """Rows of ``table`` (as ``rows_from_gold`` gave them in ``data``) whose label someone observed.

    The lake says so itself: ``label_source`` names the evidence and ``label`` is NULL where there
    was none (``cloud.lake.labels``). Rows written before ``label_source`` existed (a non-NULL
    label with a NULL source, or a table without the column) fall back to
    ``models.retrain.observed_labels`` (the facing has a sensor that reported within the horizon).
    Rows of staff and till evidence are thinned so that evidence does not favour one class
    (:func:`_thinned`).
    """
    from models.retrain import observed_labels

    n = table.num_rows
    label_known = np.array([v is not None for v in table.column("label").to_pylist()], dtype=bool)
    if "label_source" in table.column_names:
        source = np.array(table.column("label_source").to_pylist(), dtype=object)
    else:
        source = np.full(n, None, dtype=object)
    sourced = np.array([v is not None for v in source], dtype=bool)
    legacy = label_known & ~sourced
    out = label_known & sourced
    if "label_without_sensor" in table.column_names:
        out &= ~_thinned(table, data, out, source)
    if legacy.any():
        out |= legacy & observed_labels(data, horizon_h)
    return out


#: Fewer sensor-labelled rows of a class than this: no estimate of the staff evidence's bias.
MIN_SENSOR_ROWS = 50


def _thinned(table: Any, data: LabelledRows, observed: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Rows labelled by staff or till evidence that training leaves out so that evidence stops
    favouring one class.

    A gap scan or a refill sees stock-outs; a sale or the ledger sees stocked shelves only when
    the till speaks for the facing (its SKU has no other facing) and sells soon enough: the rows
    this evidence labels hold more stock-outs than a shelf nobody watches, and a model trained on
    them overrates such shelves. The rows a sensor labels say how often that evidence sees each
    class (``label_without_sensor``, the label it gives there), separately for facings whose SKU
    has one facing and those whose SKU has several (the till sees only the first kind: on the
    second, staff evidence never labels a stocked shelf). In each, the favoured class's rows are
    kept with the ratio of the two rates (none where the other class is never seen), chosen by a
    hash of (store, facing, instant): the same rows every time. ``source``: the table's
    ``label_source`` per row.
    """
    staff = np.array([-1 if v is None else v for v in table.column("label_without_sensor").to_pylist()], np.int64)
    y = data.y
    own_till = data.rows.X[:, FEATURES.index("sku_facings")] < 1.5
    drop = np.zeros(len(y), bool)
    draw = None
    for part in (own_till, ~own_till):
        sensor = observed & (source == "sensor") & part
        n1, n0 = int((sensor & y).sum()), int((sensor & ~y).sum())
        if min(n1, n0) < MIN_SENSOR_ROWS:
            continue
        p1, p0 = (sensor & y & (staff >= 0)).sum() / n1, (sensor & ~y & (staff >= 0)).sum() / n0
        if p1 == p0:
            continue
        favoured, keep = (y, p0 / p1) if p1 > p0 else (~y, p1 / p0)
        draw = _unit_hash(data.rows) if draw is None else draw
        drop |= observed & (source != "sensor") & part & favoured & (draw >= keep)
    return drop


def _unit_hash(rows) -> np.ndarray:
    """A number in [0, 1) per row from (store, facing, instant), the same on every run (splitmix64)."""
    import zlib

    uniq, inv = facing_groups(rows.store, rows.facing)
    codes = np.array([zlib.crc32(k.encode()) for k in uniq.tolist()], np.uint64)[inv]
    with np.errstate(over="ignore"):
        z = (codes << np.uint64(32)) ^ rows.t.astype(np.uint64)
        z = (z + np.uint64(0x9E3779B97F4A7C15))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _matrix(column: Any) -> np.ndarray:
    """The feature vectors as a float32 matrix: from the list column's flat values in one go
    (or, for tables written before it, from JSON text).

    Raises:
        ConfigError: a vector is missing or has another length than ``FEATURES``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    k = len(FEATURES)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        vectors = [json.loads(v) if v is not None else [] for v in column.to_pylist()]
        lengths = np.array([len(v) for v in vectors], dtype=np.int64)
        flat = np.array([x for v in vectors for x in v], dtype=np.float32)
    else:
        column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
        lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    bad = lengths[lengths != k]
    if len(bad):
        raise ConfigError(f"{GOLD_FEATURES} vectors have {int(bad[0])} values, this build computes {k}: "
                          "recompute gold with this build before training")
    return flat.reshape(-1, k)


def read_gold_features(lake_root: str, storage_options: Mapping[str, str] | None = None, *,
                       version: int | None = None) -> tuple[Any, int]:
    """The ``gold.features`` table of a lake and its Delta version (the latest, or ``version``:
    a pinned read gives the same rows every time, whatever was appended since).

    Raises:
        StorageError: the table does not exist or cannot be read.
    """
    from deltalake import DeltaTable

    uri = f"{str(lake_root).rstrip('/')}/gold/features"
    opts = dict(storage_options) if storage_options else None
    try:
        if not DeltaTable.is_deltatable(uri, storage_options=opts):
            raise StorageError(f"no {GOLD_FEATURES} Delta table at {uri}: run the lake pipeline first")
        dt = DeltaTable(uri, storage_options=opts, version=version)
        return dt.to_pyarrow_dataset().to_table(), int(dt.version())
    except StorageError:
        raise
    except Exception as exc:  # deltalake raises several types; translate at the boundary
        raise StorageError(f"cannot read {GOLD_FEATURES} at {uri}: {exc}") from exc
