"""Event contracts: the envelope, the event types, validation, and gateway -> cloud batches.

One source of truth for every side. An event on the wire (MQTT payload, batch line) is a JSON
object::

    {"event_id": "pos-s001-r01:42", "type": "pos.line", "schema": 1,
     "store_id": "s001", "device_id": "pos-s001-r01", "seq": 42,
     "ts": 1764410400000, "received_at": 1764410400250,
     "data": {...type-specific fields...}}

``(device_id, epoch, seq)`` is the identity of an event: retries carry the same triple and are
removed downstream; a gap in ``seq`` per device and epoch is a counted loss. ``epoch`` (optional,
default 0) names one run of a device's counter: a device whose counter restarts (replaced,
factory reset, storage wiped) sends a new, larger ``epoch`` and starts ``seq`` again, which is a
new sequence, neither duplicates nor a gap. ``ts`` is the device clock and ``received_at`` the
gateway clock, both epoch milliseconds UTC; ``received_at`` is absent until a gateway has
accepted the event.

What is valid is decided here once, for every side (``parse_event`` on the gateway and in the
cloud's silver step): the payload is strict UTF-8 JSON (no byte order mark, no overlong or
surrogate encodings, no NaN / Infinity, no duplicate keys), every string is printable text (no
control character such as NUL, no lone surrogate, no BOM), numbers are numbers (a bool is not
an int, a string is not a number), and no field is unknown. Error details never repeat a
payload's values, and name unknown fields only ``ascii()``-escaped.

``docs/contracts.md`` shows an example of each type.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

from gondola.errors import ContractError

__all__ = [
    "SCHEMA_VERSION",
    "EVENT_TYPES",
    "PRIORITY",
    "ALERT_KINDS",
    "SHADOW_PREFIX",
    "CHECK_OUTCOMES",
    "Field",
    "validate_event",
    "parse_event",
    "make_event",
    "event_key",
    "event_epoch",
    "line_problem",
    "field_rules",
    "MAX_FILL_RATIO",
    "check_reading_fits",
    "MAX_SEQ",
    "parse_lines",
    "BatchMessage",
    "encode_batch",
    "decode_batch",
    "batch_lines",
    "pack_batches",
    "MAX_MESSAGE_BYTES",
    "BATCH_SCHEMA",
    "DICT_ENCODING",
    "BATCH_DICT1",
    "compress_dict",
    "compress",
    "ENCODINGS",
]

SCHEMA_VERSION = 1
BATCH_SCHEMA = "gondola.batch.v1"
#: IoT Hub's device-to-cloud message size limit.
MAX_MESSAGE_BYTES = 256 * 1024

# Plausibility bounds: a reading outside them is a broken device or a broken payload.
_MAX_QTY = 1_000
_MAX_PRICE_CENTS = 10_000_000
_MAX_WEIGHT_G = 500_000.0
_MAX_UNITS = 100_000
# Device clocks before 2020 or after 2100 are not clocks.
_MIN_TS = 1_577_836_800_000
_MAX_TS = 4_102_444_800_000
#: Highest seq and epoch (SQLite and Delta store them as signed 64-bit integers).
MAX_SEQ = 2**63 - 1
#: Text that no string field may hold: C0 controls and DEL (NUL among them), UTF-16 surrogates
#: (a lone one is not a character: DuckDB and most JSON readers refuse it), the byte order mark
#: and the two noncharacters U+FFFE / U+FFFF.
_BAD_TEXT = re.compile("[\x00-\x1f\x7f\ud800-\udfff\ufeff\ufffe\uffff]")


@dataclass(frozen=True)
class Field:
    """One field of an event's ``data``."""

    kind: type | tuple[type, ...]
    required: bool = True
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    doc: str = ""


_ID = Field(str, doc="identifier")

#: The two promises an ``edge.alert`` makes: "this shelf is empty now" (detection) and "this
#: shelf will be empty within the horizon" (forecast). An alert without ``kind`` (gateways
#: before the field existed) is a forecast.
ALERT_KINDS = ("empty_now", "empty_within_h")

#: ``edge.alert.scorer`` of a shadow model's would-be alert (``shadow:model:<version>``): a
#: candidate scoring beside production on a gateway, uplinked for comparison only; never
#: shown to staff, published on the store broker, or counted as the store's alert.
SHADOW_PREFIX = "shadow:"
#: What staff found when they checked a facing (``shelf.check``): a label for the alert before it.
CHECK_OUTCOMES = ("restocked", "was_fine", "no_stock")

