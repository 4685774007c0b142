"""The feature replay of many stores at once: :class:`models.features.FacingState`'s updates as
array operations, for the cloud's lake (``gold.features``).

The gateway feeds each event to ``StoreFeatures`` (``models.replay``), a few Python calls per
event: the lake replaying a day of 100 stores that way spent ~5 s in the interpreter. Here every
facing's state is a row of one float64 matrix and events are applied in lock step: step ``k``
applies the ``k``-th event of every SKU group (a store's facings of one SKU: a POS line is split
over them by ``sale_shares``, which reads their estimates; other facings never interact), so a
step is a few dozen numpy operations over thousands of facings and the number of steps is the
most events any group has.

One definition: each update below mirrors ``FacingState.on_sale`` / ``on_reading`` /
``on_restock`` and ``StoreFeatures.sale`` operation for operation (the same float operations in
the same order, ``math.exp`` for every exponential, Python's ``max(a, b)`` as
``where(b > a, b, a)``), and the feature vectors at an instant come from the same
``models.features._compute`` the gateway scores with. ``tests/unit/test_model_batch_replay.py``
holds the two to each other, bit for bit (every feature and every state field), on the demo's
histories and on adversarial ones (voids and returns, split SKUs, stuck and drifting sensors,
unknown facings, ties in time, restored snapshots, gaps of 500 days). A change to
``FacingState`` that is not made here fails that test; a new field fails at import.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gondola.clock import DAY_MS, HOUR_MS
from models.features import (
    BELOW_EMPTY_UNITS, CREEP_REFILLS, GUESS_MS, NOISE_READINGS, OFFSET_GAIN, OFFSET_IMPLAUSIBLE, OFFSET_RATE, OFFSET_READINGS, OFFSET_SPREAD,
    POS_ANCHOR_TOL, PROFILE_TAU_H, RATE_TAUS_H, STUCK_MIN_MS, STUCK_UNITS, TRUST_TAU_H, TRUST_TOL_SHARE,
    TRUST_TOL_UNITS, FEATURES, FacingState, _compute, _derive, sku_groups,
)

__all__ = ["StoreEvents", "replay_stores", "SALE", "READING", "RESTOCK"]

SALE, READING, RESTOCK = 0, 1, 2

# FacingState's fields, in declaration order (a snapshot's JSON keys), with how each is held:
# "id" (text, not in the matrix), "int", "bool", "float", "opt" (int or None: NaN for None),
# "optf" (float or None), "rates" (4 floats), "profile" (24 floats).
_FIELDS = (
    ("facing_id", "id"), ("sku", "id"), ("capacity", "int"), ("has_sensor", "bool"), ("units", "optf"),
    ("last_reading_ms", "opt"), ("last_restock_ms", "opt"), ("last_sale_ms", "opt"), ("battery_pct", "float"),
    ("sales_since_reading", "float"), ("started_ms", "opt"), ("last_price", "optf"), ("sku_facings", "int"),
    ("sensor_untrusted", "bool"), ("pos_units", "optf"), ("last_reading_units", "optf"), ("_value_ms", "opt"),
    ("_sold_since_value", "float"), ("_drop_at_value", "float"), ("_stuck", "bool"), ("_residual", "float"), ("_weight_sum", "float"), ("_weight_units", "float"), ("_below", "bool"),
    ("zero_creep", "float"), ("_refill_short", "optf"), ("_refills", "int"), ("_refills_at", "float"),
    ("zero_offset", "float"), ("_g_tare", "optf"), ("_g_n", "float"), ("_g_u", "float"), ("_g_uu", "float"),
    ("_g_w", "float"), ("_g_uw", "float"),
    ("reading_noise", "float"), ("_noise_pairs", "int"), ("units_unexplained", "float"), ("_guessed", "float"), ("_guess_ms", "opt"),
    ("_rates", "rates"), ("_rates_at_ms", "opt"), ("_sales_profile", "profile"),
    ("_restock_profile", "profile"), ("_profile_ref_ms", "opt"), ("_price_mean", "optf"),
)
if tuple(f.name for f in dataclasses.fields(FacingState)) != tuple(n for n, _ in _FIELDS):
    raise ImportError("models.features.FacingState's fields changed: update models.batch_replay to match")

_WIDTH = {"id": 0, "rates": len(RATE_TAUS_H), "profile": 24}
_COL: dict[str, int] = {}
_at = 0
for _name, _kind in _FIELDS:
    _COL[_name] = _at
    _at += _WIDTH.get(_kind, 1)
_NCOL = _at
_R = slice(_COL["_rates"], _COL["_rates"] + len(RATE_TAUS_H))
_SP, _RP = _COL["_sales_profile"], _COL["_restock_profile"]
_TAUS = np.array(RATE_TAUS_H, dtype=np.float64)
# _gather's names for the scalar fields _compute reads
_GATHER = (("units", "units"), ("cap", "capacity"), ("sensor", "has_sensor"), ("t_read", "last_reading_ms"),
           ("t_restock", "last_restock_ms"), ("t_sale", "last_sale_ms"), ("battery", "battery_pct"),
           ("since_read", "sales_since_reading"), ("started", "started_ms"), ("price", "last_price"),
           ("price_mean", "_price_mean"), ("rates_at", "_rates_at_ms"), ("untrusted", "sensor_untrusted"),
           ("pos_units", "pos_units"), ("read_units", "last_reading_units"), ("sku_facings", "sku_facings"),
           ("unexplained", "units_unexplained"), ("noise", "reading_noise"))


@dataclass
class StoreEvents:
    """One store's replay: its facings' states before the first event (fresh or restored), its
    events in the order ``StoreFeatures`` applies them, and the instants to sample.

    ``kind``: SALE / READING / RESTOCK per event; ``key``: the SKU of a sale, the facing of a
    reading or restock (numpy text or an Arrow string array); ``value``: a sale's signed units (``pos_line_qty``), ``units_est``,
    ``units_added``; ``extra``: a sale's price (NaN: none), a reading's battery; ``returned``: a
    sale is a customer return; ``weight``: a reading's ``weight_g`` (NaN: not known; None: none
    known). ``instants``: feature instants (events at or before count);
    ``snapshots``: instants whose state is wanted (events strictly before count). Both sorted.
    """

    states: list[FacingState]
    kind: np.ndarray
    ts: np.ndarray
    key: np.ndarray
    value: np.ndarray
    extra: np.ndarray
    returned: np.ndarray
    instants: list[int] = field(default_factory=list)
    snapshots: list[int] = field(default_factory=list)
    weight: np.ndarray | None = None


def _to_row(state: FacingState) -> np.ndarray:
    row = np.empty(_NCOL)
    for name, kind in _FIELDS:
        v = getattr(state, name)
        c = _COL[name]
        if kind == "id":
            continue
        if kind in ("rates", "profile"):
            row[c:c + _WIDTH[kind]] = v
        else:
            row[c] = math.nan if v is None else float(v)
    return row


_PLAIN = {"int": int, "bool": bool, "float": float}


def _to_dict(state: FacingState, row: np.ndarray) -> dict[str, Any]:
    """A matrix row as ``vars(FacingState)`` with the Python types the online code holds."""
    vals = row.tolist()
    out: dict[str, Any] = {}
    for name, kind in _FIELDS:
        c = _COL[name]
        if kind == "id":
            out[name] = getattr(state, name)
        elif kind in _PLAIN:
            out[name] = _PLAIN[kind](vals[c])
        elif kind == "opt":
            out[name] = None if vals[c] != vals[c] else int(vals[c])
        elif kind == "optf":
            out[name] = None if vals[c] != vals[c] else vals[c]
        elif kind == "rates":
            out[name] = vals[c:c + _WIDTH[kind]]
        else:
            out[name] = row[c:c + 24].copy()
    return out


def _exp(x: np.ndarray) -> np.ndarray:
    """``math.exp`` elementwise: numpy's own exp differs from it in the last bit for ~5 % of inputs."""
    flat = x.ravel()
    return np.fromiter(map(math.exp, flat.tolist()), np.float64, count=len(flat)).reshape(x.shape)


