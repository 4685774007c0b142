"""The gateway's contract verdict for a whole bronze batch at once (DuckDB), with the gateway's
validator as the judge of every line the vectorized rules cannot decide.

``gondola.contracts.parse_event`` is the one definition of a valid event (the gateway applies
it to every payload). Run per line in Python it cost silver about 16 us a line, most of the
silver step. Here the same rules (``gondola.contracts.field_rules``) are compiled into one
DuckDB expression per event type that can only *accept*:

1. **The text gate**: the line is printable ASCII without a backslash (so no escape can hide a
   control character, a lone surrogate or a BOM, and every string's length in characters is
   its length in bytes) and matches a strict JSON grammar of an object whose values are
   scalars or objects of scalars (RFC 8259 numbers; no ``NaN``, ``Infinity``, comments,
   trailing commas or text after the object; space as the only white space). On such text
   DuckDB's reader and Python's decoder build the same object, except for what the next steps
   check: duplicate keys (DuckDB keeps both) and number widths.
2. **Keys**: envelope and ``data`` keys are unique and all known for the type.
3. **Fields**: each field's JSON type (``json_type``: ``BIGINT``/``UBIGINT`` for an integer
   literal, ``DOUBLE`` for any other number, so ``1.0`` is not an int and ``true`` is not a
   number), string lengths 1-128, finite numbers, bounds and choices, required fields present.

A line passing all three is accepted (verdict NULL). Every other line (a refused one, or one the
rules do not cover, e.g. non-ASCII text or an integer wider than 64 bits) goes to
``parse_event``, which gives the verdict and its reason. So the verdicts are those of
``parse_event`` line for line (``tests/unit/test_contract_parity.py`` holds the two to each
other on adversarial lines), and a batch of gateway traffic is judged almost entirely in SQL.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from gondola.contracts import EVENT_TYPES, field_rules, parse_event
from gondola.errors import ContractError

__all__ = ["contract_verdicts", "accepted_mask"]

# ---- the text gate (RE2 syntax, as DuckDB's regexp_full_match reads it) ------------------------
_W = " *"
_STR = r'"[ !#-\[\]-~]*"'  # printable ASCII but '"' and '\'
_NUM = r"-?(0|[1-9][0-9]*)([.][0-9]+)?([eE][+-]?[0-9]+)?"
_SCALAR = f"({_STR}|{_NUM}|true|false|null)"


def _obj(value: str) -> str:
    member = f"{_STR}{_W}:{_W}{value}"
    return f"[{{]{_W}({member}{_W}(,{_W}{member}{_W})*)?[}}]"


#: an object whose values are scalars or objects of scalars (an event's shape), as a whole line
GATE = f"{_W}{_obj(f'({_SCALAR}|{_obj(_SCALAR)})')}{_W}"


def _lit(x) -> str:
    return repr(float(x)) if isinstance(x, float) else str(int(x))


def _field_sql(i: int, kinds: tuple[type, ...], required: bool, lo, hi, choices) -> str:
    """SQL: field ``i`` of the path lists (``t``: JSON types, ``v``: values as text) passes."""
    t, v = f"t[{i}]", f"v[{i}]"
    alts = []
    for k in kinds:
        if k is str:
            conds = [f"{t} = 'VARCHAR'", f"length({v}) BETWEEN 1 AND 128"]
            value = None
        elif k is int:
            conds = [f"{t} IN ('BIGINT', 'UBIGINT')"]
            value = f"TRY_CAST({v} AS HUGEINT)"
        elif k is float:
            conds = [f"{t} = 'DOUBLE'", f"isfinite(TRY_CAST({v} AS DOUBLE))"]
            value = f"TRY_CAST({v} AS DOUBLE)"
        elif k is dict:
            conds = [f"{t} = 'OBJECT'"]
            value = None
        else:  # a kind the compiler does not know: never accept here
            return "FALSE"
        if value is not None:
            if lo is not None:
                conds.append(f"{value} >= {_lit(lo)}")
            if hi is not None:
                conds.append(f"{value} <= {_lit(hi)}")
        elif (lo is not None or hi is not None) and k is not str:
            return "FALSE"
        if choices is not None:
            conds.append(f"{v} IN ({', '.join(_quote(c) for c in choices)})")
        alts.append("(" + " AND ".join(conds) + ")")
    test = "(" + " OR ".join(alts) + ")"
    return f"({t} IS NOT NULL AND {test})" if required else f"({t} IS NULL OR {test})"


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _type_sql(etype: str) -> str:
    """One query: the row numbers of ``etype`` lines the compiled rules accept."""
    envelope, data = field_rules(etype)
    specs = list(envelope) + list(data)
    paths = ", ".join(_quote("$." + path) for _name, path, *_ in specs)
    env_keys = ", ".join(_quote(s[0]) for s in envelope)
    data_keys = ", ".join(_quote(s[0]) for s in data) or "''"
    checks = [_field_sql(i + 1, kinds, required, lo, hi, choices)
              for i, (_name, _path, kinds, required, lo, hi, choices) in enumerate(specs)]
    type_at = next(i + 1 for i, s in enumerate(specs) if s[0] == "type")
    checks.append(f"v[{type_at}] = {_quote(etype)}")
    return f"""
        SELECT row_nr FROM (
          SELECT row_nr, json_type(event_json, [{paths}]) AS t, json_extract_string(event_json, [{paths}]) AS v,
                 json_keys(event_json) AS k, json_keys(event_json, '$.data') AS dk
          FROM gated WHERE kind = {_quote(etype)})
        WHERE len(k) = len(list_distinct(k)) AND list_has_all([{env_keys}], k)
          AND dk IS NOT NULL AND len(dk) = len(list_distinct(dk)) AND list_has_all([{data_keys}]::VARCHAR[], dk)
          AND {' AND '.join(checks)}"""


def accepted_mask(lines: pa.Array | pa.ChunkedArray, kinds: pa.Array | pa.ChunkedArray | None = None) -> np.ndarray:
    """Per line: True when the compiled rules accept it (then ``parse_event`` accepts it too);
    False means "not decided here". ``kinds`` is a guess of each line's type (bronze's ``type``
    column) that only routes lines to their type's query; the type is checked in the line."""
    import duckdb

    n = len(lines)
    ok = np.zeros(n, dtype=bool)
    if n == 0:
        return ok
    raw = pa.table({"row_nr": pa.array(np.arange(n, dtype=np.int64)), "event_json": lines,
                    "kind": kinds if kinds is not None else pa.nulls(n, pa.string())})
    kind = "kind" if kinds is not None else "json_extract_string(event_json, '$.type')"
    con = duckdb.connect()
    try:
        con.register("raw", raw)
        # Materialized first: DuckDB would otherwise run the JSON readers before the gate's filter
        # (and refuse the whole batch for one line that is not JSON).
        con.execute(f"CREATE TEMP TABLE gated AS SELECT row_nr, event_json, {kind} AS kind FROM raw "
                    f"WHERE regexp_full_match(event_json, '{GATE}')")
        rows = con.sql(" UNION ALL ".join(_type_sql(etype) for etype in EVENT_TYPES)).to_arrow_table()
        ok[rows["row_nr"].to_numpy()] = True
        return ok
    finally:
        con.close()


def contract_verdicts(lines: pa.Array | pa.ChunkedArray, kinds: pa.Array | pa.ChunkedArray | None = None) -> pa.Array:
    """Per line, the reason ``parse_event`` refuses it (string), or null when it accepts it or
    the line is null; the vectorized rules decide what they can, ``parse_event`` the rest."""
    undecided = ~accepted_mask(lines, kinds) & ~np.asarray(pc.is_null(lines))
    at = np.flatnonzero(undecided)
    verdicts = np.full(len(lines), None, dtype=object)
    for i, line in zip(at, lines.take(pa.array(at, pa.int64())).to_pylist()):
        try:
            parse_event(line)
        except ContractError as exc:
            verdicts[i] = exc.reason
    return pa.array(verdicts, pa.string())