#: The fields of each event type's ``data``. Adding an optional field is backward compatible;
#: anything else bumps SCHEMA_VERSION.
EVENT_TYPES: dict[str, dict[str, Field]] = {
    "pos.line": {
        "txn_id": Field(str, doc="transaction id, unique per register"),
        "register": Field(str, doc="register (lane) id"),
        "line": Field(int, lo=1, hi=10_000, doc="line number within the transaction"),
        "sku": Field(str, doc="product id"),
        "qty": Field(int, lo=-_MAX_QTY, hi=_MAX_QTY, doc="units; negative for returns and voids"),
        "price_cents": Field(int, lo=0, hi=_MAX_PRICE_CENTS, doc="unit price in integer cents"),
        "kind": Field(str, required=False, choices=("sale", "void", "return"), doc="default sale"),
        "loyalty_id": Field(str, required=False, doc="PERSONAL DATA: shopper's card; never leaves the store in clear"),
        "loyalty_pid": Field(str, required=False, doc="keyed hash of loyalty_id, set by the gateway"),
    },
    "shelf.reading": {
        "facing_id": Field(str, doc="shelf facing id from the planogram"),
        "sku": Field(str, doc="product the planogram puts on this facing"),
        "weight_g": Field((int, float), lo=-1_000.0, hi=_MAX_WEIGHT_G, doc="load cell reading, grams"),
        "units_est": Field(int, lo=0, hi=_MAX_UNITS, doc="units on the shelf estimated by the sensor"),
        "battery_pct": Field((int, float), lo=0.0, hi=100.0, doc="battery level"),
        "rssi_dbm": Field(int, lo=-150, hi=0, doc="radio signal strength"),
    },
    "shelf.restock": {
        "facing_id": Field(str, doc="facing that was refilled"),
        "sku": Field(str, doc="product put on the shelf"),
        "units_added": Field(int, lo=0, hi=_MAX_UNITS, doc="units put on the shelf"),
        "staff_id": Field(str, required=False, doc="handheld user (pseudonymous staff code)"),
    },
    "inventory.delivery": {
        "delivery_id": Field(str, doc="delivery note id"),
        "sku": Field(str, doc="product delivered"),
        "units": Field(int, lo=0, hi=_MAX_UNITS * 10, doc="units received into the backroom"),
    },
    "edge.alert": {
        "facing_id": Field(str, doc="facing the alert is about"),
        "sku": Field(str, doc="product on that facing"),
        "state": Field(str, choices=("raised", "cleared"), doc="hysteresis state change"),
        "probability": Field((int, float), lo=0.0, hi=1.0, doc="stock-out probability within the horizon"),
        "horizon_min": Field(int, lo=1, hi=7 * 24 * 60, doc="prediction horizon, minutes"),
        "scorer": Field(str, doc="which scorer decided: baseline name or model version; "
                                 "'shadow:<model>' for a shadow model's would-be alert (comparison only)"),
        "units_est": Field((int, float), required=False, lo=0.0, hi=_MAX_UNITS, doc="estimated units on shelf"),
        "kind": Field(str, required=False, choices=ALERT_KINDS,
                      doc="empty_now (detection) or empty_within_h (forecast); absent: empty_within_h"),
        "expected_empty_ts": Field(int, required=False, lo=_MIN_TS, hi=_MAX_TS,
                                   doc="forecasts: when the shelf is expected to run empty, epoch ms UTC"),
    },
    "shelf.check": {
        "facing_id": Field(str, doc="facing staff checked (on the store page, after an alert or not)"),
        "sku": Field(str, doc="product the planogram puts on this facing"),
        "outcome": Field(str, choices=CHECK_OUTCOMES,
                         doc="restocked (shelf refilled) | was_fine (enough on the shelf: a false alarm) | "
                             "no_stock (empty or low, nothing in the backroom)"),
        "alert_kind": Field(str, required=False, choices=ALERT_KINDS, doc="the alert the check answered, if any"),
        "alert_ts": Field(int, required=False, doc="when that alert was raised, epoch ms"),
        "units_est": Field((int, float), required=False, lo=0.0, hi=_MAX_UNITS,
                           doc="units the gateway estimated on the shelf at the check"),
        "staff_id": Field(str, required=False, doc="pseudonymous staff code, if the page knows one"),
    },
    "shelf.gap_scan": {
        "facing_id": Field(str, doc="facing a handheld scanned as empty (a gap) during a staff gap-scan round"),
        "sku": Field(str, doc="product the planogram puts on this facing"),
        "round_id": Field(str, required=False, doc="the gap-scan round (one walk of the store) the scan belongs to"),
        "staff_id": Field(str, required=False, doc="PERSONAL DATA: pseudonymous staff code of the handheld user"),
    },
    "edge.health": {
        "buffer_rows": Field(int, lo=0, doc="events held in the buffer"),
        "buffer_bytes": Field(int, lo=0, doc="bytes held by the buffer"),
        "unsent_rows": Field(int, lo=0, doc="events not yet accepted by the hub"),
        "oldest_unsent_age_s": Field((int, float), lo=0.0, doc="age of the oldest unsent event"),
        "evictions": Field(int, lo=0, doc="events evicted since start of the buffer"),
        "seq_gaps": Field(int, lo=0, doc="events missing in device seq counters"),
        "quarantined": Field(int, lo=0, doc="payloads rejected by the collector"),
        "last_uplink_ts": Field(int, required=False, doc="when the hub last accepted a batch"),
        "model_version": Field(str, required=False, doc="model in use, or the baseline's name"),
        "forecast_threshold": Field((int, float), lo=0.0, required=False,
                                    doc="the store's forecast threshold under its alert budget (last cycle)"),
    },
}

