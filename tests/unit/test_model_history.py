"""Reading simulator history folders: events, planogram, and stock-outs from true shelf units."""

from __future__ import annotations

import pytest

from models.history import load_history, stockouts_from_shelf_units


def test_stockouts_are_the_intervals_where_true_units_are_zero():
    got = stockouts_from_shelf_units(
        "s1", ["a", "a", "a", "a", "a", "b", "b"], [50, 10, 20, 30, 40, 10, 20], [0, 5, 0, 2, 0, 0, 0])
    # a: empty 20-30, again from 40 (still empty at 50); b: empty from the start, never refilled.
    assert got == [("s1", "a", 20, 30), ("s1", "a", 40, None), ("s1", "b", 10, None)]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    from firmware_sim.history import generate

    return generate(tmp_path_factory.mktemp("h"), stores=2, skus=12, days=3, seed=5, workers=1).out_dir


def test_history_folder_loads_every_store_with_events_planogram_and_truth(history):
    stores = load_history(history)
    assert [h.store_id for h in stores] == ["s001", "s002"]
    h = stores[0]
    types = {e["type"] for e in h.events}
    assert {"pos.line", "shelf.restock"} <= types
    assert len({(e["device_id"], e["seq"]) for e in h.events}) == len(h.events)  # deduplicated
    assert h.facings and all(f.capacity > 0 for f in h.facings)
    assert h.end_ms - h.start_ms == 3 * 24 * 3600 * 1000
    facing_ids = {f.facing_id for f in h.facings}
    assert all(s[1] in facing_ids and (s[3] is None or s[3] > s[2]) for s in h.stockouts)


def test_prefix_keeps_stores_of_different_folders_apart(history):
    stores = load_history(history, ["s002"], prefix="setA")
    assert [h.store_id for h in stores] == ["setA/s002"]
    assert {e["store_id"] for e in stores[0].events} == {"setA/s002"}
    assert all(s[0] == "setA/s002" for s in stores[0].stockouts)
