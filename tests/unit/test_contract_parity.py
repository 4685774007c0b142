"""One validator, two sides: every payload the gateway accepts reaches silver, and every line the
gateway's validator refuses is refused by the cloud too (property test over odd JSON and bytes)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.ingest.source import ReceivedMessage
from cloud.ingest.stream import bronze_rows
from cloud.lake.engine import DuckDBEngine
from cloud.lake.silver import silver_events
from edge.collector import check_payload
from edge.testing import T0, pos_line, reading
from gondola.contracts import BATCH_SCHEMA, parse_event
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