#: Uplink priority: lower drains first. Alerts, then POS, then stock movements, then readings.
PRIORITY: dict[str, int] = {
    "edge.alert": 0,
    "edge.health": 0,
    "pos.line": 1,
    "shelf.restock": 2,
    "shelf.check": 2,
    "shelf.gap_scan": 2,
    "inventory.delivery": 2,
    "shelf.reading": 3,
}

_ENVELOPE: dict[str, Field] = {
    "event_id": _ID,
    "type": Field(str, choices=tuple(EVENT_TYPES)),
    "schema": Field(int, lo=1, hi=SCHEMA_VERSION),
    "store_id": _ID,
    "device_id": _ID,
    "epoch": Field(int, required=False, lo=0, hi=MAX_SEQ,
                   doc="run of the device's seq counter; a restarted counter starts a larger epoch (default 0)"),
    "seq": Field(int, lo=0, hi=MAX_SEQ),
    "ts": Field(int, lo=_MIN_TS, hi=_MAX_TS),
    "received_at": Field(int, required=False, lo=_MIN_TS, hi=_MAX_TS),
    "data": Field(dict),
}


def _check(path: str, value: Any, kinds: tuple[type, ...], lo, hi, choices) -> None:
    # The happy path is a few type and range tests: the collector runs this for every message.
    vtype = type(value)
    # bool is an int in Python; in a contract it is not.
    # Details name the field and the rule, never the value: a value may be personal data (a
    # loyalty id) or text no store accepts (a lone surrogate).
    if vtype is bool or not isinstance(value, kinds):
        got = vtype.__name__
        want = "/".join(k.__name__ for k in kinds)
        raise ContractError("wrong_type", f"{path}: expected {want}, got {got}")
    if vtype is str:
        if not value or len(value) > 128:
            raise ContractError("out_of_range", f"{path}: string must be 1-128 characters, got {len(value)}")
        if _BAD_TEXT.search(value):
            raise ContractError("bad_text", f"{path}: holds a control character, lone surrogate or BOM")
    elif vtype is float and not math.isfinite(value):
        raise ContractError("out_of_range", f"{path}: not a finite number")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ContractError("out_of_range", f"{path}: outside [{lo}, {hi}]")
    if choices is not None and value not in choices:
        raise ContractError("bad_value", f"{path}: not one of {', '.join(choices)}")


