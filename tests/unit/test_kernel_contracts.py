"""The event contract: validation messages, identity, and gateway -> cloud batches."""

from __future__ import annotations

import json
import random

import pytest

from gondola.contracts import (
    EVENT_TYPES,
    MAX_MESSAGE_BYTES,
    PRIORITY,
    decode_batch,
    encode_batch,
    event_key,
    make_event,
    pack_batches,
    parse_event,
    validate_event,
)
from gondola import contracts
from gondola.errors import ContractError

T0 = 1_764_403_200_000  # 2025-11-29T08:00:00Z

EXAMPLES = {
    "pos.line": dict(txn_id="t1", register="r1", line=1, sku="sku-0001", qty=2, price_cents=249),
    "shelf.reading": dict(facing_id="f-0001", sku="sku-0001", weight_g=1234.5, units_est=12, battery_pct=87.5, rssi_dbm=-61),
    "shelf.restock": dict(facing_id="f-0001", sku="sku-0001", units_added=10),
    "inventory.delivery": dict(delivery_id="d1", sku="sku-0001", units=120),
    "shelf.check": dict(facing_id="f-0001", sku="sku-0001", outcome="restocked"),
    "shelf.gap_scan": dict(facing_id="f-0001", sku="sku-0001", round_id="s001-gap-20458-1"),
    "edge.alert": dict(facing_id="f-0001", sku="sku-0001", state="raised", probability=0.82, horizon_min=120, scorer="baseline-poisson"),
    "edge.health": dict(buffer_rows=10, buffer_bytes=4096, unsent_rows=3, oldest_unsent_age_s=1.5, evictions=0, seq_gaps=0, quarantined=0),
}


def event(etype="pos.line", seq=1, **data):
    return make_event(etype, store_id="s001", device_id="dev-1", seq=seq, ts=T0 + seq, data=EXAMPLES[etype] | data)


def test_every_event_type_has_an_example_that_validates_and_a_priority():
    assert set(EXAMPLES) == set(EVENT_TYPES) == set(PRIORITY)
    for etype in EVENT_TYPES:
        assert validate_event(event(etype))["type"] == etype


def test_identity_is_device_epoch_and_seq_and_a_missing_epoch_is_zero():
    e = event(seq=42)
    assert event_key(e) == ("dev-1", 0, 42) and "epoch" not in e
    assert e["event_id"] == "dev-1:42"
    e3 = make_event("pos.line", store_id="s001", device_id="dev-1", seq=42, ts=T0, data=EXAMPLES["pos.line"], epoch=3)
    assert event_key(validate_event(e3)) == ("dev-1", 3, 42) and e3["event_id"] == "dev-1:3:42"


def _payload(ev) -> bytes:
    return json.dumps(ev).encode()


@pytest.mark.parametrize("payload, reason", [
    (_payload(event()).replace(b'"r1"', b'"\\ud800"'), "bad_text"),       # lone high surrogate, escaped
    (_payload(event()).replace(b'"r1"', b'"\\udc80"'), "bad_text"),       # lone low surrogate, escaped
    (_payload(event()).replace(b'"r1"', b'"\xed\xa0\x80"'), "bad_json"),  # a surrogate encoded as UTF-8
    (_payload(event()).replace(b'"r1"', b'"\xc0\xaf"'), "bad_json"),       # overlong "/"
    (_payload(event()).replace(b'"r1"', b'"r\\u0000"'), "bad_text"),      # NUL
    (_payload(event()).replace(b'"r1"', b'"\xef\xbb\xbfr1"'), "bad_text"),  # a BOM inside a string
    (b"\xef\xbb\xbf" + _payload(event()), "bad_json"),                      # a BOM before the document
    (json.dumps(event()).encode("utf-16"), "bad_json"),
    (_payload(event()).replace(b'"qty": 2', b'"qty": true'), "wrong_type"),
    (_payload(event()).replace(b'"qty": 2', b'"qty": "2"'), "wrong_type"),
    (_payload(event()).replace(b'"qty": 2', b'"qty": NaN'), "bad_json"),
    (_payload(event()).replace(b'"qty": 2', b'"qty": 2, "qty": 3'), "bad_json"),  # duplicate key
    (_payload(event()).replace(b'"qty": 2', b'"qty": 2, "\\ud800": 1'), "unknown_field"),
])
def test_the_strict_decoder_refuses_what_not_every_reader_agrees_on(payload, reason):
    with pytest.raises(ContractError) as info:
        parse_event(payload)
    assert info.value.reason == reason
    # The detail is storable text (no lone surrogate) and repeats no value of the payload.
    info.value.detail.encode("utf-8")
    assert "r1" not in info.value.detail


