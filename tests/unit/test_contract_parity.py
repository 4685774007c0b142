"""One validator, two sides: every payload the gateway accepts reaches silver, and every line the
gateway's validator refuses is refused by the cloud too (property test over odd JSON and bytes)."""

from __future__ import annotations

import json

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.ingest.source import ReceivedMessage
from cloud.ingest.stream import bronze_rows
from cloud.lake.engine import DuckDBEngine
from cloud.lake.silver import silver_events
from cloud.lake.verdict import accepted_mask, contract_verdicts
from edge.collector import check_payload
from edge.testing import T0, pos_line, reading
from gondola.contracts import BATCH_SCHEMA, EVENT_TYPES, field_rules, parse_event
from gondola.errors import ContractError
from gondola.topics import device_topic

ENGINE = DuckDBEngine()
KEY = b"k" * 32

# Text with what readers disagree on: lone surrogates, NUL and other controls, BOMs, non-ASCII.
_ODD_TEXT = st.text(st.one_of(st.characters(min_codepoint=0, max_codepoint=0x2FF),
                              st.sampled_from(["\ud800", "\udc80", "\ufeff", "\x00", "\u2028", "\U0001F600", "\uffff"])),
                    min_size=0, max_size=6)
_ODD_VALUE = st.one_of(_ODD_TEXT, st.integers(-2**64, 2**64), st.booleans(), st.none(),
                       st.floats(allow_nan=True, allow_infinity=True), st.lists(st.integers(), max_size=2))
_RAW_SPLICES = [b"\xed\xa0\x80", b"\xc0\xaf", b"\xef\xbb\xbf", b"\x00", b"\xff", b"\\ud800", b"NaN", b"\\u0000"]


@st.composite
def payloads(draw, i: int) -> bytes:
    base = draw(st.sampled_from([pos_line(i, T0 + i, device_id=f"pos-{i}"), reading(i, T0 + i, device_id=f"shelf-{i}")]))
    how = draw(st.sampled_from(["valid", "field", "data_field", "new_key", "raw_splice", "bytes"]))
    if how == "field":
        # (Not "schema": a newer schema version stops the silver run by design, "fail" action,
        # rather than quarantining; test_lake_silver covers it.)
        base[draw(st.sampled_from(["store_id", "ts", "epoch", "event_id", "type", "seq", "device_id"]))] = draw(_ODD_VALUE)
    elif how == "data_field":
        base["data"][draw(st.sampled_from(sorted(base["data"])))] = draw(_ODD_VALUE)
    elif how == "new_key":
        base["data"][draw(_ODD_TEXT)] = 1
    text = json.dumps(base, ensure_ascii=draw(st.booleans()), allow_nan=True)
    raw = text.encode("utf-8", "surrogatepass")
    if how == "raw_splice":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from(_RAW_SPLICES)) + raw[at:]
    elif how == "bytes":
        raw = draw(st.binary(max_size=64))
    return raw


def _message(i: int, line: bytes) -> ReceivedMessage:
    props = {"schema": BATCH_SCHEMA, "content-encoding": "identity", "count": "1", "store_id": "s001"}
    return ReceivedMessage("0", str(i), i, i, props, line)


def _gateway(i: int, raw: bytes) -> bytes | None:
    """The line the gateway would uplink for this payload (None: refused by the validator)."""
    try:
        event = parse_event(raw)
    except ContractError:
        return None
    try:
        _, body = check_payload(device_topic(event["store_id"], "pos", event["device_id"]), raw,
                                store_id=event["store_id"], now_ms=event["ts"], pseudonym_key=KEY)
    except ContractError:
        return b"skip"  # refused for a gateway-only reason (topic, clock, device pseudonym)
    return body.encode("utf-8")


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.data(), min_size=1, max_size=30))
def test_the_gateway_and_the_cloud_give_every_payload_the_same_verdict(draws):
    raws = [d.draw(payloads(i)) for i, d in enumerate(draws)]
    messages, expect = [], {}
    for i, raw in enumerate(raws):
        body = _gateway(i, raw)
        if body == b"skip":
            continue
        if body is not None:
            messages.append(_message(i, body))        # what the gateway uplinks
            expect[i] = True
        elif b"\n" not in raw and b"\r" not in raw:
            messages.append(_message(i, raw))         # as if a gateway had let it through
            expect[i] = False
    if not messages:
        return
    out = silver_events(ENGINE, bronze_rows(messages, source="t", run_id="r", now_ms=T0), {}, run_id="r", run_at=T0)
    landed = {t for table in out["tables"].values() for t in table["enqueued_time"].to_pylist()}
    assert {i for i, ok in expect.items() if ok} == landed & set(expect)
    assert not {i for i, ok in expect.items() if not ok} & landed