def _max(a, b):
    """Python's ``max(a, b)``: ``b`` only when ``b > a`` (so ``max(0.0, -0.0)`` is ``0.0``)."""
    return np.where(b > a, b, a)


def _min(a, b):
    """Python's ``min(a, b)``: ``b`` only when ``b < a``."""
    return np.where(b < a, b, a)


def _decay_to(S: np.ndarray, ts: np.ndarray) -> None:
    """FacingState._decay_to on rows ``S`` (a copy of the touched facings) at times ``ts``."""
    c = _COL["started_ms"]
    S[:, c] = np.where(np.isnan(S[:, c]), ts, S[:, c])
    c = _COL["_rates_at_ms"]
    at = S[:, c]
    first = np.isnan(at)
    dt_h = (ts - np.where(first, ts, at)) / HOUR_MS
    decay = ~first & (dt_h > 0)
    if decay.any():
        k = _exp(-dt_h[decay][:, None] / _TAUS[None, :])
        S[decay, _R] = S[decay, _R] * k
    S[:, c] = np.where(first | decay, ts, at)


def _profile_add(S: np.ndarray, ts: np.ndarray, base: int, amount: np.ndarray | None) -> None:
    """``profile[hour_bin(ts)] += amount * FacingState._profile_weight(ts)`` (``amount`` None: 1).

    The online code reads the profile array before the weight: when the weight rebases (moves
    the reference, both profiles scaled by a new array), the addition lands on the old array and
    is lost. Mirrored here (it happens after 420 days without a sale or restock)."""
    c = _COL["_profile_ref_ms"]
    ref = np.where(np.isnan(S[:, c]), ts, S[:, c])
    x = (ts - ref) / HOUR_MS / PROFILE_TAU_H
    rebase = x > 30.0
    if rebase.any():
        k = _exp(-x[rebase])[:, None]
        S[rebase, _SP:_SP + 24] = S[rebase, _SP:_SP + 24] * k
        S[rebase, _RP:_RP + 24] = S[rebase, _RP:_RP + 24] * k
        ref = np.where(rebase, ts, ref)
        x = np.where(rebase, 0.0, x)
    S[:, c] = ref
    w = _exp(x)
    add = w if amount is None else amount * w
    rows = np.flatnonzero(~rebase)
    bins = ((ts % DAY_MS) // HOUR_MS).astype(np.int64)
    S[rows, base + bins[rows]] += add[rows]


def _sale(S: np.ndarray, ts: np.ndarray, qty: np.ndarray, price: np.ndarray, returned: np.ndarray,
          units_qty: np.ndarray, pos_qty: np.ndarray) -> None:
    """FacingState.on_sale on rows ``S`` (``units_qty`` / ``pos_qty``: what ``units`` / ``pos_units`` lose)."""
    _decay_to(S, ts)
    S[:, _R] = S[:, _R] + qty[:, None] / _TAUS[None, :]
    _profile_add(S, ts, _SP, qty)
    c = _COL["sales_since_reading"]
    S[:, c] = S[:, c] + qty
    sold = qty > 0
    c = _COL["last_sale_ms"]
    S[:, c] = np.where(sold, ts, S[:, c])
    priced = sold & ~np.isnan(price) & (price > 0)
    c = _COL["last_price"]
    S[:, c] = np.where(priced, price, S[:, c])
    c = _COL["_price_mean"]
    mean = S[:, c]
    S[:, c] = np.where(priced, np.where(np.isnan(mean), price, mean + (price - mean) / 50.0), mean)
    keep = ~(returned & (qty < 0))
    for name, q in (("units", units_qty), ("pos_units", pos_qty)):
        c = _COL[name]
        u = S[:, c]
        S[:, c] = np.where(keep & ~np.isnan(u), _max(0.0, u - q), u)


def _track_zero(S: np.ndarray, ts: np.ndarray, units_est: np.ndarray, weight: np.ndarray):
    """FacingState._track_zero on rows ``S``: (tracked, units as read, unit weight) per row."""
    col = _COL
    weighed = ~np.isnan(weight)
    n = S[:, col["_g_n"]].copy()
    ready = n >= OFFSET_READINGS
    nz = np.where(ready, n, 1.0)
    mu = S[:, col["_g_u"]] / nz
    var = S[:, col["_g_uu"]] / nz - mu * mu
    spread = ready & (var > OFFSET_SPREAD)
    slope = (S[:, col["_g_uw"]] / nz - mu * (S[:, col["_g_w"]] / nz)) / np.where(spread, var, 1.0)
    grams = np.where(spread, slope, S[:, col["_g_tare"]])
    tracked = weighed & ~np.isnan(grams) & (grams > 0)
    w0 = np.where(weighed, weight, 0.0)
    c = col["zero_offset"]
    x = w0 / np.where(tracked, grams, 1.0) - S[:, c]
    # a count no shelf holds (OFFSET_IMPLAUSIBLE; also inf, NaN): the tracker starts over
    bound = 3.0 * _max(_max(units_est, S[:, col["capacity"]]), 0.0) + OFFSET_IMPLAUSIBLE
    bad = tracked & ~(np.abs(x - units_est) <= bound)
    if bad.any():
        S[:, c] = np.where(bad, 0.0, S[:, c])
        S[:, col["_g_tare"]] = np.where(bad, np.nan, S[:, col["_g_tare"]])
        for name in ("_g_n", "_g_u", "_g_uu", "_g_w", "_g_uw"):
            S[:, col[name]] = np.where(bad, 0.0, S[:, col[name]])
        n = np.where(bad, 0.0, n)
        tracked = tracked & ~bad
    k = np.rint(np.where(tracked, x, 0.0))
    last_ms = S[:, col["last_reading_ms"]]
    moves = tracked & ~np.isnan(last_ms)
    lim = OFFSET_RATE * _max(0.0, (ts - np.where(np.isnan(last_ms), ts, last_ms)) / DAY_MS)
    S[:, c] = np.where(moves, S[:, c] + _max(-lim, _min(lim, OFFSET_GAIN * (x - k))), S[:, c])
    counted = weighed & (units_est >= 1)
    for name, add in (("_g_n", 1.0), ("_g_u", units_est), ("_g_uu", units_est * units_est), ("_g_w", w0),
                      ("_g_uw", units_est * w0)):
        S[:, col[name]] = np.where(counted, S[:, col[name]] + add, S[:, col[name]])
    first = counted & (n < OFFSET_READINGS)
    c = col["_g_tare"]
    S[:, c] = np.where(first, S[:, col["_g_w"]] / np.where(first, S[:, col["_g_u"]], 1.0), S[:, c])
    return tracked, np.where(tracked, k, units_est), grams


def _reading(S: np.ndarray, ts: np.ndarray, units_est: np.ndarray, battery: np.ndarray, weight: np.ndarray) -> None:
    """FacingState.on_reading on rows ``S``."""
    col = _COL
    raw = units_est
    tracked, read, grams = _track_zero(S, ts, units_est, weight)
    units_est = np.where(tracked, _max(0.0, read), units_est)
    # a clean refill's reading short of capacity: the least of CREEP_REFILLS, seen twice, sets the creep
    cap, restock_ms, last_ms = S[:, col["capacity"]], S[:, col["last_restock_ms"]], S[:, col["last_reading_ms"]]
    refill = ((cap > 0) & ~np.isnan(restock_ms) & ~np.isnan(last_ms)
              & (np.where(np.isnan(restock_ms), 0.0, restock_ms) > np.where(np.isnan(last_ms), 0.0, last_ms))
              & (S[:, col["sales_since_reading"]] == 0))
    short = cap - units_est
    prev, at = S[:, col["_refill_short"]], S[:, col["_refills_at"]]
    lower = np.isnan(prev) | (short < prev)
    least = np.where(lower, short, prev)
    at = np.where(refill, np.where(lower, 1.0, np.where(short == prev, at + 1.0, at)), at)
    n = S[:, col["_refills"]] + refill
    done = refill & (n >= CREEP_REFILLS)
    c = col["zero_creep"]
    S[:, c] = np.where(done & (at >= 2), _max(0.0, least), S[:, c])
    S[:, col["_refill_short"]] = np.where(done, np.nan, np.where(refill, least, prev))
    S[:, col["_refills"]] = np.where(done, 0.0, n)
    S[:, col["_refills_at"]] = np.where(done, 0.0, at)
    creep = S[:, c].copy()
    # below empty: the unit weight learnt from the readings, the weight under an empty shelf
    weighed = ~np.isnan(weight)
    counted = weighed & (raw >= 1)
    for c, add in ((col["_weight_sum"], weight), (col["_weight_units"], raw)):
        S[:, c] += np.where(counted, add, 0.0)
    w_sum, w_units = S[:, col["_weight_sum"]], S[:, col["_weight_units"]]
    w0 = np.where(weighed, weight, 0.0)
    below = np.where(tracked, w0 / np.where(tracked, grams, 1.0) - S[:, col["zero_offset"]] + creep < -BELOW_EMPTY_UNITS,
                     (w_sum > 0) & (w0 * w_units + creep * w_sum < -BELOW_EMPTY_UNITS * w_sum))
    S[:, col["_below"]] = np.where(weighed, below, S[:, col["_below"]])
    # re-zeroed: a 0 from its weight (the device clips it at 0)
    from_weight = (units_est < 1) & weighed & (w_sum > 0) & ~tracked
    zeroed = _max(0.0, np.rint(w0 * w_units / np.where(w_sum > 0, w_sum, 1.0)) + creep)
    units_est = np.where(creep > 0, np.where(tracked, _max(0.0, read + creep),
                                             np.where(from_weight, zeroed, units_est + creep)), units_est)
    c = col["started_ms"]
    S[:, c] = np.where(np.isnan(S[:, c]), ts, S[:, c])
    S[:, col["has_sensor"]] = 1.0
    units, last_ms = S[:, col["units"]].copy(), S[:, col["last_reading_ms"]]
    since = S[:, col["sales_since_reading"]].copy()
    known = ~np.isnan(units) & ~np.isnan(last_ms)
    frozen = known & (S[:, col["last_reading_units"]] == units_est)
    moved = known & ~frozen
    # frozen: the same value again
    sold = S[:, col["_sold_since_value"]] + since
    value_ms = S[:, col["_value_ms"]]
    stuck_now = (~np.isnan(value_ms) & (ts - np.where(np.isnan(value_ms), 0, value_ms) >= STUCK_MIN_MS)
                 & (sold - S[:, col["_drop_at_value"]] >= STUCK_UNITS) & (units_est >= 1))
    S[:, col["_sold_since_value"]] = np.where(frozen, sold, np.where(moved, 0.0, S[:, col["_sold_since_value"]]))
    stuck = S[:, col["_stuck"]] > 0
    S[:, col["_stuck"]] = np.where(frozen, stuck | stuck_now, np.where(moved, False, stuck))
    unexplained = S[:, col["units_unexplained"]]
    drop = _max(0.0, units - units_est)
    single = S[:, col["sku_facings"]] <= 1  # with several, sku_sale explains it when the line comes
    S[:, col["units_unexplained"]] = np.where(frozen & single, _max(0.0, unexplained - _max(since, 0.0)),
                                              np.where(moved, drop, unexplained))
    S[:, col["_drop_at_value"]] = np.where(moved, drop, S[:, col["_drop_at_value"]])
    S[:, col["_value_ms"]] = np.where(frozen, value_ms, ts)  # moved, or no earlier reading
    # both: the residual and the trust decided at this reading
    if known.any():
        at = np.flatnonzero(known)
        dt_h = _max(0.0, (ts[at] - last_ms[at]) / HOUR_MS)
        c = col["_residual"]
        resid = _max(0.0, S[at, c] * _exp(-dt_h / TRUST_TAU_H) + (units_est[at] - units[at]))
        S[at, c] = resid
        drift = resid > _max(TRUST_TOL_UNITS, TRUST_TOL_SHARE * S[at, col["capacity"]])
        S[at, col["sensor_untrusted"]] = (((S[at, col["sku_facings"]] <= 1) & ((S[at, col["_stuck"]] > 0) | drift))
                                          | (S[at, col["_below"]] > 0))
    # FacingState._learn_noise: a pair of readings with no sale and no restock between them
    last_u, restock_ms = S[:, col["last_reading_units"]], S[:, col["last_restock_ms"]]
    still = (~np.isnan(last_u) & (since == 0)
             & ~(~np.isnan(restock_ms) & (restock_ms > np.where(np.isnan(last_ms), 0.0, last_ms))))
    if still.any():
        at = np.flatnonzero(still)
        pairs = _min(S[at, col["_noise_pairs"]] + 1, float(NOISE_READINGS))
        moved = _min((units_est[at] - last_u[at]) ** 2, 1.0)
        noise = S[at, col["reading_noise"]]
        S[at, col["_noise_pairs"]] = pairs
        S[at, col["reading_noise"]] = noise + (moved - noise) / pairs
    c = col["pos_units"]
    pos = S[:, c]
    below_till = ~np.isnan(pos) & (units_est < pos - POS_ANCHOR_TOL)
    believed = (S[:, col["sensor_untrusted"]] == 0) & ~(frozen & (since > 0)) & ~below_till
    S[:, c] = np.where(believed, units_est, pos)
    S[:, col["units"]] = units_est
    S[:, col["last_reading_units"]] = units_est
    S[:, col["last_reading_ms"]] = ts
    S[:, col["battery_pct"]] = battery
    S[:, col["sales_since_reading"]] = 0.0


def _refilled(S: np.ndarray, u: np.ndarray, added: np.ndarray) -> np.ndarray:
    cap = S[:, _COL["capacity"]]
    loose = np.where(np.isnan(u) | (u == 0), 0.0, u) + added  # (units or 0.0) + added
    return np.where(cap == 0, loose, _min(cap, np.where(np.isnan(u), cap, u) + added))


def _restock(S: np.ndarray, ts: np.ndarray, added: np.ndarray) -> None:
    """FacingState.on_restock on rows ``S``."""
    _decay_to(S, ts)
    _profile_add(S, ts, _RP, None)
    S[:, _COL["last_restock_ms"]] = ts
    c = _COL["_sold_since_value"]
    S[:, c] = S[:, c] - added
    S[:, _COL["units"]] = _refilled(S, S[:, _COL["units"]], added)
    c = _COL["pos_units"]
    pos = S[:, c]
    S[:, c] = np.where(~np.isnan(pos) | (S[:, _COL["has_sensor"]] == 0), _refilled(S, pos, added), pos)


def _gathered(rows: np.ndarray) -> dict[str, np.ndarray]:
    """``models.features._gather``'s arrays from matrix rows."""
    a = {name: rows[:, _COL[f]] for name, f in _GATHER}
    a["rates"] = rows[:, _R]
    return _derive(a, np.ascontiguousarray(rows[:, _SP:_SP + 24]), np.ascontiguousarray(rows[:, _RP:_RP + 24]))


def replay_stores(stores: list[StoreEvents]) -> list[tuple[np.ndarray, list[list[dict[str, Any]]]]]:
    """Per store: its feature matrix (``len(instants) x facings`` rows, instant-major, facings in
    ``states`` order; float32, as ``StoreFeatures.matrix``) and, per snapshot instant, every
    facing's state as ``vars(FacingState)`` (the gateway's state after the events before it)."""
    sizes = [len(s.states) for s in stores]
    offset = np.cumsum([0] + sizes)
    n_fac = int(offset[-1])
    S = np.stack([_to_row(st) for s in stores for st in s.states]) if n_fac else np.zeros((0, _NCOL))
    # SKU groups (global ids) and each group's facings
    group = np.zeros(n_fac, dtype=np.int64)
    g_off = 0
    store_of = np.repeat(np.arange(len(stores)), sizes)
    for i, s in enumerate(stores):
        local = sku_groups([st.sku for st in s.states])
        group[offset[i]:offset[i + 1]] = local + g_off
        g_off += int(local.max()) + 1 if len(local) else 0
    n_groups = g_off
    # events -> (group, target facing or -1 for a sale's whole group), in each store's order
    ev_group, ev_facing, ev_kind, ev_ts, ev_val, ev_extra, ev_ret, ev_w = [], [], [], [], [], [], [], []
    for i, s in enumerate(stores):
        n = len(s.states)
        if n == 0 or len(s.ts) == 0:
            continue
        fids = np.array([st.facing_id for st in s.states], dtype=object)
        skus = np.array([st.sku for st in s.states], dtype=object)
        key = s.key
        fac = _lookup(fids, key)
        first_of_sku = _lookup(skus, key)  # a facing holding the SKU (its group is the SKU's)
        is_sale = s.kind == SALE
        hit = np.where(is_sale, first_of_sku, fac)
        ok = hit >= 0
        ev_group.append(group[offset[i] + hit[ok]])
        ev_facing.append(np.where(is_sale[ok], -1, offset[i] + hit[ok]))
        weight = np.full(len(s.ts), np.nan) if s.weight is None else s.weight
        for out, arr in ((ev_kind, s.kind), (ev_ts, s.ts), (ev_val, s.value), (ev_extra, s.extra), (ev_ret, s.returned),
                         (ev_w, weight)):
            out.append(np.asarray(arr)[ok])
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))  # noqa: E731
    eg, ef, ek = cat(ev_group, np.int64), cat(ev_facing, np.int64), cat(ev_kind, np.int8)
    et, ev, ex, er = cat(ev_ts, np.int64), cat(ev_val, np.float64), cat(ev_extra, np.float64), cat(ev_ret, bool)
    ew = cat(ev_w, np.float64)
    # rank of each event within its group (events are in apply order within a store)
    by_group = np.argsort(eg, kind="stable")
    g_sorted = eg[by_group]
    g_start = np.searchsorted(g_sorted, np.arange(n_groups + 1))
    rank = np.empty(len(eg), dtype=np.int64)
    rank[by_group] = np.arange(len(eg)) - g_start[g_sorted]
    ts_by_group = et[by_group]  # within a group: non-decreasing (a store's order is by ts first)
    # samples: (facing, instant) rows, each taken after its group's events up to the instant
    samples = []  # (store, point index, is snapshot, facing, count)
    members = [np.arange(offset[i], offset[i + 1]) for i in range(len(stores))]
    for i, s in enumerate(stores):
        fac = members[i]
        if len(fac) == 0:
            continue
        for snap, points, side in ((False, s.instants, "right"), (True, s.snapshots, "left")):
            if not points:
                continue
            pts = np.asarray(points, dtype=np.int64)
            count = np.empty((len(pts), len(fac)), dtype=np.int64)
            for g in np.unique(group[fac]):
                lo, hi = g_start[g], g_start[g + 1]
                c = np.searchsorted(ts_by_group[lo:hi], pts, side=side)
                count[:, group[fac] == g] = c[:, None]
            samples.append((i, snap, np.repeat(np.arange(len(pts)), len(fac)), np.tile(fac, len(pts)), count.ravel()))
    s_fac = cat([x[3] for x in samples], np.int64)
    s_count = cat([x[4] for x in samples], np.int64)
    captured = np.empty((len(s_fac), _NCOL))
    # facing-level updates: a sale goes to every facing of its group, with its share decided at its step
    sizes_g = np.bincount(group, minlength=n_groups)
    fac_of_group = np.argsort(group, kind="stable")
    gf_start = np.searchsorted(group[fac_of_group], np.arange(n_groups + 1))
    # (a reading of a facing of a SKU with several goes to its siblings too: ``sku_reading``)
    wide = (ef < 0) | ((ek == READING) & (sizes_g[eg] > 1))
    width = np.where(wide, sizes_g[eg], 1)
    u_ev = np.repeat(np.arange(len(eg)), width)
    within = np.arange(len(u_ev)) - np.repeat(np.cumsum(width) - width, width)
    u_fac = np.where(wide[u_ev], fac_of_group[gf_start[eg[u_ev]] + within], ef[u_ev])
    u_order = np.argsort(rank[u_ev], kind="stable")
    u_ev, u_fac = u_ev[u_order], u_fac[u_order]
    u_step = rank[u_ev]
    n_steps = int(rank.max()) + 1 if len(rank) else 0
    u_bounds = np.searchsorted(u_step, np.arange(n_steps + 1))
    s_order = np.argsort(s_count, kind="stable")
    s_bounds = np.searchsorted(s_count[s_order], np.arange(n_steps + 2))
    for k in range(n_steps + 1):
        taken = s_order[s_bounds[k]:s_bounds[k + 1]]
        if len(taken):
            captured[taken] = S[s_fac[taken]]
        if k == n_steps:
            break
        a, b = u_bounds[k], u_bounds[k + 1]
        _step(S, u_ev[a:b], u_fac[a:b], eg, ef, ek, et, ev, ex, er, ew, sizes_g)
    return _results(stores, samples, captured, group, store_of)