def _names(names) -> str:
    """Unknown field names for an error detail: ``ascii()``-escaped, at most 5, each cut short."""
    names = sorted(names)
    shown = ", ".join(ascii(n)[:40] for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _compile(fields: dict[str, Field], prefix: str) -> tuple:
    """Field specs as flat tuples ``(name, path, kinds, required, lo, hi, choices)``."""
    return tuple(
        (name, prefix + name, f.kind if isinstance(f.kind, tuple) else (f.kind,), f.required, f.lo, f.hi, f.choices)
        for name, f in fields.items()
    )


_ENVELOPE_SPECS = _compile(_ENVELOPE, "")
_ENVELOPE_KEYS = frozenset(_ENVELOPE)
_DATA_SPECS = {etype: _compile(fields, "data.") for etype, fields in EVENT_TYPES.items()}
_DATA_KEYS = {etype: frozenset(fields) for etype, fields in EVENT_TYPES.items()}


def field_rules(etype: str) -> tuple[tuple, tuple]:
    """The envelope's and ``etype``'s data rules as flat tuples ``(name, path, kinds, required,
    lo, hi, choices)``: for readers that compile the contract into another language (the
    cloud's vectorized verdict, ``cloud.lake.verdict``)."""
    return _ENVELOPE_SPECS, _DATA_SPECS[etype]


def _fast_checker(etype: str):
    """Generate ``check(event) -> bool`` for one type: True only for an event that
    ``_validate_slow`` accepts (a test holds the two to each other); False sends it there."""
    ns: dict[str, Any] = {"_isfinite": math.isfinite, "_M": object(), "_ENV_KEYS": _ENVELOPE_KEYS,
                          "_DATA_KEYS": _DATA_KEYS[etype]}
    lines = ["def check(ev):", "    if not ev.keys() <= _ENV_KEYS: return False",
             "    d = ev.get('data')", "    if type(d) is not dict or not d.keys() <= _DATA_KEYS: return False"]
    specs = [("ev", s) for s in _ENVELOPE_SPECS if s[0] != "data"] + [("d", s) for s in _DATA_SPECS[etype]]
    for i, (obj, (name, _path, kinds, required, lo, hi, choices)) in enumerate(specs):
        kind_tests = []
        for k in kinds:
            if k is str:
                # isprintable() is False for every _BAD_TEXT character (and for a few harmless
                # ones, which the field walk then accepts): one C call on the happy path.
                kind_tests.append("(type(v) is str and 0 < len(v) <= 128 and v.isprintable())")
            elif k is int:
                kind_tests.append("type(v) is int")
            elif k is float:
                kind_tests.append("(type(v) is float and _isfinite(v))")
            elif k is dict:
                kind_tests.append("type(v) is dict")
        tests = ["(" + (" or ".join(kind_tests) or "False") + ")"]
        if lo is not None:
            ns[f"_lo{i}"] = lo
            tests.append(f"_lo{i} <= v")
        if hi is not None:
            ns[f"_hi{i}"] = hi
            tests.append(f"v <= _hi{i}")
        if choices is not None:
            ns[f"_ch{i}"] = frozenset(choices)
            tests.append(f"v in _ch{i}")
        lines.append(f"    v = {obj}.get({name!r}, _M)")
        lines.append("    if v is _M:" + (" return False" if required else " pass"))
        lines.append(f"    elif not ({' and '.join(tests)}): return False")
    lines.append("    return True")
    exec("\n".join(lines), ns)  # noqa: S102 - source built above from the contract tables only
    return ns["check"]


_FAST = {etype: _fast_checker(etype) for etype in EVENT_TYPES}


def validate_event(event: Any) -> dict:
    """Check an event against the contract; return it unchanged.

    A valid event takes one generated check per type (``_FAST``); anything else goes through the
    field-by-field walk that names the first problem.

    Raises:
        ContractError: with ``reason`` in ``not_object``, ``missing_field``, ``unknown_field``,
            ``wrong_type``, ``out_of_range``, ``bad_value``, ``unknown_type``.
    """
    if type(event) is dict:
        etype = event.get("type")
        fast = _FAST.get(etype) if type(etype) is str else None
        if fast is not None and fast(event):
            return event
    return _validate_slow(event)


def _validate_slow(event: Any) -> dict:
    """The field-by-field walk: the reference for what is valid, and the error it raises."""
    if not isinstance(event, dict):
        raise ContractError("not_object", f"event must be a JSON object, got {type(event).__name__}")
    etype = event.get("type")
    if isinstance(etype, str) and etype not in EVENT_TYPES:
        raise ContractError("unknown_type", f"type: {ascii(etype)[:60]} is not an event type")
    for name, path, kinds, required, lo, hi, choices in _ENVELOPE_SPECS:
        if name in event:
            _check(path, event[name], kinds, lo, hi, choices)
        elif required:
            raise ContractError("missing_field", f"{name}: required")
    if not event.keys() <= _ENVELOPE_KEYS:
        extra = set(event) - _ENVELOPE_KEYS
        raise ContractError("unknown_field", f"unexpected envelope field(s): {_names(extra)}")
    data = event["data"]
    for name, path, kinds, required, lo, hi, choices in _DATA_SPECS[etype]:
        if name in data:
            _check(path, data[name], kinds, lo, hi, choices)
        elif required:
            raise ContractError("missing_field", f"{path}: required for {etype}")
    if not data.keys() <= _DATA_KEYS[etype]:
        extra = set(data) - _DATA_KEYS[etype]
        raise ContractError("unknown_field", f"data: unexpected field(s) for {etype}: {_names(extra)}")
    return event


def parse_event(payload: bytes | str) -> dict:
    """Decode one JSON payload strictly and validate it (the gateway's and the cloud's verdict).

    Strict: UTF-8 only (Python's decoder refuses overlong forms and encoded surrogates such as
    ``ED A0 80``), no byte order mark, no ``NaN`` / ``Infinity``, no duplicate keys (readers
    disagree on which one wins), nothing after the object.

    Raises:
        ContractError: ``bad_json`` when the payload is not such JSON, else as ``validate_event``.
    """
    if type(payload) is not str:
        raw = bytes(payload)
        if raw[:3] == b"\xef\xbb\xbf" or raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise ContractError("bad_json", "payload starts with a byte order mark")
        try:
            payload = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ContractError("bad_json", f"payload is not UTF-8 (byte {exc.start})") from None
    elif payload[:1] == "\ufeff":
        raise ContractError("bad_json", "payload starts with a byte order mark")
    try:
        event = _DECODER.decode(payload)
    except (ValueError, RecursionError) as exc:
        # The message names a position, not the text (it could repeat a bad character).
        raise ContractError("bad_json", f"payload is not JSON: {type(exc).__name__} {_where(exc)}") from None
    return validate_event(event)


def line_problem(line: str) -> str | None:
    """Why a stored event line is not text every JSON reader takes (``None`` when it is): the
    cloud's bronze step keeps such a line as a dead letter instead of handing it to DuckDB or
    Spark, which refuse a lone surrogate for the whole batch. Only the text is judged here;
    ``parse_event`` judges the event (the silver step applies it to every line).
    """
    if line.isascii() and "\\u" not in line:
        return None  # nothing escaped: no surrogate, no control character hidden in an escape
    try:
        obj = _DECODER.decode(line)
    except (ValueError, RecursionError):
        return None  # not JSON at all: the readers' own verdict ("not a JSON object") stands
    return "bad_text" if _holds_bad_text(obj) else None


def _holds_bad_text(obj, depth: int = 0) -> bool:
    if type(obj) is str:
        return _BAD_TEXT.search(obj) is not None
    if depth > 64:
        return True
    if type(obj) is dict:
        return any(_holds_bad_text(k, depth + 1) or _holds_bad_text(v, depth + 1) for k, v in obj.items())
    if type(obj) is list:
        return any(_holds_bad_text(v, depth + 1) for v in obj)
    return False


def _where(exc: Exception) -> str:
    pos = getattr(exc, "pos", None)
    return f"at char {pos}" if pos is not None else ""


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _object(pairs: list) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


_DECODER = json.JSONDecoder(parse_constant=_no_constant, object_pairs_hook=_object)


def make_event(
    etype: str, *, store_id: str, device_id: str, seq: int, ts: int, data: Mapping[str, Any], epoch: int = 0
) -> dict:
    """Build a valid event (devices and the gateway's own alerts use this). ``epoch`` 0 is left
    out of the envelope (what devices without epochs send)."""
    event = {
        "event_id": f"{device_id}:{seq}" if not epoch else f"{device_id}:{epoch}:{seq}",
        "type": etype,
        "schema": SCHEMA_VERSION,
        "store_id": store_id,
        "device_id": device_id,
        "seq": int(seq),
        "ts": int(ts),
        "data": dict(data),
    }
    if epoch:
        event["epoch"] = int(epoch)
    return event


#: A shelf reading above this many times its facing's planogram capacity is not a shelf state
#: (a broken payload, a load cell gone wild, or the wrong facing): refused as ``out_of_range``
#: where the planogram is known (the gateway's collector), so nothing downstream believes it.
#: Measured on 1.3 M simulated readings (13 sets, 28 days): healthy sensors read at most 1.33 x
#: capacity (noise, small facings), drifting load cells up to 5.25 x; the sensor-trust rules
#: (``models.features``: drift over 4 units) see a drift long before 10 x, so its evidence is kept.
MAX_FILL_RATIO = 10


def check_reading_fits(event: Mapping[str, Any], capacity: int | None) -> None:
    """Refuse a ``shelf.reading`` whose ``units_est`` exceeds ``MAX_FILL_RATIO`` x its facing's
    planogram ``capacity`` (None or 0: unknown, nothing to check); other events pass.

    Raises:
        ContractError: ``out_of_range``.
    """
    if event.get("type") != "shelf.reading" or not capacity or capacity <= 0:
        return
    units = event["data"].get("units_est")
    if units is not None and units > MAX_FILL_RATIO * capacity:
        raise ContractError("out_of_range", f"data.units_est: {units} is over {MAX_FILL_RATIO} x the facing's "
                                            f"capacity of {capacity}")


def event_epoch(event: Mapping[str, Any]) -> int:
    """The epoch of an event (0 when the envelope has none)."""
    return event.get("epoch", 0)


def event_key(event: Mapping[str, Any]) -> tuple[str, int, int]:
    """The identity of an event: ``(device_id, epoch, seq)``."""
    return event["device_id"], event.get("epoch", 0), event["seq"]


# --------------------------------------------------------------------------------------------
# Gateway -> cloud batches
# --------------------------------------------------------------------------------------------

#: For small messages, where IoT Hub's 4 KB billing unit is the cost: the lines with each
#: ``event_id`` that is just ``device_id:seq`` (or ``device_id:epoch:seq``) left out where it
#: stood (a ``\x01`` in its place; valid JSON text never holds a raw control character), then
#: deflate (zlib format, level 9) with the preset dictionary ``BATCH_DICT1``, which holds the
#: field names that plain deflate has not yet seen in a small message. ``batch_lines`` gives
#: back the very same lines. In 4 KB messages: 25 bytes per event against gzip-6's 33.6 (see
#: docs/gateway.md, "Cost").
DICT_ENCODING = "deflate-dict1"

#: Content encodings a batch may have (``compress`` makes them, ``batch_lines`` reads them).
ENCODINGS = ("gzip", "deflate", DICT_ENCODING, "identity")

#: The preset dictionary of ``deflate-dict1``: one template line per event type, as devices
#: send them (``received_at`` first, as the gateway stores them) and as the gateway writes its
#: own (sorted keys), with placeholder values. Frozen: a changed dictionary is a new encoding
#: name (batches already sent must still decode), so it is written out here rather than made
#: from ``EVENT_TYPES``. The zlib stream names the dictionary by its Adler-32, so a body made
#: with another dictionary fails to decode instead of decoding wrong.
BATCH_DICT1: bytes = "\n".join([
    '{"data":{"buffer_bytes":0,"buffer_rows":0,"evictions":0,"last_uplink_ts":0,"model_version":"x",'
    '"oldest_unsent_age_s":0.0,"quarantined":0,"seq_gaps":0,"unsent_rows":0},"device_id":"x","event_id":"x",'
    '"received_at":0,"schema":1,"seq":0,"store_id":"x","ts":0,"type":"edge.health"}',
    '{"data":{"alert_kind":"empty_now","alert_ts":0,"facing_id":"x","outcome":"restocked","sku":"x",'
    '"staff_id":"x","units_est":0.0},"device_id":"x","event_id":"x","received_at":0,"schema":1,"seq":0,'
    '"store_id":"x","ts":0,"type":"shelf.check"}',
    '{"data":{"expected_empty_ts":0,"facing_id":"x","horizon_min":120,"kind":"empty_within_h",'
    '"probability":0.5,"scorer":"x","sku":"x","state":"cleared","units_est":0.0},"device_id":"x",'
    '"event_id":"x","received_at":0,"schema":1,"seq":0,"store_id":"x","ts":0,"type":"edge.alert"}',
    '{"data":{"facing_id":"x","horizon_min":120,"kind":"empty_now","probability":1.0,"scorer":"x","sku":"x",'
    '"state":"raised","units_est":0.0},"device_id":"x","event_id":"x","received_at":0,"schema":1,"seq":0,'
    '"store_id":"x","ts":0,"type":"edge.alert"}',
    '{"received_at":0,"event_id":"x","type":"shelf.gap_scan","schema":1,"store_id":"x","device_id":"x",'
    '"seq":0,"ts":0,"data":{"facing_id":"x","sku":"x","round_id":"x","staff_id":"x"}}',
    '{"received_at":0,"event_id":"x","type":"inventory.delivery","schema":1,"store_id":"x","device_id":"x",'
    '"seq":0,"ts":0,"data":{"delivery_id":"x","sku":"x","units":0}}',
    '{"received_at":0,"event_id":"x","type":"shelf.restock","schema":1,"store_id":"x","device_id":"x",'
    '"seq":0,"ts":0,"data":{"facing_id":"x","sku":"x","units_added":0,"staff_id":"x"}}',
    '{"received_at":0,"event_id":"x","type":"pos.line","schema":1,"store_id":"x","device_id":"x","epoch":1,'
    '"seq":0,"ts":0,"data":{"txn_id":"x","register":"x","line":1,"sku":"x","qty":1,"price_cents":0,'
    '"kind":"sale","loyalty_pid":"x"}}',
    '{"received_at":0,"event_id":"x","type":"shelf.reading","schema":1,"store_id":"x","device_id":"x",'
    '"seq":0,"ts":0,"data":{"facing_id":"x","sku":"x","weight_g":0.0,"units_est":0,"battery_pct":0.0,'
    '"rssi_dbm":-70}}',
    "",
]).encode()


_ELIDED = "\x01"
_EVENT_ID_AT = re.compile(r'"event_id":"(?:[^"\\]|\\.)*",')
_DEVICE_ID_IS = re.compile(r'"device_id":"((?:[^"\\]|\\.)*)"')
_SEQ_IS = re.compile(r'"seq":(\d+)')
_EPOCH_IS = re.compile(r'"epoch":(\d+)')


def _restore_event_id(line: str) -> str:
    """A ``deflate-dict1`` line with its ``event_id`` put back (lines without ``\x01`` as they are)."""
    at = line.find(_ELIDED)
    if at < 0:
        return line
    dev, seq, epoch = _DEVICE_ID_IS.search(line), _SEQ_IS.search(line), _EPOCH_IS.search(line)
    if dev is None or seq is None:
        raise ContractError("bad_encoding", "an elided event_id without device_id and seq")
    eid = f"{dev.group(1)}:{epoch.group(1)}:{seq.group(1)}" if epoch and epoch.group(1) != "0" else \
        f"{dev.group(1)}:{seq.group(1)}"
    return f'{line[:at]}"event_id":"{eid}",{line[at + 1:]}'


def _elide_event_id(line: str) -> str:
    """``line`` without its ``event_id`` where ``_restore_event_id`` gives back the same line."""
    m = _EVENT_ID_AT.search(line)
    if m is None:
        return line
    short = line[:m.start()] + _ELIDED + line[m.end():]
    return short if _restore_event_id(short) == line else line


def compress_dict(raw: bytes, level: int = 9) -> bytes:
    """Newline-joined event lines as ``deflate-dict1`` (see ``DICT_ENCODING``).

    Raises:
        ValueError: a line holds a raw ``\x01`` (not valid JSON text; use another encoding).
    """
    text = raw.decode("utf-8")
    if _ELIDED in text:
        raise ValueError("deflate-dict1 cannot carry a raw \\x01")
    short = "\n".join(map(_elide_event_id, text.split("\n"))).encode()
    c = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=BATCH_DICT1)
    return c.compress(short) + c.flush()


