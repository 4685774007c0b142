"""demand_band: the rule in force since session 8, ``shelf_switch`` (the SKU's rate while on its
shelf, net of the shoppers a same-category product that emptied today sent it); the rule in force
before, ``share`` (a spike shows in the early part of the day; a share that rises late does not
count); the exposure rule (a SKU far above its rate while on sale, net of the shoppers a silent
product of its category sent it) and "shelf", measured and not in force."""

from __future__ import annotations

import json

from cloud.stream.detectors import Categories, DetectorConfig, StoreWatch
from gondola.clock import DAY_MS, HOUR_MS, MINUTE_MS
from models.replay import Facing

CFG = DetectorConfig(band_rule="exposure")
PREVIOUS = DetectorConfig(band_rule="share")  # the rule in force before session 8
T0 = 20 * DAY_MS
OPEN, CLOSE = 7, 22
#: 'x', 'y' and 'z' are dairy; the background products are pantry.
CATEGORIES = Categories({"x": "dairy", "y": "dairy", "z": "dairy", **{f"b{k:02d}": "pantry" for k in range(96)}})


def _sales(day: int, sku: str, per_day: float, start_h: float = OPEN, end_h: float = CLOSE,
           phase: float = 0.5) -> list[tuple[int, str]]:
    """``per_day`` units of ``sku`` spread evenly over [start_h, end_h) of ``day``, at the rate of a
    full opening day (a shorter stretch sells its share of that), shifted by ``phase`` of a step."""
    n = int(round(per_day * (end_h - start_h) / (CLOSE - OPEN)))
    step = (end_h - start_h) * HOUR_MS / max(n, 1)
    return [(T0 + day * DAY_MS + int(start_h * HOUR_MS + (k + phase) * step), sku) for k in range(n)]


def _run(day2: list[tuple[int, str]], usual: dict[str, float] | None = None, cfg: DetectorConfig = CFG,
         categories: Categories | None = CATEGORIES, history: list[list[tuple[int, str]]] | None = None,
         events: list[tuple[int, str, dict]] = (), planogram: list | None = None) -> list[dict]:
    """A store selling 192 units a day of 96 background products at 2, and ``usual`` (units a
    day, default 'x' and 'y' at 4) for two days (or ``history``), then ``day2`` on top of the
    background on the third; ``events``: other events (ts, type, data) among the sales."""
    usual = {"x": 4.0, "y": 4.0} if usual is None else usual
    sales: list[tuple[int, str]] = []
    for day in range(3):
        for k in range(96):
            sales += _sales(day, f"b{k:02d}", 2.0, phase=k / 96)
        if day < 2:
            sales += history[day] if history is not None else [s for sku, n in usual.items() for s in _sales(day, sku, n)]
    stream = sorted([(ts, "pos.line", {"sku": sku, "qty": 1, "kind": "sale", "price_cents": 100}) for ts, sku in sales + day2]
                    + list(events), key=lambda e: e[0])
    w = StoreWatch("s1")
    w.start(T0, planogram)
    rows: list[dict] = []
    tick = T0 + 5 * MINUTE_MS
    for seq, (ts, etype, data) in enumerate(stream):
        while tick <= ts:
            rows += w.tick(tick, cfg, categories=categories)
            tick += 5 * MINUTE_MS
        device = f"pos-s1-r{seq % 3}" if etype == "pos.line" else "dev-s1"
        w.observe(etype, device, ts, {"txn_id": seq, **data} if etype == "pos.line" else data, cfg)
    while tick <= T0 + 3 * DAY_MS:
        rows += w.tick(tick, cfg, categories=categories)
        tick += 5 * MINUTE_MS
    return [r for r in rows if r["kind"] == "demand_band"]


def test_a_spike_from_the_opening_is_flagged_the_same_day():
    # 'x' sells 8 x its usual 4 a day from the opening on (and 'y' as usual).
    rows = _run(_sales(2, "x", 32.0) + _sales(2, "y", 4.0))
    assert [r["subject"] for r in rows] == ["x"]
    assert OPEN * HOUR_MS <= rows[0]["first_seen"] - T0 - 2 * DAY_MS < 15 * HOUR_MS
    assert rows[0]["score"] >= CFG.band_ratio


def test_a_slow_sellers_spike_is_flagged_once_it_shows_and_the_previous_rule_missed_it():
    # 'x' usually sells 3 a day; a spike of 6 x with its siblings selling as usual. It reaches 10
    # units only after half the store's day: the previous rule judged the early part of the day only.
    usual = {"x": 3.0, "y": 4.0, "z": 12.0}
    today = _sales(2, "x", 18.0) + _sales(2, "y", 4.0) + _sales(2, "z", 12.0)
    rows = _run(today, usual)
    assert [r["subject"] for r in rows] == ["x"]
    assert rows[0]["first_seen"] - T0 - 2 * DAY_MS < CLOSE * HOUR_MS
    assert _run(today, usual, cfg=PREVIOUS) == []


