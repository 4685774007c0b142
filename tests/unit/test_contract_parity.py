"""One validator, two sides: every payload the gateway accepts reaches silver, and every line the
gateway's validator refuses is refused by the cloud too (property test over odd JSON and bytes)."""

from __future__ import annotations

import json
import re

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
from gondola.contracts import BATCH_SCHEMA, EVENT_TYPES, field_rules, make_event, parse_event
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


# ---- silver's typing: accepted lines typed by the parser, as the cast rules type their text ------

class _TextOnlyEngine(DuckDBEngine):
    """DuckDB reading every ``JSON_STRUCT`` field as text (as Spark does): the SQL's casts then
    type every line from its text, the typing before the parser typed accepted lines."""

    typed_specs = 0

    def run(self, sql, inputs):
        text = re.sub(r"(JSON_STRUCT\(\w+, '[^']*')", lambda m: re.sub(r":[A-Z]+", "", m.group(1)), sql)
        self.typed_specs += text != sql
        return super().run(text, inputs)


TEXT_ONLY = _TextOnlyEngine()


def _health(seq: int, **data) -> dict:
    d = {"buffer_rows": 1, "buffer_bytes": 2, "unsent_rows": 0, "oldest_unsent_age_s": 1.5, "evictions": 0,
         "seq_gaps": 0, "quarantined": 0} | data
    return make_event("edge.health", store_id="s001", device_id="gw-s001", seq=seq, ts=T0 + seq, data=d)


def _alert(seq: int, **data) -> dict:
    d = {"facing_id": "f0", "sku": "k0", "state": "raised", "probability": 0.5, "horizon_min": 60,
         "scorer": "m:1"} | data
    return make_event("edge.alert", store_id="s001", device_id="gw-s001-alerts", seq=seq, ts=T0 + seq, data=d)


#: lines at the typing's edges: ints a double or an int64 column does not hold exactly, number
#: forms, defaults of absent fields, multi-byte text, escapes, wrong types, unknown fields
_EDGE_LINES = [json.dumps(e) for e in (
    _health(1, oldest_unsent_age_s=2**70, buffer_rows=2**63, last_uplink_ts=2**64),
    _health(2, oldest_unsent_age_s=2**53 + 1, buffer_bytes=2**63 - 1, last_uplink_ts=-2**63, model_version="v1"),
    _health(3, oldest_unsent_age_s=0.1 + 0.2, evictions=-0, quarantined=10**30),
    _health(4, oldest_unsent_age_s=5e-324, model_version="caf\u00e9"),
    _alert(5), _alert(6, kind="empty_now", units_est=3, expected_empty_ts=T0), _alert(7, probability=1, units_est=2.5e-7),
    _alert(8, probability="0.5"), _alert(9, sku=7), _alert(10, extra=1), _alert(11, scorer="\U0001F600"),
    pos_line(12, T0 + 12) | {"epoch": 3}, pos_line(13, T0 + 13, sku="\u00e9t\u00e9"),
    {**pos_line(14, T0 + 14), "data": {**pos_line(14, T0 + 14)["data"], "kind": "void", "loyalty_id": "L1"}},
    {**pos_line(15, T0 + 15), "data": {**pos_line(15, T0 + 15)["data"], "qty": "7"}},
    reading(16, T0 + 16) | {"epoch": 2**63}, reading(17, T0 + 17) | {"extra": None},
)] + [json.dumps(pos_line(18, T0 + 18)).replace('"k0"', '"\\u006b0"'),
      json.dumps(reading(19, T0 + 19)).replace('"battery_pct": 80.0', '"battery_pct": 8E1'),
      json.dumps(reading(20, T0 + 20)).replace('"battery_pct": 80.0', '"battery_pct": -0.0e-0'),
      json.dumps(reading(21, T0 + 21)).replace('"units_est": ', '"units_est": 1.0, "x": ')]


def _silver(lines: list[str], engine):
    b = bronze_rows([_message(i, line.encode("utf-8")) for i, line in enumerate(lines)], source="t", run_id="r",
                    now_ms=T0)
    try:
        return silver_events(engine, b, {}, run_id="r", run_at=T0)
    except ContractError as exc:
        return ("failed", exc.reason, getattr(exc, "name", None), getattr(exc, "failed", None))