def _lookup(ids: np.ndarray, keys) -> np.ndarray:
    """Index in ``ids`` of each key's first occurrence, -1 where absent (or the key is None);
    ``keys`` a numpy array of text or an Arrow string array (a hash lookup in Arrow: only the
    cloud replays in batches, so pyarrow, not in the edge's dependencies, is imported here)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = keys if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(keys, dtype=object), pa.string())
    found = pc.index_in(keys.cast(pa.string()), value_set=pa.array(ids.astype(str).tolist(), pa.string()))
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def _step(S, ev_idx, fac, eg, ef, ek, et, ev, ex, er, ew, sizes_g) -> None:
    """Apply one lock step: each SKU group's next event, to the facings it touches."""
    kind = ek[ev_idx]
    for which in (SALE, READING, RESTOCK):
        m = kind == which
        if not m.any():
            continue
        e, f = ev_idx[m], fac[m]
        rows = S[f]
        ts = et[e].astype(np.float64)
        if which == SALE:
            shares, units_qty, pos_qty = _sku_sale(rows, ts, ev[e], er[e], eg[e], sizes_g)
            _sale(rows, ts, shares, ex[e], er[e], units_qty, pos_qty)
        elif which == READING:
            _sku_reading(rows, ts, ev[e], ex[e], ew[e], ef[e] == f, eg[e], sizes_g)
        else:
            _restock(rows, ts, ev[e])
        S[f] = rows