def test_a_sku_whose_substitute_ran_empty_selling_5_x_its_usual_is_not_flagged():
    # 'z' (48 a day, same category) runs empty at 08:00; half of its shoppers take 'y' instead:
    # 'y' sells 4 + 16 = 20 units, 5 x its usual. The previous rule (and this one without the
    # categories) flags it: it shows in the morning.
    usual = {"x": 4.0, "y": 4.0, "z": 48.0}
    today = (_sales(2, "x", 4.0) + _sales(2, "y", 4.0) + _sales(2, "y", 16.0 * 15 / 14, 8, CLOSE)
             + _sales(2, "z", 48.0, OPEN, 8))
    assert sum(1 for _, sku in today if sku == "y") == 20
    assert _run(today, usual) == []
    flagged = _run(today, usual, cfg=PREVIOUS)
    assert [r["subject"] for r in flagged] == ["y"]
    without = _run(today, usual, categories=None)
    assert [r["subject"] for r in without] == ["y"]
    # A product of another category going empty explains nothing.
    other = Categories({"y": "dairy", "z": "frozen"})
    assert [r["subject"] for r in _run(today, usual, categories=other)] == ["y"]


def test_a_spike_is_still_flagged_while_a_sibling_is_empty():
    # 'x' spikes 8 x from the opening while 'z' (12 a day) is empty from 12:00: what 'z' lost
    # (half of its 8 units after noon) explains a few units of the spike, not 28.
    usual = {"x": 4.0, "y": 4.0, "z": 12.0}
    today = _sales(2, "x", 32.0) + _sales(2, "y", 4.0) + _sales(2, "z", 12.0, OPEN, 12)
    rows = _run(today, usual)
    assert [r["subject"] for r in rows] == ["x"]


def test_a_day_the_shelf_stood_empty_does_not_lower_the_usual():
    # 'y' sells 40 a day; yesterday it sold 4 units in the first hour and then none (the shelf was
    # empty), the day before none at all. Today it sells its 40 again: not an anomaly. The
    # previous rule, on its best share of those days, flags it.
    history = [[], _sales(1, "y", 60.0, OPEN, 8)]
    history[0] = _sales(0, "x", 4.0)
    history[1] = history[1] + _sales(1, "x", 4.0)
    today = _sales(2, "x", 4.0) + _sales(2, "y", 40.0)
    assert _run(today, history=history) == []
    assert [r["subject"] for r in _run(today, history=history, cfg=PREVIOUS)] == ["y"]


def test_share_flags_a_spike_in_the_morning_and_not_a_share_that_rises_late():
    # 'x' 8 x its usual from the opening: flagged in the early part of the day.
    rows = _run(_sales(2, "x", 32.0) + _sales(2, "y", 4.0), cfg=PREVIOUS)
    assert [r["subject"] for r in rows] == ["x"]
    assert OPEN * HOUR_MS <= rows[0]["first_seen"] - T0 - 2 * DAY_MS < 15 * HOUR_MS
    # 'y' as usual until 16:00, then 20 x (shoppers switching from a product that ran empty):
    # 34 units by the close against 4 usual, after half the day: not judged.
    late = _sales(2, "x", 4.0) + _sales(2, "y", 4.0, OPEN, 16) + _sales(2, "y", 80.0, 16, CLOSE)
    assert _run(late, cfg=PREVIOUS) == []


SHELF = DetectorConfig(band_rule="shelf")
EXPOSURE = DetectorConfig(band_rule="exposure")
#: 'y' has one facing of 12 units (with a load cell), 'x' one of 12 without
SHELVES = [Facing("s1-fy", "y", 12, True), Facing("s1-fx", "x", 12, False)]


#: 'y' on the first day: 3 units from 07:00 to 07:30, then its shelf is empty
_first_half_hour = [(T0 + int((OPEN + k * 0.1) * HOUR_MS), "y") for k in range(3)]


def _refill(day: int, hour: float, sku: str, units: int) -> tuple[int, str, dict]:
    return (T0 + day * DAY_MS + int(hour * HOUR_MS), "shelf.restock",
            {"facing_id": f"s1-f{sku}", "sku": sku, "units_added": units, "staff_id": "staff-1"})


def _reading(day: int, hour: float, units: float) -> tuple[int, str, dict]:
    return (T0 + day * DAY_MS + int(hour * HOUR_MS), "shelf.reading", {"facing_id": "s1-fy", "sku": "y", "units_est": units})