def _same_silver(lines: list[str]) -> dict | tuple:
    typed, text = _silver(lines, ENGINE), _silver(lines, TEXT_ONLY)
    if isinstance(text, tuple):
        assert typed == text
        return text
    for table, rows in text["tables"].items():
        assert typed["tables"][table].equals(rows, check_metadata=True), table   # values, types, order
    by_all = lambda t: t.sort_by([(c, "ascending") for c in t.column_names])  # noqa: E731 (in no fixed order)
    assert by_all(typed["quarantine"]).equals(by_all(text["quarantine"]))
    assert typed["expectations"].equals(text["expectations"])
    assert typed["stats"] == text["stats"]
    return typed


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(contract_lines(), min_size=1, max_size=40))
def test_the_parser_types_accepted_lines_as_the_cast_rules_type_their_text(lines):
    """Silver's rows (typed values, defaults, quarantine and its reasons, counts) are the same
    whether the lines the contract accepted are typed by DuckDB's JSON parser or from their text
    by the casts, on the contract's adversarial lines (the typing's edges: the next test)."""
    # (a raw line break is JSON whitespace here, but it would split the line in a batch)
    _same_silver([line.encode("utf-8", "surrogatepass").decode("utf-8", "replace").replace("\n", " ").replace("\r", " ")
                  for line in lines])


def test_the_parser_gives_the_values_the_casts_give_at_the_typings_edges():
    before = TEXT_ONLY.typed_specs
    out = _same_silver(_EDGE_LINES)
    assert TEXT_ONLY.typed_specs > before  # the typing SQL had typed fields, and they were read as text
    health = {r["seq"]: r for r in out["tables"]["silver.edge_health"].to_pylist()}
    # ints beyond a column's exact range: NULL in int64, the nearest double (as TRY_CAST of the text)
    assert (health[1]["buffer_rows"], health[1]["last_uplink_ts"], health[1]["oldest_unsent_age_s"]) == (
        None, None, float(2**70))
    assert (health[2]["buffer_bytes"], health[2]["last_uplink_ts"], health[2]["oldest_unsent_age_s"]) == (
        2**63 - 1, -2**63, float(2**53))
    assert (health[3]["oldest_unsent_age_s"], health[3]["evictions"], health[3]["quarantined"]) == (0.1 + 0.2, 0, None)
    assert (health[4]["oldest_unsent_age_s"], health[4]["model_version"]) == (5e-324, "caf\u00e9")
    alerts = {r["seq"]: r for r in out["tables"]["silver.edge_alert"].to_pylist()}
    assert sorted(alerts) == [5, 6, 7, 11] and alerts[11]["scorer"] == "\U0001F600"
    assert (alerts[5]["kind"], alerts[5]["units_est"], alerts[5]["expected_empty_ts"]) == ("empty_within_h", None, None)
    assert (alerts[6]["kind"], alerts[6]["units_est"], alerts[6]["expected_empty_ts"]) == ("empty_now", 3.0, T0)
    assert (alerts[7]["probability"], alerts[7]["units_est"]) == (1.0, 2.5e-7)
    pos = {r["seq"]: r for r in out["tables"]["silver.pos_line"].to_pylist()}
    assert (pos[12]["epoch"], pos[12]["kind"], pos[13]["sku"], pos[14]["kind"], pos[18]["sku"]) == (
        3, "sale", "\u00e9t\u00e9", "void", "k0")
    readings = {r["seq"]: r for r in out["tables"]["silver.shelf_reading"].to_pylist()}
    assert (readings[19]["battery_pct"], str(readings[20]["battery_pct"])) == (80.0, "-0.0")
    assert sorted(readings) == [19, 20]
    reasons = {(r["seq"], r["reasons"]) for r in out["quarantine"].to_pylist()}
    assert {(8, "contract:wrong_type"), (9, "contract:wrong_type"), (10, "contract:unknown_field"),
            (15, "contract:wrong_type"), (16, "contract:out_of_range"),
            (17, "contract:unknown_field"), (21, "contract:wrong_type")} <= reasons
