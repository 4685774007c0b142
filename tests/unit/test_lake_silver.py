"""Bronze -> silver as a pure function: typing, dedup, expectations, quarantine, masking."""

from __future__ import annotations

import json

import pytest

from cloud.ingest.source import ReceivedMessage
from cloud.ingest.stream import bronze_rows
from cloud.lake.engine import DuckDBEngine
from cloud.lake.silver import ExpectationFailed, silver_events
from gondola.contracts import encode_batch, make_event

T0 = 1_764_460_800_000
ENGINE = DuckDBEngine()


def sale(seq: int, *, device: str = "pos-s001-r01", **data) -> dict:
    d = {"txn_id": f"t{seq}", "register": "r01", "line": 1, "sku": "sku-1", "qty": 2, "price_cents": 150,
         "loyalty_pid": "ab" * 16} | data
    return make_event("pos.line", store_id="s001", device_id=device, seq=seq, ts=T0 + seq * 1000, data=d)


def reading(seq: int, units: int, **data) -> dict:
    d = {"facing_id": "s001-f01", "sku": "sku-1", "weight_g": units * 100.0, "units_est": units,
         "battery_pct": 80.0, "rssi_dbm": -60} | data
    return make_event("shelf.reading", store_id="s001", device_id="shelf-1", seq=seq, ts=T0 + seq * 60_000, data=d)


def bronze(*batches: list[dict], start: int = 0):
    msgs = []
    for i, events in enumerate(batches):
        m = encode_batch(events, store_id="s001")
        msgs.append(ReceivedMessage("0", str(start + i), start + i, T0 + i, m.properties, m.body))
    return bronze_rows(msgs, source="test", run_id="r1", now_ms=T0)


def run(b, existing=None):
    return silver_events(ENGINE, b, existing or {}, run_id="r1", run_at=T0)


def results(out) -> dict[tuple[str, str], tuple[int, int]]:
    return {(r["table_name"], r["expectation"]): (r["checked"], r["failed"]) for r in out["expectations"].to_pylist()}


def test_events_are_typed_per_event_type():
    out = run(bronze([sale(1), reading(1, 5)]))
    pos = out["tables"]["silver.pos_line"].to_pylist()
    assert pos[0]["qty"] == 2 and pos[0]["price_cents"] == 150 and pos[0]["kind"] == "sale"
    assert out["tables"]["silver.shelf_reading"]["units_est"].to_pylist() == [5]
    assert out["tables"]["silver.shelf_reading"]["weight_g"].to_pylist() == [500.0]


def test_duplicates_within_a_batch_and_against_silver_are_removed_and_counted():
    b = bronze([sale(1), sale(2)], [sale(2), sale(3)])  # a retried message repeats seq 2
    out = run(b)
    assert sorted(out["tables"]["silver.pos_line"]["seq"].to_pylist()) == [1, 2, 3]
    assert out["stats"]["duplicates"] == 1
    existing = {"silver.pos_line": out["tables"]["silver.pos_line"].select(["device_id", "seq", "ts"])}
    again = run(bronze([sale(3), sale(4)], start=5), existing)
    assert again["tables"]["silver.pos_line"]["seq"].to_pylist() == [4]
    assert results(again)[("silver.pos_line", "unique_device_seq")] == (2, 1)


def test_the_first_arrival_of_a_repeated_event_is_kept_and_a_refused_copy_is_no_repeat():
    # a repeat (seq 2 again, other content, in a later message): the first arrival is kept
    out = run(bronze([sale(1), sale(2, qty=2)], [sale(2, qty=5), sale(3)]))
    pos = sorted(out["tables"]["silver.pos_line"].to_pylist(), key=lambda r: r["seq"])
    assert [(r["seq"], r["qty"]) for r in pos] == [(1, 2), (2, 2), (3, 2)] and out["stats"]["duplicates"] == 1
    # a copy an expectation drops (quarantined) is no repeat of the kept one: nothing deduplicated
    out = run(bronze([sale(1), sale(2, qty=2)], [sale(2, qty=5000)]))
    assert sorted(out["tables"]["silver.pos_line"]["seq"].to_pylist()) == [1, 2]
    assert out["stats"]["duplicates"] == 0 and out["stats"]["quarantined"] == 1