def _decompress_dict(body: bytes) -> bytes:
    d = zlib.decompressobj(zdict=BATCH_DICT1)
    raw = d.decompress(body) + d.flush()
    if not d.eof or d.unused_data:
        raise zlib.error("truncated stream or data after its end")
    return raw


@dataclass(frozen=True)
class BatchMessage:
    """One gateway -> cloud message: an encoded body and the application properties."""

    body: bytes
    properties: dict[str, str]

    @property
    def size(self) -> int:
        return len(self.body)


def compress(raw: bytes, encoding: str, level: int | None = None) -> bytes:
    """A batch body in ``encoding`` (one of ``ENCODINGS``) at ``level`` (None: 6 for gzip and
    deflate, 9 for ``deflate-dict1``): the one compression path of the gateway and the cloud."""
    if encoding == "gzip":
        # mtime=0 keeps the bytes a pure function of the events.
        return gzip.compress(raw, compresslevel=6 if level is None else level, mtime=0)
    if encoding == "deflate":
        return zlib.compress(raw, 6 if level is None else level)
    if encoding == DICT_ENCODING:
        return compress_dict(raw) if level is None else compress_dict(raw, level)
    if encoding == "identity":
        return raw
    raise ValueError(f"unknown content encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")


def _decompress(body: bytes, encoding: str) -> bytes:
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
        if encoding == DICT_ENCODING:
            return _decompress_dict(body)
    except (OSError, zlib.error, EOFError) as exc:
        raise ContractError("bad_encoding", f"cannot decompress {encoding} body: {exc}") from None
    if encoding == "identity":
        return body
    raise ContractError("bad_encoding", f"unknown content encoding {encoding!r}")