def _shares(rows: np.ndarray, qty: np.ndarray, g: np.ndarray, sizes_g: np.ndarray) -> np.ndarray:
    """``models.features.sale_shares`` per facing row (all rows of a group hold the same line)."""
    n = sizes_g[g]
    if (n == 1).all():
        return qty.copy()
    units = rows[:, _COL["units"]]
    stocked = np.where(qty > 0, np.isnan(units) | (units > 0), True)
    n_runs, inv = _runs(g)
    k = np.bincount(inv, weights=stocked.astype(np.float64), minlength=n_runs)[inv]
    return np.where(n == 1, qty, np.where(k == 0, qty / n, np.where(stocked, qty / np.where(k == 0, 1, k), 0.0)))


def _runs(g: np.ndarray) -> tuple[int, np.ndarray]:
    """Groups of a step's rows (each group's rows are contiguous: one event, its facings in
    order): their count and each row's group index (``np.unique``'s inverse, without a sort)."""
    if len(g) == 0:
        return 0, np.zeros(0, dtype=np.int64)
    inv = np.cumsum(np.r_[True, g[1:] != g[:-1]]) - 1
    return int(inv[-1]) + 1, inv


def _group_sum(inv: np.ndarray, n: int, x: np.ndarray) -> np.ndarray:
    """Per row: ``x`` summed over its group's rows, in row order (as Python's ``+=`` loop)."""
    return np.bincount(inv, weights=x.astype(np.float64), minlength=n)[inv]