def test_count_distinct_leaves_out_a_tuple_with_a_null_on_duckdb_as_spark_does():
    import pyarrow as pa

    rows = pa.table({"a": ["x", "x", None, "y", "y"], "b": [1, 1, 1, None, 2]})
    got = ENGINE.run("SELECT COUNT_DISTINCT(a, b) AS n, COUNT_DISTINCT(a) AS one FROM t", {"t": rows}).to_pylist()
    assert got == [{"n": 2, "one": 2}]  # (x, 1) and (y, 2); a single argument: plain COUNT(DISTINCT)


def test_drop_expectations_quarantine_rows_with_their_reasons():
    out = run(bronze([sale(1), sale(2, qty=5000), reading(1, 3, facing_id=None)]))
    assert out["tables"]["silver.pos_line"]["seq"].to_pylist() == [1]
    assert out["tables"]["silver.shelf_reading"].num_rows == 0
    reasons = {(r["target_table"], r["seq"]): r["reasons"] for r in out["quarantine"].to_pylist()}
    # Each table's own expectations first, then the gateway's validator with its reason.
    assert reasons == {("silver.pos_line", 2): "qty_plausible,contract:out_of_range",
                       ("silver.shelf_reading", 1): "facing_present,contract:wrong_type"}
    assert results(out)[("silver.pos_line", "qty_plausible")] == (2, 1)


def test_warn_expectations_keep_the_row_and_count_it():
    skewed = reading(1, 3) | {"received_at": T0 + 2 * 86_400_000}
    out = run(bronze([skewed, reading(2, 3)]))
    assert out["tables"]["silver.shelf_reading"].num_rows == 2
    assert results(out)[("silver.shelf_reading", "clock_skew_under_1d")] == (2, 1)


def test_the_cloud_refuses_what_the_gateways_validator_refuses_even_where_sql_would_accept_it():
    # battery 150 % only warns in SQL; a float for an int, a string for a number, a bool, an
    # unknown field are all refused by the contract the gateway applies, with its reason.
    out = run(bronze([reading(1, 3, battery_pct=150.0), sale(1, qty=2.0), sale(2, price_cents="150"),
                      sale(3, qty=True), sale(4, colour="red"), sale(5)]))
    assert out["tables"]["silver.pos_line"]["seq"].to_pylist() == [5]
    assert out["tables"]["silver.shelf_reading"].num_rows == 0
    reasons = {(r["target_table"], r["seq"]): r["reasons"] for r in out["quarantine"].to_pylist()}
    assert reasons[("silver.shelf_reading", 1)] == "contract:out_of_range"
    assert reasons[("silver.pos_line", 1)] == "contract:wrong_type"
    assert reasons[("silver.pos_line", 2)].endswith("contract:wrong_type")
    assert reasons[("silver.pos_line", 4)] == "contract:unknown_field"
    assert results(out)[("silver.pos_line", "contract")] == (5, 4)


def test_a_restarted_device_counter_is_a_new_sequence_in_silver_not_duplicates():
    first = [sale(s) for s in (1, 2, 3)]
    again = [make_event("pos.line", store_id="s001", device_id="pos-s001-r01", seq=s, ts=T0 + 10_000 + s,
                        data=first[0]["data"] | {"txn_id": f"n{s}"}, epoch=7) for s in (1, 2)]
    out = run(bronze(first + again + again[:1]))
    pos = out["tables"]["silver.pos_line"]
    assert sorted(zip(pos["epoch"].to_pylist(), pos["seq"].to_pylist())) == [(0, 1), (0, 2), (0, 3), (7, 1), (7, 2)]
    assert out["stats"]["duplicates"] == 1
    existing = {"silver.pos_line": pos.select(["device_id", "epoch", "seq", "ts"])}
    assert run(bronze(again, start=5), existing)["tables"]["silver.pos_line"].num_rows == 0