def test_shelf_a_product_back_on_a_refilled_shelf_is_not_a_spike():
    # 'y' sells 20 a day. Its backroom ran dry: it sold 3 units by 07:30 and none after, nor the
    # next day. The next morning a restock scan adds its shelf's whole capacity (12 units), and it
    # sells its 20 again. By the till alone it looks like a slow seller selling 7 x its usual (the
    # silences never reach 3 units at the rate 3 units a day give): the exposure rule flags it, and
    # so does "shelf" without the refill scan. With the scan, the shelf was empty from its last
    # sale to the refill, and its rate is the one of its first half hour: not flagged.
    history = [_sales(0, "x", 4.0) + _first_half_hour, _sales(1, "x", 4.0)]
    today = _sales(2, "x", 4.0) + _sales(2, "y", 20.0)
    scan = [_refill(2, 6.8, "y", 12)]
    assert _run(today, history=history, cfg=SHELF, categories=None, events=scan, planogram=SHELVES) == []
    assert [r["subject"] for r in _run(today, history=history, cfg=EXPOSURE, categories=None, events=scan,
                                       planogram=SHELVES)] == ["y"]
    assert [r["subject"] for r in _run(today, history=history, cfg=SHELF, categories=None,
                                       planogram=SHELVES)] == ["y"]
    # A refill of a quarter of the shelf says nothing about an empty shelf.
    assert [r["subject"] for r in _run(today, history=history, cfg=SHELF, categories=None,
                                       events=[_refill(2, 6.8, "y", 3)], planogram=SHELVES)] == ["y"]


def test_shelf_a_load_cell_reading_0_through_the_close_marks_the_days_off_the_shelf():
    # The same story without a restock scan: the load cell under 'y' read 0 from 07:35 on the
    # first day until the refill; its days off the shelf do not count into its rate.
    history = [_sales(0, "x", 4.0) + _first_half_hour, _sales(1, "x", 4.0)]
    today = _sales(2, "x", 4.0) + _sales(2, "y", 20.0)
    cells = [_reading(0, 6.0, 3.0)] + [_reading(d, h, 0.0) for d in (0, 1) for h in range(8, 24, 2)] + [_reading(2, 6.8, 12.0)]
    assert _run(today, history=history, cfg=SHELF, categories=None, events=cells, planogram=SHELVES) == []
    assert [r["subject"] for r in _run(today, history=history, cfg=EXPOSURE, categories=None, events=cells,
                                       planogram=SHELVES)] == ["y"]


def test_shelf_a_spike_from_the_opening_is_flagged_while_its_shelf_is_refilled():
    # 'x' sells 8 x its usual 4 from the opening; its 12-unit shelf runs empty and is refilled
    # at 10:00, 13:00 and 16:00 (scans of the whole shelf): the refills of today take nothing
    # off today's units. Flagged before the close, 'y' as usual is not.
    today = _sales(2, "x", 32.0) + _sales(2, "y", 4.0)
    scans = [_refill(2, h, "x", 12) for h in (10, 13, 16)]
    rows = _run(today, cfg=SHELF, categories=None, events=scans, planogram=SHELVES)
    assert [r["subject"] for r in rows] == ["x"]
    assert rows[0]["first_seen"] - T0 - 2 * DAY_MS < CLOSE * HOUR_MS


def test_shelf_a_load_cell_reading_0_at_the_close_counts_when_the_shelf_is_refilled_before_the_next_sale():
    # A store without restock scans: 'y' (20 a day) got 3 units on each of the two days before,
    # sold them in the first half hour, and its load cell read 0 through the close; each next
    # morning the round refilled it at 06:48, before the store's first sale (07:00), and the cell
    # read it at once. The close was learned at the first sale, after that reading had ended
    # the zero: the evidence was lost and 'y' back on its shelf was flagged as a spike.
    def first_half_hour(day: int) -> list[tuple[int, str]]:
        return [(ts + day * DAY_MS, sku) for ts, sku in _first_half_hour]

    history = [_sales(0, "x", 4.0) + first_half_hour(0), _sales(1, "x", 4.0) + first_half_hour(1)]
    today = _sales(2, "x", 4.0) + _sales(2, "y", 20.0)
    cells = [r for d in (0, 1) for r in [_reading(d, 6.8, 3.0)] + [_reading(d, h, 0.0) for h in range(8, 24, 2)]]
    cells += [_reading(2, 6.8, 12.0)]
    assert _run(today, history=history, cfg=SHELF, categories=None, events=cells, planogram=SHELVES) == []
    # without the cells the till alone sees a seller of 3 a day selling 20: flagged
    assert [r["subject"] for r in _run(today, history=history, cfg=SHELF, categories=None,
                                       planogram=SHELVES)] == ["y"]


