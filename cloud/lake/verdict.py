"""The gateway's contract verdict for a whole bronze batch, with the gateway's own validator as
the judge of every line the fast rules cannot decide.

``gondola.contracts.parse_event`` is the one definition of a valid event (the gateway applies
it to every payload). Run on every line it was most of the silver step. Here the same rules (``gondola.contracts.field_rules``) are
compiled into typed ``msgspec`` structs (one per event type, tagged by ``type``, unknown fields
forbidden, strings of 1-128 characters, integers and floats with the contract's bounds, choices
as literals), a decoder written in C that validates while it parses. It can only *accept*:

1. **The text gate** (vectorized, Arrow): the line is printable ASCII without a backslash. So
   no escape can hide a control character, a lone surrogate or a BOM, every string's length in
   characters is its length in bytes, and every ``"`` delimits a string.
2. **The typed decode**: strict JSON (no ``NaN``, trailing commas, leading zeros or text after
   the object; an integer field refuses ``1.0``, ``1e3``, ``true`` and ``null``), the type's
   fields, kinds and bounds.
3. **Keys**: the decoder keeps the last of duplicate keys, which ``parse_event`` refuses; so
   the line must hold as many keys (``":``, which in gated text only follows a key; counted
   vectorized) as the decoded event has fields set. A duplicate (or a space before a colon)
   breaks the count and the line is not decided here.

A line passing all three is accepted (verdict NULL). Every other line (a refused one, or one the
fast rules do not cover, e.g. non-ASCII text) goes to ``parse_event``, which gives the verdict
and its reason. So the verdicts are those of ``parse_event`` line for line
(``tests/unit/test_contract_parity.py`` holds the two to each other on adversarial lines of
every type), and gateway traffic is judged about 2x faster than by ``parse_event`` on each line
(``python -m bench lake`` measures the two side by side).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gondola.contracts import EVENT_TYPES, field_rules, parse_event
from gondola.errors import ContractError

__all__ = ["accepted_mask", "contract_verdicts", "has_backslash"]

def _kind_type(kind: type, lo, hi, choices) -> Any:
    """One kind of a field as an annotated type with the contract's bounds (``None``: no fast rule)."""
    if kind is str:
        if lo is not None or hi is not None:
            return None
        if choices is not None:
            return Literal[tuple(choices)]
        return Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    if choices is not None:
        return None
    if kind is int:
        # An int against a float bound compares exactly in Python: v >= -1000.0 is v >= -1000.
        meta = {k: f(b) for k, f, b in (("ge", math.ceil, lo), ("le", math.floor, hi)) if b is not None}
        return Annotated[int, msgspec.Meta(**meta)] if meta else int
    if kind is float:
        meta = {k: float(b) for k, b in (("ge", lo), ("le", hi)) if b is not None}
        return Annotated[float, msgspec.Meta(**meta)] if meta else float
    return None


def _field_type(kinds: tuple[type, ...], lo, hi, choices) -> Any:
    types = [_kind_type(k, lo, hi, choices) for k in kinds]
    if any(t is None for t in types):
        return None
    return types[0] if len(types) == 1 else Union[tuple(types)]


def _struct(name: str, specs: tuple, *, tag: str | None = None, data: type | None = None) -> type | None:
    fields = []
    for field, _path, kinds, required, lo, hi, choices in specs:
        if field == "type" and tag is not None:
            continue  # the tag: checked by the decoder against the type's name
        ftype = data if field == "data" else _field_type(kinds, lo, hi, choices)
        if ftype is None:
            return None
        fields.append((field, ftype) if required else (field, ftype, msgspec.UNSET))
    options = {"tag_field": "type", "tag": tag} if tag is not None else {}
    return msgspec.defstruct(name, fields, kw_only=True, forbid_unknown_fields=True, **options)