def test_a_fail_expectation_stops_the_run():
    future = sale(1)
    future["schema"] = 9
    with pytest.raises(ExpectationFailed) as err:
        run(bronze([future]))
    assert err.value.name == "schema_supported" and err.value.failed == 1


def test_a_clear_loyalty_id_never_reaches_silver_and_is_masked_in_quarantine():
    leaked = sale(1, loyalty_id="4929-1234-5678")
    bad_and_leaked = sale(2, loyalty_id="4929-1234-5678", qty=99999)
    out = run(bronze([leaked, bad_and_leaked]))
    pos = out["tables"]["silver.pos_line"]
    assert "loyalty_id" not in pos.column_names
    assert "4929" not in json.dumps(pos.to_pylist())
    assert results(out)[("silver.pos_line", "no_clear_loyalty_id")] == (2, 2)
    raw = out["quarantine"]["raw"].to_pylist()[0]
    assert "4929" not in raw and '"loyalty_id":"<masked>"' in raw


def test_undecodable_messages_and_unknown_types_are_quarantined():
    broken = ReceivedMessage("0", "9", 9, T0, {"schema": "gondola.batch.v1", "content-encoding": "gzip"}, b"not gzip")
    odd = make_event("pos.line", store_id="s001", device_id="x", seq=1, ts=T0, data={})
    odd["type"] = "shelf.teleport"
    m = encode_batch([odd], store_id="s001")
    rows = bronze_rows([broken, ReceivedMessage("0", "10", 10, T0, m.properties, m.body)], source="t", run_id="r", now_ms=T0)
    out = run(rows)
    reasons = sorted(out["quarantine"]["reasons"].to_pylist())
    assert reasons[0].startswith("undecodable: bad_encoding") and reasons[1] == "unknown_type: shelf.teleport"


def test_late_rows_are_accepted_and_counted():
    first = run(bronze([reading(5, 3), reading(6, 3)]))
    existing = {"silver.shelf_reading": first["tables"]["silver.shelf_reading"].select(["device_id", "seq", "ts"])}
    late = run(bronze([reading(2, 0)], start=3), existing)
    assert late["tables"]["silver.shelf_reading"]["seq"].to_pylist() == [2]
    assert late["stats"]["late"] == 1


def test_a_batch_line_that_is_not_json_is_kept_in_bronze_and_quarantined_with_its_text():
    good = encode_batch([sale(1)], store_id="s001", encoding="identity")
    body = good.body + b"\n{not json"
    props = dict(good.properties, count="2")
    rows = bronze_rows([ReceivedMessage("0", "0", 0, T0, props, body)], source="t", run_id="r", now_ms=T0)
    assert rows["decode_error"].to_pylist() == [None, "bad_json: batch line 1 is not a JSON object"]
    assert rows["store_id"].to_pylist() == ["s001", "s001"] and rows["seq"].to_pylist() == [1, None]
    out = run(rows)
    assert out["tables"]["silver.pos_line"]["seq"].to_pylist() == [1]
    [q] = out["quarantine"].to_pylist()
    assert q["raw"] == "{not json" and q["reasons"].startswith("undecodable: bad_json")


def test_one_cast_rule_rejects_non_integral_and_non_finite_numbers():
    out = run(bronze([sale(1, qty=2.7), sale(2, qty=2.0), sale(3, qty="1e3"), sale(4, qty=2**70),
                      reading(1, 3, weight_g="NaN"), reading(2, 3, weight_g=1.5e2)]))
    pos = {r["seq"]: r["qty"] for r in out["tables"]["silver.pos_line"].to_pylist()}
    # 2.7 is not rounded to 3, 1e3 and 2**70 are not integers of int64; 2.0 is a float where the
    # contract wants an int (the gateway refuses it, so the cloud does too).
    assert pos == {}
    reasons = {(r["target_table"], r["seq"]): r["reasons"] for r in out["quarantine"].to_pylist()}
    assert reasons[("silver.pos_line", 1)] == "qty_plausible,contract:wrong_type" and ("silver.pos_line", 4) in reasons
    assert reasons[("silver.pos_line", 2)] == "contract:wrong_type"
    weights = {r["seq"]: r["weight_g"] for r in out["tables"]["silver.shelf_reading"].to_pylist()}
    assert weights == {2: 150.0}  # "NaN" is no number: refused, never NaN