def test_error_details_never_repeat_values_and_escape_unknown_field_names():
    with pytest.raises(ContractError) as info:
        validate_event(event(loyalty_id=3333))
    assert "3333" not in info.value.detail and info.value.reason == "wrong_type"
    with pytest.raises(ContractError) as info:
        validate_event(event() | {"data": EXAMPLES["pos.line"] | {"\ud800x": 1, "a\x00": 2}})
    assert info.value.detail.isascii() and "\\ud800x" in info.value.detail and "\\x00" in info.value.detail


@pytest.mark.parametrize(
    "mutate, reason, words",
    [
        (lambda e: e.pop("seq"), "missing_field", "seq: required"),
        (lambda e: e["data"].pop("sku"), "missing_field", "data.sku"),
        (lambda e: e["data"].update(qty="2"), "wrong_type", "data.qty: expected int, got str"),
        (lambda e: e["data"].update(qty=True), "wrong_type", "got bool"),
        (lambda e: e["data"].update(price_cents=-1), "out_of_range", "data.price_cents"),
        (lambda e: e["data"].update(qty=10**9), "out_of_range", "data.qty"),
        (lambda e: e.update(ts=5), "out_of_range", "ts"),
        (lambda e: e.update(type="pos.lines"), "unknown_type", "pos.lines"),
        (lambda e: e["data"].update(colour="red"), "unknown_field", "colour"),
        (lambda e: e.update(extra=1), "unknown_field", "extra"),
        (lambda e: e["data"].update(kind="gift"), "bad_value", "data.kind"),
        (lambda e: e.update(store_id=""), "out_of_range", "store_id"),
    ],
)
def test_invalid_events_are_rejected_with_a_reason_naming_the_field(mutate, reason, words):
    e = event()
    mutate(e)
    with pytest.raises(ContractError) as info:
        validate_event(e)
    assert info.value.reason == reason
    assert words in info.value.detail


def test_non_finite_numbers_are_rejected():
    with pytest.raises(ContractError, match="finite"):
        validate_event(event("shelf.reading", weight_g=float("nan")))


@pytest.mark.parametrize("payload", [b"", b"{", b"\xff\xfe", b"[1,2]", b"null", b'"x"', b"{}" * 3,
                                     b'{"type": [], "data": {}}', b'{"type": {}, "data": []}'])
def test_parse_event_never_raises_anything_but_contract_errors(payload):
    with pytest.raises(ContractError):
        parse_event(payload)


def test_parse_event_accepts_a_json_payload():
    assert parse_event(json.dumps(event()).encode())["seq"] == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "deflate-dict1", "identity"])
def test_batch_round_trips_with_properties(encoding):
    events = [event(seq=i) for i in range(1, 101)]
    msg = encode_batch(events, store_id="s001", encoding=encoding)
    assert msg.properties["count"] == "100"
    assert msg.properties["first_seq"] == "1"
    assert msg.properties["content-encoding"] == encoding
    assert decode_batch(msg.body, msg.properties) == events


def test_decode_batch_rejects_a_count_mismatch_and_a_foreign_schema():
    msg = encode_batch([event()], store_id="s001")
    with pytest.raises(ContractError, match="bad_count"):
        decode_batch(msg.body, msg.properties | {"count": "2"})
    with pytest.raises(ContractError, match="bad_schema"):
        decode_batch(msg.body, msg.properties | {"schema": "other"})
    with pytest.raises(ContractError, match="bad_encoding"):
        decode_batch(b"not gzip", msg.properties)


def test_the_dictionary_encoding_gives_back_every_line_exactly_and_elides_only_derivable_event_ids():
    from gondola.contracts import BATCH_SCHEMA, batch_lines, compress_dict

    rng = random.Random(5)
    lines = []
    for i in range(400):
        etype = rng.choice(sorted(EXAMPLES))
        dev = rng.choice(["dev-1", "pos-s001-r01", 'odd"dev\\x', "caf\u00e9-9", "a:b"])
        e = make_event(etype, store_id="s001", device_id=dev, seq=rng.randrange(10**12), ts=T0 + i,
                       data=EXAMPLES[etype], epoch=rng.choice([0, 0, 3]))
        if i % 7 == 0:
            e["event_id"] = f"other-{i}"  # not derivable: kept as it is
        if i % 11 == 0:
            e = {"received_at": T0 + i, **e}  # devices' key order, as the gateway stores them
            line = json.dumps(e, separators=(",", ":"), ensure_ascii=i % 2 == 0)
        else:
            line = json.dumps(e, separators=(",", ":"), sort_keys=True, ensure_ascii=i % 2 == 0)
        lines.append(line)
    body = compress_dict("\n".join(lines).encode())
    props = {"schema": BATCH_SCHEMA, "content-encoding": "deflate-dict1", "count": str(len(lines))}
    assert batch_lines(body, props) == lines
    import zlib
    short = zlib.decompressobj(zdict=contracts.BATCH_DICT1).decompress(body).decode().split("\n")
    assert sum("\x01" in line for line in short) == sum(
        json.loads(line)["event_id"] == contracts.make_event("pos.line", store_id="s", device_id=json.loads(line)["device_id"],
                                                            seq=json.loads(line)["seq"], ts=T0, data={},
                                                            epoch=json.loads(line).get("epoch", 0))["event_id"]
        for line in lines) > 300
    # Smaller than gzip for a small batch: what a 4 KB billing unit holds.
    small = "\n".join(lines[:40]).encode()
    import gzip
    assert len(compress_dict(small)) < 0.9 * len(gzip.compress(small, 6, mtime=0))
    # A body made with another dictionary (or none and cut short) is refused, not misread.
    other = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=b"another dictionary")
    with pytest.raises(ContractError, match="bad_encoding"):
        batch_lines(other.compress(small) + other.flush(), props)
    with pytest.raises(ContractError, match="bad_encoding"):
        batch_lines(body[:-10], props)
    with pytest.raises(ValueError):
        compress_dict(b'{"a":"\x01"}')