def _line(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), sort_keys=True).encode()


def _properties(events: list[Mapping[str, Any]], store_id: str, encoding: str) -> dict[str, str]:
    first = events[0]
    return {
        "schema": BATCH_SCHEMA,
        "content-type": "application/x-ndjson",
        "content-encoding": encoding,
        "store_id": store_id,
        "first_device_id": str(first["device_id"]),
        "first_seq": str(first["seq"]),
        "count": str(len(events)),
    }


def encode_batch(events: list[Mapping[str, Any]], *, store_id: str, encoding: str = "gzip") -> BatchMessage:
    """Encode events as compressed newline-delimited JSON with IoT Hub application properties.

    Raises:
        ValueError: if ``events`` is empty or the encoded body exceeds MAX_MESSAGE_BYTES
            (use ``pack_batches`` to split).
    """
    if not events:
        raise ValueError("a batch needs at least one event")
    raw = b"\n".join(_line(e) for e in events)
    body = compress(raw, encoding)
    if len(body) > MAX_MESSAGE_BYTES:
        raise ValueError(f"batch of {len(events)} events encodes to {len(body)} bytes > {MAX_MESSAGE_BYTES}")
    return BatchMessage(body=body, properties=_properties(events, store_id, encoding))


def batch_lines(body: bytes, properties: Mapping[str, str]) -> list[str]:
    """The event lines of a batch, checked but not parsed (for readers that parse JSON in bulk).

    Raises:
        ContractError: ``bad_schema``, ``bad_encoding``, ``bad_json`` (body not UTF-8) or
            ``bad_count``.
    """
    schema = properties.get("schema")
    if schema != BATCH_SCHEMA:
        raise ContractError("bad_schema", f"batch schema {schema!r} is not {BATCH_SCHEMA}")
    raw = _decompress(body, properties.get("content-encoding", "identity"))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ContractError("bad_json", "batch body is not UTF-8") from None
    lines = [line for line in text.split("\n") if line]
    if properties.get("content-encoding") == DICT_ENCODING:
        lines = list(map(_restore_event_id, lines))
    count = properties.get("count")
    if count is not None and str(len(lines)) != count:
        raise ContractError("bad_count", f"batch says {count} events, holds {len(lines)}")
    return lines