def _sensed(rows: np.ndarray) -> np.ndarray:
    """``models.features._sensed`` per row."""
    return ((rows[:, _COL["has_sensor"]] > 0) & (rows[:, _COL["sensor_untrusted"]] == 0)
            & ~np.isnan(rows[:, _COL["last_reading_ms"]]))


def _live_guess(rows: np.ndarray, ts: np.ndarray) -> np.ndarray:
    at = rows[:, _COL["_guess_ms"]]
    return np.where(~np.isnan(at) & (ts - np.where(np.isnan(at), 0.0, at) <= GUESS_MS), rows[:, _COL["_guessed"]], 0.0)


def _sku_sale(rows, ts, qty, returned, g, sizes_g):
    """``models.features.sku_sale`` per facing row (all rows of a group hold the same line): the
    rates' shares, and what ``units`` and ``pos_units`` lose; the absorbed ``units_unexplained``
    and the guesses are updated in ``rows``."""
    shares = _shares(rows, qty, g, sizes_g)
    n = sizes_g[g]
    if (n == 1).all():
        return shares, shares, shares
    n_runs, inv = _runs(g)
    gsum = lambda x: _group_sum(inv, n_runs, x)  # noqa: E731
    sensed = _sensed(rows)
    routed = (n > 1) & (gsum(sensed) > 0)
    if not routed.any():
        return shares, shares, shares
    col = _COL
    unexp = rows[:, col["units_unexplained"]]
    pool = gsum(np.where(sensed, unexp, 0.0))
    sold = routed & (qty > 0)
    absorbed = np.where(sold, _min(qty, pool), 0.0)
    absorb = sold & (absorbed > 0) & sensed
    rows[:, col["units_unexplained"]] = np.where(
        absorb, _max(0.0, unexp - unexp * absorbed / np.where(absorb, pool, 1.0)), unexp)
    rest = qty - absorbed
    untrusted_sensor = (rows[:, col["has_sensor"]] > 0) & (rows[:, col["sensor_untrusted"]] > 0)
    est = np.where(untrusted_sensor, rows[:, col["pos_units"]], rows[:, col["units"]])
    takers = ~sensed & (np.isnan(est) | (est > 0))
    takers = np.where(gsum(takers) > 0, takers, sensed)
    k = gsum(takers)
    guessing = sold & (rest > 0) & takers
    part = rest / np.where(guessing, k, 1.0)
    debit = np.where(guessing & ~sensed, part, 0.0)
    guessed, at = rows[:, col["_guessed"]], rows[:, col["_guess_ms"]]
    live = _live_guess(rows, ts)
    void = routed & (qty < 0) & ~returned & ~sensed
    kb = gsum(~sensed)
    back = qty / np.where(void, kb, 1.0)
    debit = np.where(void, back, debit)
    rows[:, col["_guessed"]] = np.where(guessing, live + part, np.where(void, _max(0.0, guessed + back), guessed))
    rows[:, col["_guess_ms"]] = np.where(guessing, ts, at)
    units_qty = np.where(routed, debit, shares)
    pos_qty = np.where(routed & ~sensed, debit, shares)
    return shares, units_qty, pos_qty