SHELF_SWITCH = DetectorConfig()  # the rule in force (band_rule="shelf_switch")


def test_shelf_switch_flags_a_spike_from_the_opening_and_nothing_on_an_ordinary_day():
    # 'x' sells 8 x its usual 4 from the opening: flagged the same day, with the numbers it rests
    # on. The same store on an ordinary day ('x' and 'y' at their usual 4) raises nothing.
    rows = _run(_sales(2, "x", 32.0) + _sales(2, "y", 4.0), cfg=SHELF_SWITCH)
    assert [r["subject"] for r in rows] == ["x"]
    assert OPEN * HOUR_MS <= rows[0]["first_seen"] - T0 - 2 * DAY_MS < CLOSE * HOUR_MS
    evidence = json.loads(rows[0]["evidence"])
    assert evidence["switched_in"] == 0 and evidence["units_last_days"] == 8
    assert 10 <= evidence["units_today"] <= 32 and evidence["chance"] <= SHELF_SWITCH.band_shelf_alpha
    assert _run(_sales(2, "x", 4.0) + _sales(2, "y", 4.0), cfg=SHELF_SWITCH) == []


def test_shelf_switch_a_product_back_on_a_refilled_shelf_is_not_a_spike():
    # 'y' (20 a day) sold 3 units in its first half hour two days ago and none since, until a
    # restock scan of its whole shelf this morning: back from an empty shelf, not a spike (the
    # exposure rule, on the till alone, flags it).
    history = [_sales(0, "x", 4.0) + _first_half_hour, _sales(1, "x", 4.0)]
    today = _sales(2, "x", 4.0) + _sales(2, "y", 20.0)
    assert _run(today, history=history, cfg=SHELF_SWITCH, events=[_refill(2, 6.8, "y", 12)], planogram=SHELVES) == []
    assert [r["subject"] for r in _run(today, history=history, cfg=EXPOSURE, categories=None,
                                       planogram=SHELVES)] == ["y"]


def test_shelf_switch_shoppers_from_a_sibling_that_emptied_today_are_not_a_spike():
    # 'z' (48 a day, same category) sells from the opening and runs empty at 08:00; half of its
    # shoppers take 'y': 'y' sells 20 units, 5 x its usual, all after 'z' fell silent. "shelf"
    # (no categories) flags it; the rule nets out what 'z' lost since.
    usual = {"x": 4.0, "y": 4.0, "z": 48.0}
    today = (_sales(2, "x", 4.0) + _sales(2, "y", 4.0) + _sales(2, "y", 16.0 * 15 / 14, 8, CLOSE)
             + _sales(2, "z", 48.0, OPEN, 8))
    assert _run(today, usual, cfg=SHELF_SWITCH) == []
    assert [r["subject"] for r in _run(today, usual, cfg=SHELF, categories=None)] == ["y"]


def test_shelf_switch_a_spike_beside_a_sibling_silent_since_the_opening_is_flagged():
    # 'x' spikes 8 x from the opening. 'z' (12 a day, same category) sells nothing today: its
    # shelf stood empty since yesterday evening, a coincidence beside the spike. The exposure
    # rule lets 'z''s loss explain 'x''s units and misses the spike until the evening; this rule
    # counts only a sibling that sold today and then fell silent: flagged in the morning.
    usual = {"x": 4.0, "y": 4.0, "z": 12.0}
    history = [_sales(0, "x", 4.0) + _sales(0, "y", 4.0) + _sales(0, "z", 12.0),
               _sales(1, "x", 4.0) + _sales(1, "y", 4.0) + _sales(1, "z", 12.0, OPEN, 18)]
    today = _sales(2, "x", 32.0) + _sales(2, "y", 4.0)
    rows = _run(today, usual, cfg=SHELF_SWITCH, history=history)
    assert [r["subject"] for r in rows] == ["x"]
    assert rows[0]["first_seen"] - T0 - 2 * DAY_MS < 12 * HOUR_MS
    late = _run(today, usual, cfg=EXPOSURE, history=history)
    assert [r["subject"] for r in late] == ["x"] and late[0]["first_seen"] > rows[0]["first_seen"]
    # 'x' spikes 6 x while a sibling (48 a day) empties at 09:00, when 'x' had already sold 3 x
    # its rate: the sibling explains nothing (counted, half its loss would hide the spike).
    today = _sales(2, "x", 24.0) + _sales(2, "y", 4.0) + _sales(2, "z", 48.0, OPEN, 9)
    rows = _run(today, {"x": 4.0, "y": 4.0, "z": 48.0}, cfg=SHELF_SWITCH)
    assert [r["subject"] for r in rows] == ["x"] and json.loads(rows[0]["evidence"])["switched_in"] == 0