# ---- the bulk verdict (cloud.lake.verdict) against parse_event, line for line -------------------

def _valid(kinds, lo, hi, choices):
    """A strategy for one field's valid values, at and near its bounds."""
    if choices is not None:
        return st.sampled_from(choices)
    options = []
    for k in kinds:
        if k is str:
            options.append(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\"\\"), max_size=3, min_size=1)
                           | st.sampled_from(["x" * 128, "caf\u00e9", "s:x", '"q"']))
        elif k is int:
            a = int(lo) if lo is not None else -2**70
            b = int(hi) if hi is not None else 2**70
            options.append(st.integers(a, b) | st.sampled_from([a, b]))
        elif k is float:
            options.append(st.floats(lo, hi, allow_nan=False, allow_infinity=False)
                           | st.sampled_from([x for x in (lo, hi) if x is not None] or [0.5]))
    return st.one_of(options)


def _odd(kinds, lo, hi):
    """Values one field's rule refuses, or that sit just outside its bounds."""
    near = [x + d for x in (lo, hi) if x is not None for d in (-1, 1)]
    return st.one_of(_ODD_VALUE, st.sampled_from(near + ["x" * 129, "", 1.0, 7.5, "7"]))


@st.composite
def contract_lines(draw) -> str:
    """One line: a valid event of any type built from the contract's own rules, perhaps with one
    thing wrong, then written in one of the ways JSON allows (spacing, key order, number forms,
    duplicate keys, escapes)."""
    etype = draw(st.sampled_from(sorted(EVENT_TYPES)))
    envelope, data = field_rules(etype)
    event: dict = {"data": {}}
    for specs, target in ((envelope, event), (data, event["data"])):
        for name, _path, kinds, required, lo, hi, choices in specs:
            if name != "data" and (required or draw(st.booleans())):
                target[name] = etype if name == "type" else draw(_valid(kinds, lo, hi, choices))
    wrong = draw(st.sampled_from(["none", "none", "none", "value", "drop", "unknown", "data"]))
    if wrong in ("value", "drop"):
        specs, target = draw(st.sampled_from([(envelope, event), (data, event["data"])]))
        name, _path, kinds, _required, lo, hi, _choices = draw(st.sampled_from(specs))
        if wrong == "drop":
            target.pop(name, None)
        else:
            target[name] = draw(_odd(kinds, lo, hi))
    elif wrong == "unknown":
        draw(st.sampled_from([event, event["data"]]))[draw(st.sampled_from(["x", "sku", "units", "data", "q\u00e9"]))] = 1
    elif wrong == "data":
        event["data"] = draw(_ODD_VALUE)
    items = list(event.items())
    if draw(st.booleans()):
        items = draw(st.permutations(items))
    sep = draw(st.sampled_from([(", ", ": "), (",", ":"), (", ", ": "), (" , ", " : "), (",\t", ":\n")]))
    text = "{" + sep[0].join(f"{json.dumps(k)}{sep[1]}{json.dumps(v, ensure_ascii=draw(st.booleans()), allow_nan=True)}"
                             for k, v in items) + "}"
    how = draw(st.sampled_from(["as_is", "as_is", "as_is", "number_form", "duplicate", "pad", "escape"]))
    if how == "number_form":   # 1 -> 1.0 / 1e0 / 10E-1 / -0: what a float or an int literal is
        text = text.replace(": 1", draw(st.sampled_from([": 1.0", ": 1e0", ": 10E-1", ": 01", ": -0"])), 1)
    elif how == "duplicate" and len(items) > 1:
        k, v = draw(st.sampled_from(items))
        text = text[:-1] + f', {json.dumps(k)}: {json.dumps(v)}' + "}"
    elif how == "pad":
        text = draw(st.sampled_from([" ", "", "\n", "x", "{}"])) + text + draw(st.sampled_from([" ", "", "\n", ",", "}"]))
    elif how == "escape":  # inside a value: the first string value's first character
        at = text.find(': "') + 3
        if at > 2:
            text = text[:at] + draw(st.sampled_from(["\\u0041", "\\u0000", "\\n", "\\ud800"])) + text[at:]
    return text


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(contract_lines(), min_size=1, max_size=40))
def test_the_bulk_verdict_is_parse_events_verdict_line_for_line(lines):
    lines = [line.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for line in lines]
    expect = [_reason(line) for line in lines]   # the text as bronze can hold it (no lone surrogate)
    assert contract_verdicts(pa.array(lines + [None], pa.string())).to_pylist() == expect + [None]