def _sku_reading(rows, ts, units_est, battery, weight, target, g, sizes_g) -> None:
    """``models.features.sku_reading`` on rows ``rows``: ``target`` marks the read facing's row; the
    other rows are its SKU's siblings (a group's rows hold the same reading)."""
    col = _COL
    before, last = rows[:, col["units"]].copy(), rows[:, col["last_reading_units"]].copy()
    sub = rows[target]
    _reading(sub, ts[target], units_est[target], battery[target], weight[target])
    rows[target] = sub
    n = sizes_g[g]
    if (n == 1).all():
        return
    n_runs, inv = _runs(g)

    def of_target(x):  # the target row's value, on every row of its group
        out = np.zeros(n_runs, dtype=x.dtype)
        out[inv[target]] = x[target]
        return out[inv]

    units_est = of_target(rows[:, col["last_reading_units"]])  # as corrected (zero_creep)

    live = _live_guess(rows, ts)
    if not (live > 0).any():  # nothing held on a guess: nothing to explain
        return
    sensed = _sensed(rows)
    t_before, t_last, t_sensed = of_target(before), of_target(last), of_target(sensed)
    ok = (n > 1) & ~np.isnan(t_before) & ~np.isnan(t_last) & (t_last != units_est) & t_sensed
    if not ok.any():
        return
    drop = _max(0.0, t_before - units_est)
    pool = _group_sum(inv, n_runs, live)
    matched = np.where(ok, _min(drop, pool), 0.0)
    go = ok & (matched > 0)
    if not go.any():
        return
    take_on = go & (live > 0)
    take = live * matched / np.where(take_on, pool, 1.0)
    rows[:, col["_guessed"]] = np.where(take_on, _max(0.0, live - take), rows[:, col["_guessed"]])
    refill = take_on & ~target & ~sensed
    if refill.any():
        for name in ("units", "pos_units"):
            u = rows[:, col[name]]
            rows[:, col[name]] = np.where(refill & ~np.isnan(u), _refilled(rows, u, take), u)
    c = col["units_unexplained"]
    rows[:, c] = np.where(go & target, _max(0.0, drop - matched), rows[:, c])


