"""One set of text -> number rules for every engine (DuckDB and Spark run the same SQL).

Silver reads numbers from text: a JSON number rendered as text by ``JSON_STRUCT``, or a CSV
cell. Engines disagree on edge cases when left to ``TRY_CAST`` alone (DuckDB rounds ``'2.7'``
to 3 for a BIGINT, Spark gives NULL; ``'NaN'`` becomes NaN in one and NULL in the other), so
the rule is spelled out in SQL both engines evaluate the same way:

* an integer column takes only integral text: optional sign, digits, optionally a decimal point
  followed by zeros only (``7``, ``-3``, ``2.0``); ``2.7``, ``2.5``, ``1e3``, ``''`` -> NULL;
  out of the int64 range -> NULL;
* a double column takes decimal or scientific notation; ``NaN``, ``Infinity`` and ``''`` -> NULL;
* NULL means "not a number", which an expectation then drops to the quarantine (never a silent
  rounding).

Regular expressions use only ``[...]`` classes (no backslashes: Spark SQL literals unescape them).
"""

from __future__ import annotations

__all__ = ["sql_int", "sql_double", "sql_text", "INT_PATTERN", "DOUBLE_PATTERN"]

INT_PATTERN = "^[+-]?[0-9]+([.]0*)?$"
DOUBLE_PATTERN = "^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][+-]?[0-9]+)?$"


def _matches(expr: str, pattern: str) -> str:
    # regexp_replace of the whole text by '' is '' exactly when the text matches: the one
    # regular-expression form DuckDB and Spark SQL share.
    return f"(TRIM({expr}) <> '' AND regexp_replace(TRIM({expr}), '{pattern}', '') = '')"


def sql_int(expr: str) -> str:
    """SQL: ``expr`` (text) as BIGINT under the integral-text rule, else NULL."""
    return (f"CASE WHEN {_matches(expr, INT_PATTERN)} "
            f"THEN TRY_CAST(regexp_replace(TRIM({expr}), '[.]0*$', '') AS BIGINT) END")


def sql_double(expr: str) -> str:
    """SQL: ``expr`` (text) as DOUBLE (decimal or scientific notation; no NaN / Infinity), else NULL."""
    return f"CASE WHEN {_matches(expr, DOUBLE_PATTERN)} THEN TRY_CAST(TRIM({expr}) AS DOUBLE) END"


def sql_text(expr: str) -> str:
    """SQL: ``expr`` trimmed, with the empty string as NULL (an empty CSV cell is no value)."""
    return f"NULLIF(TRIM({expr}), '')"
