"""Drift checks that trigger a retraining round (``gondola retrain --if-drift``).

Two signals, either one triggers:

* **Feature drift**: the population stability index (PSI) of every feature between the rows
  the production model was trained on (``gold.features`` at the Delta version its registry
  entry pins) and the rows that arrived since (later sample instants, at the latest version).
  Bins are the reference's deciles (distinct edges only, so a binary or constant feature has
  two or one bins); PSI = sum((cur - ref) * ln(cur / ref)) with empty bins floored at 1e-4.
  Rule of thumb used by credit-risk teams since the 1990s: < 0.1 stable, 0.1-0.25 moderate,
  > 0.25 large; the default threshold is 0.2.
* **Live precision**: the production model's alerts confirmed by a later empty shelf reading
  (``gold.model_performance``, per store, day and scorer): precision over the last
  ``window_days`` against the same scorer's precision over the window before, when each window
  holds at least ``min_alerts`` alerts. (The stream job's ``stream.alerts`` holds the cloud's
  own alerts but no confirmation yet; gold's confirmed figures are the ones used.)

Without a production model trained from this lake (first round), the reference is the rows
of the last recorded retraining round; with none either, the check says so and triggers: a
first round needs no drift.

``models`` does not import ``cloud``: the Delta tables are read with ``deltalake`` directly.

Errors: ``StorageError`` when a table exists but cannot be read.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from gondola.clock import DAY_MS
from gondola.errors import StorageError

__all__ = ["CALENDAR", "psi", "feature_psi", "live_precision", "drift_check"]

_FLOOR = 1e-4


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float | None:
    """Population stability index of one feature; None when either side is empty."""
    ref = np.asarray(reference, np.float64)
    cur = np.asarray(current, np.float64)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if len(ref) == 0 or len(cur) == 0:
        return None
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1) / len(cur)
    r, c = np.maximum(r, _FLOOR), np.maximum(c, _FLOOR)
    return float(np.sum((c - r) * np.log(c / r)))


#: Calendar features are functions of the sample instant: the rows since the last round cover
#: other hours and weekdays than the reference by construction, which is not drift.
CALENDAR = ("hour_sin", "hour_cos", "dow_sin", "dow_cos")


def feature_psi(reference: np.ndarray, current: np.ndarray) -> dict[str, float | None]:
    """PSI of every non-calendar feature column, by name (``models.features.FEATURES``)."""
    from models.features import FEATURES

    return {name: psi(reference[:, i], current[:, i]) for i, name in enumerate(FEATURES) if name not in CALENDAR}


def _read(uri: str, options, version: int | None = None, columns=None, filter=None):
    from deltalake import DeltaTable

    try:
        if not DeltaTable.is_deltatable(uri, storage_options=options):
            return None
        ds = DeltaTable(uri, storage_options=options, version=version).to_pyarrow_dataset()
        return ds.to_table(columns=columns, filter=filter)
    except Exception as exc:  # noqa: BLE001 - deltalake raises several types; translate here
        raise StorageError(f"cannot read {uri}: {exc}") from exc


def live_precision(lake_root: str, scorer: str, now_ms: int, *, window_days: float = 7.0, min_alerts: int = 20,
                   storage_options: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Confirmed alert precision of ``scorer`` in the last window and the window before."""
    table = _read(f"{str(lake_root).rstrip('/')}/gold/model_performance", storage_options,
                  columns=["day_ms", "scorer", "alerts", "true_alerts"])
    rows = [] if table is None else [r for r in table.to_pylist() if r["scorer"] == scorer]
    w = int(window_days * DAY_MS)
    out: dict[str, Any] = {"scorer": scorer, "window_days": window_days}
    for name, lo, hi in (("recent", now_ms - w, now_ms), ("before", now_ms - 2 * w, now_ms - w)):
        mine = [r for r in rows if lo <= r["day_ms"] < hi]
        alerts = sum(r["alerts"] or 0 for r in mine)
        true = sum(r["true_alerts"] or 0 for r in mine)
        out[name] = {"alerts": alerts, "true_alerts": true,
                     "precision": true / alerts if alerts >= min_alerts else None}
    return out