def _results(stores, samples, captured, group, store_of):
    """Per store: feature matrix and snapshot states from the captured rows."""
    out_x = [np.zeros((len(s.instants) * len(s.states), len(FEATURES)), dtype=np.float32) for s in stores]
    out_s: list[list[list[dict]]] = [[] for _ in stores]
    at = 0
    feat = []  # (rows in captured, store, point, facing, instant)
    for i, snap, point, fac, _count in samples:
        rows = np.arange(at, at + len(fac))
        at += len(fac)
        if snap:
            n = len(stores[i].states)
            for p in range(len(stores[i].snapshots)):
                block = rows[p * n:(p + 1) * n]
                out_s[i].append([_to_dict(st, captured[r]) for st, r in zip(stores[i].states, block)])
        else:
            feat.append((rows, np.full(len(rows), i), point, fac, np.asarray(stores[i].instants, dtype=np.int64)[point]))
    if not feat:
        return list(zip(out_x, out_s))
    rows, st, point, fac, t = (np.concatenate([r[k] for r in feat]) for k in range(5))
    order = np.lexsort((fac, t))  # per instant; stores, then facings, in order within it
    rows, st, point, fac, t = rows[order], st[order], point[order], fac[order], t[order]
    bounds = np.flatnonzero(np.r_[True, t[1:] != t[:-1], True])
    first_fac = np.cumsum([0] + [len(s.states) for s in stores])
    for a, b in zip(bounds[:-1], bounds[1:]):
        f = fac[a:b]
        X = _compute(_gathered(captured[rows[a:b]]), int(t[a]), group[f], store_of[f]).astype(np.float32)
        for i in np.unique(st[a:b]):
            m = st[a:b] == i
            out_x[i][point[a:b][m] * len(stores[i].states) + f[m] - first_fac[i]] = X[m]
    return list(zip(out_x, out_s))