def _reason(line: str) -> str | None:
    try:
        parse_event(line)
    except ContractError as exc:
        return exc.reason
    return None


def test_the_bulk_verdict_decides_a_gateways_traffic_in_sql_and_refuses_what_parse_event_refuses():
    good = [json.dumps(pos_line(i, T0 + i)) for i in range(50)] + [json.dumps(reading(i, T0 + i)) for i in range(50)]
    bad = [good[0].replace('"qty": 1', '"qty": 1.0'), good[0].replace('"qty": 1', '"qty": "1"'),
           good[0][:-1] + ', "x": 1}', good[60].replace('"sku": "k0"', '"sku": "k0", "sku": "k1"'),
           good[60].replace('"battery_pct": 80.0', '"battery_pct": 100.5'), "not json", "[]"]
    lines = pa.array(good + bad)
    assert accepted_mask(lines).tolist() == [True] * len(good) + [False] * len(bad)
    assert contract_verdicts(lines).to_pylist() == [None] * len(good) + [
        "wrong_type", "wrong_type", "unknown_field", "bad_json", "out_of_range", "bad_json", "not_object"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(alphabet=st.sampled_from('a"\\:{} \x00é\U0001f600'), max_size=8)), max_size=30),
       st.integers(0, 5), st.integers(0, 5), st.sampled_from([pa.string(), pa.large_string(), pa.string_view()]))
def test_the_backslash_scan_of_the_text_buffer_is_arrows_substring_search(texts, start, cut, type_):
    """The gate's backslash test (numpy over the text buffer and offsets) gives Arrow's
    ``match_substring`` on every line: null and empty lines, multi-byte text, sliced arrays
    (offsets not at 0) and chunked columns."""
    from cloud.lake.verdict import has_backslash

    whole = pa.array(texts, type_)
    sliced = whole.slice(min(start, len(texts)), max(0, len(texts) - start - cut))
    chunked = pa.chunked_array([whole.slice(0, start), whole.slice(start)], type_)
    for lines in (whole, sliced, chunked):
        want = [t is not None and "\\" in t for t in lines.to_pylist()]
        assert has_backslash(lines).tolist() == want


def test_a_null_line_whose_slot_spans_text_holds_no_backslash():
    """Arrow lets a null slot span bytes of the text buffer (its offsets need not be equal): the
    scan of the buffer must not report that slot's backslash."""
    import numpy as np

    from cloud.lake.verdict import has_backslash

    offsets = pa.py_buffer(np.array([0, 2, 4, 5], np.int32).tobytes())
    validity = pa.py_buffer(np.packbits([1, 0, 1], bitorder="little").tobytes())
    lines = pa.Array.from_buffers(pa.string(), 3, [validity, offsets, pa.py_buffer(b"ab\\cd")], null_count=1)
    assert lines.to_pylist() == ["ab", None, "d"]
    assert has_backslash(lines).tolist() == [False, False, False]
    assert has_backslash(pa.chunked_array([lines, pa.array(["x\\"])])).tolist() == [False, False, False, True]