def _sample(table, max_rows: int):
    """At most ``max_rows`` rows, drawn uniformly with a fixed seed (PSI over deciles needs no more)."""
    if table.num_rows <= max_rows:
        return table
    idx = np.sort(np.random.default_rng(0).choice(table.num_rows, max_rows, replace=False))
    return table.take(idx)


def drift_check(lake_root: str, registry, *, psi_threshold: float = 0.2, precision_drop: float = 0.1,
                min_rows: int = 200, window_days: float = 7.0, min_alerts: int = 20, max_rows: int = 200_000,
                storage_options: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Whether the lake drifted from what the production model was trained on. Only rows
    newer than the reference are read for the current side (a filter pushed to the Delta scan),
    and each side is sampled down to ``max_rows``.

    Returns ``{"drifted", "reasons", "reference", "psi", "max_psi", "rows", "precision"}``.
    """
    from models.gold import rows_from_gold

    root = str(lake_root).rstrip("/")
    uri = f"{root}/gold/features"
    prod = registry.production()
    ref_version, ref_from = None, None
    if prod is not None and "gold.features" in (prod.training.get("tables") or {}):
        ref_version, ref_from = int(prod.training["tables"]["gold.features"]), f"production {prod.version}"
    else:
        rounds = registry.records("retrain")
        if rounds:
            ref_version = int(rounds[-1]["details"]["training"]["tables"]["gold.features"])
            ref_from = "the last retraining round"
    report: dict[str, Any] = {"drifted": False, "reasons": [], "reference": {"gold.features": ref_version,
                                                                             "from": ref_from},
                              "psi": {}, "max_psi": None, "rows": {}, "precision": None,
                              "thresholds": {"psi": psi_threshold, "precision_drop": precision_drop}}
    latest = _read(uri, storage_options, columns=["hour_ms"])
    if latest is None or latest.num_rows == 0:
        report["reasons"].append("no gold.features rows yet: nothing to train on")
        return report
    if ref_version is None:
        report["drifted"] = True
        report["reasons"].append("no earlier round or production model from this lake: first round")
        return report
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    ref_table = _read(uri, storage_options, version=ref_version)
    last_ref = int(pc.max(ref_table["hour_ms"]).as_py()) if ref_table is not None and ref_table.num_rows else -1
    new_table = _read(uri, storage_options, filter=pds.field("hour_ms") > last_ref)
    report["rows"] = {"reference": ref_table.num_rows, "new": new_table.num_rows}
    if new_table.num_rows < min_rows:
        report["reasons"].append(f"only {new_table.num_rows} new rows since gold.features version {ref_version} "
                                 f"(at least {min_rows} to judge feature drift)")
    else:
        values = feature_psi(rows_from_gold(_sample(ref_table, max_rows)).rows.X,
                             rows_from_gold(_sample(new_table, max_rows)).rows.X)
        report["psi"] = {k: None if v is None else round(v, 4) for k, v in values.items()}
        known = {k: v for k, v in values.items() if v is not None}
        if known:
            worst = max(known, key=known.get)
            report["max_psi"] = round(known[worst], 4)
            over = sorted((k for k, v in known.items() if v > psi_threshold), key=known.get, reverse=True)
            if over:
                report["drifted"] = True
                report["reasons"].append(f"PSI over {psi_threshold:g} for {len(over)} feature(s): " + ", ".join(
                    f"{k} {known[k]:.2f}" for k in over[:5]))
    if prod is not None:
        last = int(pc.max(latest["hour_ms"]).as_py())
        # Whole UTC days: the last window ends after the day of the newest row.
        prec = live_precision(root, f"model:{prod.version}", last - last % DAY_MS + DAY_MS, window_days=window_days,
                              min_alerts=min_alerts, storage_options=storage_options)
        report["precision"] = prec
        a, b = prec["recent"]["precision"], prec["before"]["precision"]
        if a is not None and b is not None and not math.isclose(a, b) and b - a > precision_drop:
            report["drifted"] = True
            report["reasons"].append(f"live alert precision of {prod.version} fell from {b:.2f} to {a:.2f} "
                                     f"(more than {precision_drop:g})")
    return report
