"""gold.features labels from the lake's evidence: observed rows get 1 / 0 and a source, the rest NULL."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cloud.lake.labels import evidence_labels
from models.replay import Facing

H = 3_600_000
DAY = 1_767_571_200_000  # 2026-01-05 00:00 UTC
HORIZON = 2 * H
PLAN = [Facing("f1", "k1", 10), Facing("f2", "k2", 10), Facing("f3", "k2", 10), Facing("f4", "k4", 10, True)]


def at(hour: float) -> int:
    return DAY + int(hour * H)


def table(**cols) -> pa.Table:
    return pa.table(cols)


def labels(facing: str, hours: list[float], *, sensor_label=None, sensor_now=None, plan_extra=False, **events):
    t = np.array([at(h) for h in hours], np.int64)
    f = np.array([facing] * len(t), dtype=object)
    z = np.zeros(len(t), np.int64)
    plan = [Facing("f5", "k1", 3)] if plan_extra else PLAN  # f5: a 3-unit facing, its SKU's only one
    lab, now, src, staff = evidence_labels(f, t, z if sensor_label is None else np.array(sensor_label),
                                           z if sensor_now is None else np.array(sensor_now), plan, events, HORIZON)
    # without a sensor, staff and till evidence is the label
    assert [x for x, s in zip(staff.tolist(), src.tolist()) if s != "sensor"] == \
        [x for x, s in zip(lab.tolist(), src.tolist()) if s != "sensor"]
    return lab.tolist(), now.tolist(), src.tolist()


def scans(*hours_facings) -> pa.Table:
    return table(facing_id=[f for _, f in hours_facings], ts=[at(h) for h, _ in hours_facings])


def sales(*hours_skus) -> pa.Table:
    return table(sku=[s for _, s in hours_skus], ts=[at(h) for h, _ in hours_skus], qty=[1] * len(hours_skus),
                 kind=["sale"] * len(hours_skus))


def restocks(*rows) -> pa.Table:
    return table(facing_id=[f for _, f, _ in rows], ts=[at(h) for h, _, _ in rows], units_added=[u for _, _, u in rows])


def test_without_any_evidence_a_sensorless_facings_label_is_null():
    lab, now, src = labels("f1", [8, 9, 10, 11])
    assert lab == [-1, -1, -1, -1] and now == [-1, -1, -1, -1] and src == [None] * 4


def test_a_gap_scan_on_an_empty_sensorless_facing_labels_the_hours_before_it_1_until_the_next_restock():
    # scan at 12:30, refilled (partly) at 15:00; no sale of k1 at all
    lab, now, src = labels("f1", [10, 11, 12, 13, 14, 15, 16],
                           gaps=scans((12.5, "f1")), restocks=restocks((15, "f1", 4)))
    # window (t, t+2h]: 10 -> (10, 12] ends before the scan and nothing says when the shelf emptied
    assert lab == [-1, 1, 1, 1, 1, -1, -1]
    assert now == [-1, -1, -1, 1, 1, -1, -1]
    assert src == [None, "gap_scan", "gap_scan", "gap_scan", "gap_scan", None, None]


def test_the_last_sale_before_a_gap_scan_dates_the_stock_out_and_earlier_sales_prove_stock():
    # k1 has one facing (f1): sold at 7:30 and 9:10, scanned empty at 12:30, refilled at 15:00
    lab, now, src = labels("f1", [5, 6, 7, 8, 9, 10],
                           pos=sales((7.5, "k1"), (9 + 1 / 6, "k1")), gaps=scans((12.5, "f1")),
                           restocks=restocks((15, "f1", 4)))
    # 5 -> (5, 7]: stock seen at 9:10 with no restock between: 0 (till); 7 -> (7, 9]: 0 too;
    # 8 -> (8, 10] reaches the emptying sale at 9:10: 1
    assert lab == [0, 0, 0, 1, 1, 1]
    assert src == ["till", "till", "till", "gap_scan", "gap_scan", "gap_scan"]
    assert now == [0, 0, 0, 0, 0, 1]


def test_a_sale_proves_stock_on_a_never_restocked_facing_up_to_it():
    lab, now, src = labels("f1", [5, 7, 8], pos=sales((9.5, "k1")))
    assert lab == [0, 0, -1] and now == [0, 0, 0] and src == ["till", "till", None]


def test_sales_of_a_sku_with_several_facings_prove_nothing_about_one_facing():
    lab, _, src = labels("f2", [5, 6], pos=sales((9, "k2"), (10, "k2")))
    assert lab == [-1, -1] and src == [None, None]


def test_a_restock_of_a_whole_facing_proves_it_was_empty_before_and_a_restock_ends_the_window_of_a_sale():
    lab, _, src = labels("f2", [12, 13, 14], restocks=restocks((14.5, "f2", 10)))
    assert lab == [-1, 1, 1] and src == [None, "restock", "restock"]  # (12, 14] ends before the proof
    # stock seen at 18:00 but refilled (partly) at 16:00 in between: 13 -> (13, 15] is unknown
    lab, _, _ = labels("f1", [13, 16], pos=sales((18, "k1")), restocks=restocks((16, "f1", 3)))
    assert lab == [-1, 0]


def test_a_live_sensor_labels_its_facing_and_a_silent_one_leaves_it_to_other_evidence():
    readings = [h / 2 for h in range(0, 2 * 24)]  # every 30 min ...
    readings = [h for h in readings if not 8 <= h < 14]  # ... silent 08:00-14:00
    ev = {"readings": table(facing_id=["f4"] * len(readings), ts=[at(h) for h in readings],
                            units_est=[0 if 14 <= h < 16 else 5 for h in readings])}
    lab, now, src = labels("f4", [3, 4, 7, 10, 15], sensor_label=[1, 0, 0, 0, 1], sensor_now=[0, 0, 0, 0, 1], **ev)
    assert lab == [1, 0, -1, -1, 1] and now == [0, 0, -1, -1, 1]
    assert src == ["sensor", "sensor", None, None, "sensor"]
    # the silence is covered by a gap scan at 10:30
    lab, _, src = labels("f4", [7, 10], sensor_label=[0, 0], **ev, gaps=scans((10.5, "f4")))
    assert lab == [-1, 1] and src == [None, "gap_scan"]
    # where the sensor labels, label_without_sensor still says what a gap scan would have
    t = np.array([at(3), at(15)], np.int64)
    _, _, src, staff = evidence_labels(np.array(["f4", "f4"], dtype=object), t, np.array([1, 1]), np.array([0, 1]),
                                       PLAN, {**ev, "gaps": scans((15.5, "f4"))}, HORIZON)
    assert src.tolist() == ["sensor", "sensor"] and staff.tolist() == [-1, 1]


def test_evidence_more_than_its_reach_after_a_row_does_not_label_it_and_the_lake_recomputes_that_far_back():
    from cloud.lake.features import LABEL_HORIZON_H
    from cloud.lake.labels import EVIDENCE_MS
    from cloud.lake.runner import LABEL_CONTEXT_DAYS, LABEL_REACH_DAYS

    lab, _, _ = labels("f1", [5, 8], pos=sales((5 + 21, "k1")))  # sold 21 h after 5:00, 18 h after 8:00
    assert lab == [-1, 0]
    # a run recomputes every row new evidence can change, with the evidence those rows need
    assert EVIDENCE_MS + LABEL_HORIZON_H * H <= LABEL_REACH_DAYS * 24 * H
    assert 2 * EVIDENCE_MS <= (LABEL_CONTEXT_DAYS - LABEL_REACH_DAYS) * 24 * H


def lines(*rows) -> pa.Table:
    """Till lines (hour, sku, qty, kind)."""
    return table(sku=[s for _, s, _, _ in rows], ts=[at(h) for h, _, _, _ in rows], qty=[float(q) for _, _, q, _ in rows],
                 kind=[k for _, _, _, k in rows])


def test_a_sensorless_facing_the_till_emptied_is_labelled_1_from_the_emptying_sale_to_a_partial_refill():
    # f1 (capacity 10, its SKU's only facing) refilled with 10 at 6:00, sold 2 units at 7, 8, 8.5, 9
    # and 9.5 (ten in all: the shelf held at most 10), refilled with 6 (not a whole facing) at 15:00
    pos = lines(*((h, "k1", 2, "sale") for h in (7, 8, 8.5, 9, 9.5)))
    lab, now, src = labels("f1", [7, 8, 10, 14, 15], pos=pos, restocks=restocks((6, "f1", 10), (15, "f1", 6)))
    # 7 -> (7, 9] ends before the last unit went; 8 -> (8, 10] meets it; the gap lasts until 15:00
    assert lab[1:4] == [1, 1, 1] and src[1:4] == ["ledger"] * 3
    assert now[1:4] == [0, 1, 1]
    assert lab[4] == -1 and src[4] is None  # after the partial refill nothing is known


def test_sales_beyond_what_a_refill_added_prove_stock_before_it():
    # restocked with 3 at 11:00, then 4 units sold by 15:00: at least one unit was there before 11:00
    pos = lines(*((h, "k1", 1, "sale") for h in (12, 13, 14, 15)))
    lab, now, src = labels("f1", [10], pos=pos, restocks=restocks((11, "f1", 3)))
    assert lab == [0] and src == ["ledger"] and now == [0]
    # 3 units sold after a refill of 3: they may all have been the new ones
    pos = lines(*((h, "k1", 1, "sale") for h in (12, 13, 14)))
    lab, _, src = labels("f1", [10], pos=pos, restocks=restocks((11, "f1", 3)))
    assert lab == [-1] and src == [None]


def test_the_ledger_nets_voids_and_drops_an_emptying_the_till_or_a_refill_contradicts():
    # capacity 3: three units sold after a full refill empty it (until the partial refill at 15:00) ...
    three = [(7, "k1", 1, "sale"), (8, "k1", 1, "sale"), (9, "k1", 1, "sale")]
    refills = restocks((6, "f5", 3), (15, "f5", 2))
    lab, _, src = labels("f5", [8, 10], pos=lines(*three), restocks=refills, plan_extra=True)
    assert lab == [1, 1] and src == ["ledger", "ledger"]
    # ... but not when the third scan was voided: a unit is still there
    lab, _, src = labels("f5", [8, 10], pos=lines(*three, (9.001, "k1", -1, "void")), restocks=refills, plan_extra=True)
    assert 1 not in lab
    # emptied at 9:00 by the ledger, but the till sells the SKU again at 12:00 before any refill
    sold_again = lines((7, "k1", 1, "sale"), (8, "k1", 1, "sale"), (9, "k1", 1, "sale"), (12, "k1", 1, "sale"))
    lab, _, src = labels("f5", [8, 9, 10], pos=sold_again, restocks=restocks((6, "f5", 3)), plan_extra=True)
    assert 1 not in lab
    # emptied at 9:00 and refilled 5 minutes later: the sale may have rung up after the refill
    lab, _, _ = labels("f5", [8], pos=lines((7, "k1", 1, "sale"), (8, "k1", 1, "sale"), (9, "k1", 1, "sale")),
                       restocks=restocks((6, "f5", 3), (9 + 5 / 60, "f5", 2)), plan_extra=True)
    assert lab == [-1]


def test_the_ledger_takes_a_void_back_whichever_sign_the_register_wrote():
    # capacity 3, full at 6:00; a unit scanned at 7:00 and voided (the register writes the void's
    # qty as +1, which the contract allows: models.features.pos_line_qty), then sales at 8 and 9:
    # two units sold, one is still there, so nothing proves the shelf empty after 9:00
    refills = restocks((6, "f5", 3), (15, "f5", 2))
    for void_qty in (-1, 1):
        pos = lines((7, "k1", 1, "sale"), (7.001, "k1", void_qty, "void"), (8, "k1", 1, "sale"), (9, "k1", 1, "sale"))
        lab, _, src = labels("f5", [10, 12], pos=pos, restocks=refills, plan_extra=True)
        assert 1 not in lab, (void_qty, lab, src)
    # the same with the void left out takes three units: emptied at 9:00 until the refill at 15:00
    pos = lines((7, "k1", 1, "sale"), (8, "k1", 1, "sale"), (9, "k1", 1, "sale"))
    lab, _, src = labels("f5", [10, 12], pos=pos, restocks=refills, plan_extra=True)
    assert lab == [1, 1] and src == ["ledger", "ledger"]


def test_the_ledger_counts_units_exactly_after_many_refills_of_unknown_size():
    # a store's history with 20,000 staff checks that restocked (units unknown) on facing "a0":
    # the ledger of the facing after it must still count single units: f5 (capacity 3, full at
    # 6:00) sold three units by 9:00 is empty until the partial refill at 15:00
    plan = [Facing("a0", "ka", 10), Facing("f5", "k1", 3)]
    n = 20_000
    checks = table(facing_id=["a0"] * n, ts=[at(-24 * 30) + i * 60_000 for i in range(n)], outcome=["restocked"] * n)
    pos = lines((7, "k1", 1, "sale"), (8, "k1", 1, "sale"), (9, "k1", 1, "sale"))
    t = np.array([at(10), at(12), at(10)], np.int64)  # rows of both facings (a facing without rows has no evidence)
    z = np.zeros(3, np.int64)
    lab, _, src, _ = evidence_labels(np.array(["f5", "f5", "a0"], dtype=object), t, z, z, plan,
                                     {"pos": pos, "restocks": restocks((6, "f5", 3), (15, "f5", 2)), "checks": checks},
                                     HORIZON)
    assert lab.tolist()[:2] == [1, 1] and src.tolist()[:2] == ["ledger", "ledger"]