def parse_lines(lines: list[str]) -> list[Any]:
    """The JSON value of each event line (``None`` where a line does not parse), in one parser
    call for the whole batch when every line is one object (the common case: a third of the
    per-line cost), line by line otherwise. Values are not validated (the gateway did).
    """
    if lines and all(line[:1] == "{" and line[-1:] == "}" for line in lines):
        try:
            values = json.loads("[" + ",".join(lines) + "]")
        except ValueError:
            values = None
        if values is not None and len(values) == len(lines):
            return values
    out: list[Any] = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append(None)
    return out


def decode_batch(body: bytes, properties: Mapping[str, str]) -> list[dict]:
    """Decode a batch body back into events (not re-validated: the gateway already did).

    Raises:
        ContractError: ``bad_schema``, ``bad_encoding``, ``bad_json`` or ``bad_count``.
    """
    try:
        return [json.loads(line) for line in batch_lines(body, properties)]
    except ValueError as exc:
        raise ContractError("bad_json", f"batch line is not JSON: {exc}") from None


def pack_batches(
    events: Iterable[Mapping[str, Any]],
    *,
    store_id: str,
    encoding: str = "gzip",
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> Iterator[tuple[BatchMessage, list[Mapping[str, Any]]]]:
    """Split events into messages of at most ``max_bytes`` encoded; yield (message, its events).

    Compressed size is not known before compressing, so this estimates from the raw size with
    the last observed ratio and halves a batch that still comes out too big.
    """
    # Each event is serialized once; chunks carry (event, line) pairs.
    pending: list[tuple[Mapping[str, Any], bytes]] = []
    raw_bytes = 0
    ratio = 1.0 if encoding == "identity" else 0.25

    def emit(chunk: list[tuple[Mapping[str, Any], bytes]]) -> Iterator[tuple[BatchMessage, list[Mapping[str, Any]]]]:
        nonlocal ratio
        raw = b"\n".join(line for _, line in chunk)
        body = compress(raw, encoding)
        if len(body) > max_bytes and len(chunk) > 1:
            half = len(chunk) // 2
            yield from emit(chunk[:half])
            yield from emit(chunk[half:])
            return
        if len(body) > max_bytes:
            raise ValueError(f"one event encodes to {len(body)} bytes > {max_bytes}")
        ratio = max(len(body) / max(len(raw), 1), 0.01)
        events_ = [e for e, _ in chunk]
        yield BatchMessage(body=body, properties=_properties(events_, store_id, encoding)), events_

    for event in events:
        line = _line(event)
        if pending and (raw_bytes + len(line) + 1) * ratio * 1.1 > max_bytes:
            yield from emit(pending)
            pending, raw_bytes = [], 0
        pending.append((event, line))
        raw_bytes += len(line) + 1
    if pending:
        yield from emit(pending)