def _decoder() -> msgspec.json.Decoder | None:
    """One decoder over the tagged union of every event type (``None`` if a rule has no fast form)."""
    types = []
    for etype in EVENT_TYPES:
        envelope, data = field_rules(etype)
        data_type = _struct(f"Data_{etype}", data)
        event_type = _struct(f"Event_{etype}", envelope, tag=etype, data=data_type) if data_type else None
        if event_type is None:
            return None
        types.append(event_type)
    return msgspec.json.Decoder(Union[tuple(types)])


_DECODER = _decoder()
_UNSET = msgspec.UNSET
_astuple = msgspec.structs.astuple


def accepted_mask(lines: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per line: True when the fast rules accept it (then ``parse_event`` accepts it too);
    False means "not decided here"."""
    n = len(lines)
    ok = np.zeros(n, dtype=bool)
    if n == 0 or _DECODER is None:
        return ok
    # (Arrow's plain kernels, not one regular expression: a third of the time on a day of 100 stores;
    # the backslash found in the text buffer by numpy, 9x less CPU than Arrow's substring search)
    gated = pc.and_kleene(pc.string_is_ascii(lines), pc.ascii_is_printable(lines))
    at = np.flatnonzero(np.asarray(pc.fill_null(gated, False)) & ~has_backslash(lines))
    if len(at) == 0:
        return ok
    if len(at) < n:
        lines = lines.take(pa.array(at, pa.int64()))
    texts = lines.to_pylist()
    keys = pc.count_substring(lines, '":').to_numpy(zero_copy_only=False)
    decode = _DECODER.decode
    for i, text, n_keys in zip(at.tolist(), texts, keys.tolist()):
        try:
            event = decode(text)
        except msgspec.DecodeError:
            continue
        top, data = _astuple(event), _astuple(event.data)
        # keys: the tag ("type"), the envelope's fields set ("data" among them), data's fields set
        if 1 + len(top) - top.count(_UNSET) + len(data) - data.count(_UNSET) == n_keys:
            ok[i] = True
    return ok


def has_backslash(lines: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per line: whether its text holds a backslash (False for a null line): one scan of the
    text buffer for the byte, each hit placed in its line by the offsets."""
    if isinstance(lines, pa.ChunkedArray):
        parts = [has_backslash(chunk) for chunk in lines.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
    if not (pa.types.is_string(lines.type) or pa.types.is_large_string(lines.type)):
        return has_backslash(lines.cast(pa.large_string()))  # string_view: no offsets buffer
    n = len(lines)
    out = np.zeros(n, dtype=bool)
    _, offsets_buf, data = lines.buffers()
    if n == 0 or data is None or data.size == 0:
        return out
    width = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    offsets = np.frombuffer(offsets_buf, dtype=width)[lines.offset: lines.offset + n + 1]
    text = np.frombuffer(data, dtype=np.uint8)[offsets[0]: offsets[-1]]
    hits = np.flatnonzero(text == ord("\\")) + offsets[0]
    # the line a byte at p is in: the last line starting at or before p (an empty or null line
    # starts where the next one does, and the next one comes later in the offsets)
    out[np.searchsorted(offsets, hits, side="right") - 1] = True
    if lines.null_count:  # a null slot may span bytes (Arrow does not require it to be empty)
        out &= np.asarray(lines.is_valid())
    return out


def contract_verdicts(lines: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Per line, the reason ``parse_event`` refuses it (string), or null when it accepts it or
    the line is null; the fast rules decide what they can, ``parse_event`` the rest."""
    undecided = ~accepted_mask(lines) & ~np.asarray(pc.is_null(lines))
    at = np.flatnonzero(undecided)
    verdicts = np.full(len(lines), None, dtype=object)
    for i, line in zip(at, lines.take(pa.array(at, pa.int64())).to_pylist()):
        try:
            parse_event(line)
        except ContractError as exc:
            verdicts[i] = exc.reason
    return pa.array(verdicts, pa.string())