def test_events_late_within_one_run_are_counted():
    # shelf-1 sends seq 3 (newer) in the first message and seq 1, 2 (older) in the next one
    out = run(bronze([reading(3, 5)], [reading(1, 5), reading(2, 5)]))
    assert out["stats"]["late"] == 2
    assert results(out)[("silver.shelf_reading", "in_device_order")] == (3, 2)


def test_unknown_skus_are_quarantined_once_master_data_is_known():
    import pyarrow as pa

    known = pa.table({"sku": ["sku-1"]})
    out = silver_events(ENGINE, bronze([sale(1), sale(2, sku="sku-x"), reading(1, 2, sku="sku-y")]), {},
                        run_id="r1", run_at=T0, known_skus=known)
    assert out["tables"]["silver.pos_line"]["seq"].to_pylist() == [1]
    assert out["tables"]["silver.shelf_reading"].num_rows == 0
    assert sorted(r["reasons"] for r in out["quarantine"].to_pylist()) == ["known_sku", "known_sku"]
    assert run(bronze([sale(2, sku="sku-x")]))["tables"]["silver.pos_line"].num_rows == 1  # no master data: kept


def test_a_re_sent_bad_event_is_quarantined_once():
    first = run(bronze([sale(1, qty=5000), sale(2, qty=5000)], [sale(1, qty=5000)]))
    assert first["quarantine"].num_rows == 2
    again = run(bronze([sale(1, qty=5000), sale(3, qty=5000)], start=5),
                {"silver.quarantine": first["quarantine"].select(["row_key"])})
    assert again["quarantine"]["seq"].to_pylist() == [3]


def test_undecodable_batches_keep_their_body_and_a_count_mismatch_keeps_its_events():
    import base64

    good = encode_batch([sale(1), sale(2)], store_id="s001")
    wrong_count = ReceivedMessage("0", "1", 1, T0, dict(good.properties, count="5"), good.body)
    bad_gzip = ReceivedMessage("0", "2", 2, T0, dict(good.properties), b"not gzip at all")
    b = bronze_rows([wrong_count, bad_gzip], source="test", run_id="r1", now_ms=T0)
    dead = [r for r in b.to_pylist() if r["decode_error"]]
    assert [base64.b64decode(r["raw_body_b64"]) for r in dead] == [good.body, b"not gzip at all"]
    assert dead[0]["decode_error"].startswith("bad_count")
    out = run(b)
    assert out["tables"]["silver.pos_line"]["seq"].to_pylist() == [1, 2]  # the events inside are kept
    assert sorted(r["reasons"].split(":")[0] for r in out["quarantine"].to_pylist()) == ["undecodable", "undecodable"]
    assert len(set(out["quarantine"]["row_key"].to_pylist())) == 2


def test_a_line_with_a_lone_surrogate_is_a_dead_letter_and_the_rest_of_its_batch_reaches_silver():
    # Issue 10 point 2: DuckDB refuses "\ud800" for the whole batch; bronze now keeps that line
    # apart (base64, decode_error) and the batch's other POS lines go through.
    good = encode_batch([sale(1), sale(2)], store_id="s001", encoding="identity")
    bad = json.dumps(sale(3)).replace('"sku-1"', '"\\ud800"')
    body = good.body + b"\n" + bad.encode()
    rows = bronze_rows([ReceivedMessage("0", "0", 0, T0, dict(good.properties, count="3"), body)],
                       source="t", run_id="r", now_ms=T0)
    assert rows["decode_error"].to_pylist()[:2] == [None, None]
    assert rows["decode_error"].to_pylist()[2].startswith("bad_text")
    out = run(rows)
    assert out["tables"]["silver.pos_line"]["seq"].to_pylist() == [1, 2]
    [q] = out["quarantine"].to_pylist()
    assert q["reasons"].startswith("undecodable: bad_text")