def test_pack_batches_keeps_every_event_once_in_order_under_the_size_cap():
    rng = random.Random(3)
    # Random SKUs and prices make the text hard to compress, so several messages are needed.
    events = [event(seq=i, sku=f"sku-{rng.randrange(10**9)}", price_cents=rng.randrange(10**6)) for i in range(1, 12_001)]
    packed = list(pack_batches(events, store_id="s001"))
    assert len(packed) > 1
    assert all(msg.size <= MAX_MESSAGE_BYTES for msg, _ in packed)
    out = [e for msg, _ in packed for e in decode_batch(msg.body, msg.properties)]
    assert out == events


def test_pack_batches_honours_a_small_cap():
    events = [event(seq=i) for i in range(1, 2001)]
    packed = list(pack_batches(events, store_id="s001", max_bytes=4096, encoding="identity"))
    assert all(msg.size <= 4096 for msg, _ in packed)
    assert sum(len(chunk) for _, chunk in packed) == 2000


def test_encode_batch_refuses_an_empty_batch():
    with pytest.raises(ValueError):
        encode_batch([], store_id="s001")


_ODD_VALUES = [None, True, False, 0, -1, 1, 2**63, 1.5, -0.0, float("nan"), float("inf"), "", "x", "y" * 129,
               "raised", {}, [], T0, 4_102_444_800_001]


def _slow_accepts(ev) -> bool:
    try:
        contracts._validate_slow(ev)
        return True
    except ContractError:
        return False


@pytest.mark.parametrize("etype", sorted(EVENT_TYPES))
def test_the_generated_fast_check_accepts_exactly_what_the_field_walk_accepts(etype):
    # Every field of the envelope and of the data, removed or set to each odd value, plus an
    # unknown field in either place: the fast check may say yes only where the walk says yes,
    # and says yes to every valid event (else valid traffic would pay for the walk).
    base = event(etype)
    cases = [base, base | {"received_at": T0}, base | {"extra": 1}, base | {"data": base["data"] | {"extra": 1}}]
    for key in list(base) + ["received_at"]:
        cases.append({k: v for k, v in base.items() if k != key})
        cases += [base | {key: v} for v in _ODD_VALUES]
    for key in list(base["data"]) + sorted(EVENT_TYPES[etype]):
        cases.append(base | {"data": {k: v for k, v in base["data"].items() if k != key}})
        cases += [base | {"data": base["data"] | {key: v}} for v in _ODD_VALUES]
    fast = contracts._FAST[etype]
    verdicts = [(fast(c), _slow_accepts(c)) for c in cases]
    assert len(cases) > 200
    assert all(f == s for f, s in verdicts), [c for c, (f, s) in zip(cases, verdicts) if f != s][:3]
    assert sum(s for _, s in verdicts) >= 10  # the mutations include valid events, not only broken ones


def test_a_shelf_reading_over_ten_times_its_facing_capacity_is_out_of_range():
    import pytest

    from gondola.contracts import MAX_FILL_RATIO, check_reading_fits, make_event
    from gondola.errors import ContractError

    def ev(etype: str, units: int) -> dict:
        return make_event(etype, store_id="s001", device_id="shelf-1", seq=1, ts=1_764_410_400_000,
                          data={"facing_id": "f1", "sku": "k1", "weight_g": 1500.0, "units_est": units,
                                "battery_pct": 80.0, "rssi_dbm": -60})

    check_reading_fits(ev("shelf.reading", 6 * MAX_FILL_RATIO), 6)  # at the bound: kept
    with pytest.raises(ContractError) as err:
        check_reading_fits(ev("shelf.reading", 100_000), 6)
    assert err.value.reason == "out_of_range" and "capacity of 6" in err.value.detail
    check_reading_fits(ev("shelf.reading", 100_000), None)  # a facing the planogram does not know
    check_reading_fits(ev("shelf.reading", 100_000), 0)  # nor its capacity