def test_silver_is_as_strict_as_the_contract():
    quoted, extra_data, extra_envelope, numeric_sku = sale(1, qty="7"), sale(2), sale(3), sale(4, sku=123)
    extra_data["data"]["discount"] = 5
    extra_envelope["bogus"] = 1
    no_store, huge_seq = sale(5), sale(6)
    no_store.pop("store_id")
    huge_seq["seq"] = 2**70
    b = bronze([quoted, extra_data, extra_envelope, numeric_sku, no_store, huge_seq, sale(7)])
    # the message says s001; the event without a store does not borrow it; an overflowing seq
    # is NULL alone (its ts is kept)
    assert b["store_id"].to_pylist()[4] is None
    assert b["seq"].to_pylist()[5] is None and b["ts"].to_pylist()[5] == huge_seq["ts"]
    out = run(b)
    assert out["tables"]["silver.pos_line"]["seq"].to_pylist() == [7]
    reasons = {r["seq"]: r["reasons"] for r in out["quarantine"].to_pylist()}
    assert reasons == {1: "contract:wrong_type", 2: "contract:unknown_field", 3: "contract:unknown_field",
                       4: "contract:wrong_type", 5: "store_present,contract:missing_field",
                       None: "valid_identity,contract:out_of_range"}
    assert results(out)[("silver.pos_line", "contract")] == (7, 6)


def test_gap_scans_reach_silver_gap_scan_and_a_scan_without_a_facing_is_quarantined():
    def scan(seq: int, **data) -> dict:
        d = {"facing_id": "s001-f01", "sku": "sku-1", "round_id": "s001-gap-20458-1", "staff_id": "staff-020"} | data
        return make_event("shelf.gap_scan", store_id="s001", device_id="hh-s001-1", seq=seq, ts=T0 + seq * 1000, data=d)

    out = run(bronze([scan(1), scan(2, facing_id="s001-f02"), scan(3, facing_id=None)]))
    rows = out["tables"]["silver.gap_scan"].to_pylist()
    assert [(r["seq"], r["facing_id"], r["round_id"]) for r in rows] == [(1, "s001-f01", "s001-gap-20458-1"),
                                                                         (2, "s001-f02", "s001-gap-20458-1")]
    assert {r["target_table"] for r in out["quarantine"].to_pylist()} == {"silver.gap_scan"}


def test_gap_scans_and_shelf_checks_of_unknown_skus_are_quarantined_like_other_events():
    # QA on issue 13 point 4: a gap scan with an unknown SKU reached silver (and labels gold.features).
    import pyarrow as pa

    def scan(seq: int, sku: str) -> dict:
        return make_event("shelf.gap_scan", store_id="s001", device_id="hh-s001-1", seq=seq, ts=T0 + seq * 1000,
                          data={"facing_id": "s001-f01", "sku": sku, "round_id": "r1"})

    def check(seq: int, sku: str) -> dict:
        return make_event("shelf.check", store_id="s001", device_id="gw-s001", seq=seq, ts=T0 + seq * 1000,
                          data={"facing_id": "s001-f01", "sku": sku, "outcome": "restocked"})

    out = silver_events(ENGINE, bronze([scan(1, "sku-1"), scan(2, "sku-x"), check(3, "sku-1"), check(4, "sku-y")]),
                        {}, run_id="r1", run_at=T0, known_skus=pa.table({"sku": ["sku-1"]}))
    assert out["tables"]["silver.gap_scan"]["seq"].to_pylist() == [1]
    assert out["tables"]["silver.shelf_check"]["seq"].to_pylist() == [3]
    q = sorted((r["target_table"], r["reasons"]) for r in out["quarantine"].to_pylist())
    assert q == [("silver.gap_scan", "known_sku"), ("silver.shelf_check", "known_sku")]
    assert results(out)[("silver.gap_scan", "known_sku")] == (2, 1)
