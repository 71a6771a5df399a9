"""The song's validation rules, generated from :data:`~emergify_contracts.song_fields.SONG_FIELDS`.

Two renderings of the same rules, with the same messages:

- Python: :func:`check_value` (what the pydantic validators of ``Song`` call) and
  :func:`type_error` (a value of the wrong type);
- Spark SQL: :func:`sql_checks` (one ``CASE`` per field over the parsed event ``s``, the
  speed layer's cleaning), with :func:`sql_list_cleaning` and :func:`sql_clean_projection`.

Numbers in messages are written by :func:`number_text` in Python and :func:`sql_number_text`
in Spark SQL, which agree (``1.7``, ``-80``, ``nan``, ``inf``).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from functools import lru_cache
from typing import Any

from emergify_contracts.song_fields import SONG_FIELDS, SongField

_VALUE = "\x00value\x00"  # stands for the value while a template is split around it


def number_text(value: float) -> str:
    """A number as messages show it, the way Spark casts a double to text with a trailing
    ``.0`` dropped (``1.7``, ``-80``, ``1.0E-5``), and ``nan``/``inf`` for the non-finite."""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    magnitude = abs(value)
    if magnitude == 0 or 1e-3 <= magnitude < 1e7:
        text = repr(value)
    else:  # Java's computerized scientific notation: d.dddE[-]n
        sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
        assert isinstance(exponent, int)
        head, tail = str(digits[0]), "".join(str(d) for d in digits[1:]) or "0"
        text = f"{'-' if sign else ''}{head}.{tail}E{exponent + len(digits) - 1}"
    return text.removesuffix(".0")


def _bound(f: SongField, bound: float | None) -> str:
    if bound is None:
        return ""
    return str(int(bound)) if f.kind == "integer" else number_text(bound)


def _range_message(f: SongField, value: str) -> str:
    return f.message(f.range_text(), value=value, lo=_bound(f, f.minimum), hi=_bound(f, f.maximum))


def _out_of_range(f: SongField, value: float) -> bool:
    if f.kind == "number" and not math.isfinite(value):
        return True
    return (f.minimum is not None and value < f.minimum) or (
        f.maximum is not None and value > f.maximum
    )


def clean_list(values: list[str] | None) -> list[str]:
    """A list of names or ids trimmed, without empty entries."""
    return [v.strip() for v in values or () if v and v.strip()]


def check_value(f: SongField, value: Any) -> tuple[Any, str | None]:
    """``value`` (already of ``f``'s type, or None) cleaned, and the message of the first rule
    it breaks (None when it passes every rule)."""
    if f.kind == "text_list":
        items = clean_list(value)
        if len(items) < f.min_items:
            return items, f.message(f.min_items_message or "{field} is required")
        if f.max_length is not None and len(items) > f.max_length:
            return items, f.message(f.length_message or "", limit=f.max_length)
        if f.pattern is not None:
            bad = next((i for i in items if not _regex(f.pattern).match(i)), None)
            if bad is not None:
                return items, f.message(f.pattern_message or "", value=bad)
        return items, None
    if f.kind == "text":
        text = value.strip() if isinstance(value, str) else value
        if text in (None, ""):
            return None, (f.message("{field} is required") if f.required else None)
        if f.max_length is not None and len(text) > f.max_length:
            return text, f.message(f.length_message or "", limit=f.max_length)
        if f.pattern is not None and not _regex(f.pattern).match(text):
            return text, f.message(f.pattern_message or "", value=text)
        return text, None
    if value is None:
        return None, (f.message("{field} is required") if f.required else None)
    if f.kind in ("number", "integer") and _out_of_range(f, value):
        shown = str(value) if f.kind == "integer" else number_text(value)
        return value, _range_message(f, shown)
    return value, None


@lru_cache(maxsize=64)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def type_error(f: SongField, raw: object, *, fractional: bool = False) -> str:
    """The message for ``raw``, a value that is not of ``f``'s type (``fractional``: a
    number where a whole number belongs)."""
    shown = repr(str(raw)[:40])
    if f.kind == "boolean":
        return f"{f.name} {shown} is not true/false"
    if fractional:
        return f"{f.name} {shown} is not a whole number"
    return f"{f.name} {shown} is not a number"


# --- Spark SQL ---------------------------------------------------------------------------


def sql_literal(text: str) -> str:
    """``text`` as a Spark SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_number_text(expr: str) -> str:
    """Spark SQL text of the double ``expr`` as :func:`number_text` writes it."""
    return (
        f"CASE WHEN isnan({expr}) THEN 'nan' WHEN {expr} = double('Infinity') THEN 'inf' "
        f"WHEN {expr} = double('-Infinity') THEN '-inf' "
        f"ELSE regexp_replace(CAST({expr} AS STRING), '[.]0$', '') END"
    )


def _sql_repr(expr: str) -> str:
    # Python's repr of a short text: single quotes, unless the text holds one and no double.
    text = f"substring({expr}, 1, 40)"
    return (
        f"CASE WHEN contains({text}, '\\'') AND NOT contains({text}, '\"') "
        f"THEN concat('\"', {text}, '\"') "
        f"ELSE concat('\\'', replace(replace({text}, '\\\\', '\\\\\\\\'), '\\'', '\\\\\\''), "
        "'\\'') END"
    )


def _sql_message(template: str, value_expr: str | None = None) -> str:
    if value_expr is None or _VALUE not in template:
        return sql_literal(template)
    before, after = template.split(_VALUE, 1)
    parts = [sql_literal(p) for p in (before,) if p]
    parts.append(value_expr)
    if after:
        parts.append(sql_literal(after))
    return f"concat({', '.join(parts)})"


def _list_column(f: SongField) -> str:
    return f"{f.name}_clean"


def sql_list_cleaning(
    song: str = "event.song", fields: tuple[SongField, ...] = SONG_FIELDS
) -> list[str]:
    """Select items that trim each list field of ``song`` and drop its empty entries, as
    ``<field>_clean`` (the names :func:`sql_checks` reads)."""
    return [
        f"filter(transform({song}.{f.name}, a -> trim(a)), a -> coalesce(a, '') <> '') "
        f"AS {_list_column(f)}"
        for f in fields
        if f.kind == "text_list"
    ]


def sql_clean_projection(song: str = "s", fields: tuple[SongField, ...] = SONG_FIELDS) -> list[str]:
    """Select items giving each field's cleaned value under its own name."""
    out = []
    for f in fields:
        col = f"{song}.{f.name}"
        if f.kind == "text":
            text = f"trim({col})" if f.required else f"nullif(trim({col}), '')"
            out.append(f"{text} AS {f.name}")
        elif f.kind == "text_list":
            out.append(f"coalesce({_list_column(f)}, array()) AS {f.name}")
        else:
            out.append(f"{col} AS {f.name}")
    return out


def _sql_type_error(f: SongField, raw: str) -> str:
    shown = _sql_repr(raw)
    if f.kind == "boolean":
        return f"concat('{f.name} ', {shown}, ' is not true/false')"
    return (
        f"CASE WHEN try_cast({raw} AS DOUBLE) IS NOT NULL "
        f"THEN concat('{f.name} ', {shown}, ' is not a whole number') "
        f"ELSE concat('{f.name} ', {shown}, ' is not a number') END"
        if f.kind == "integer"
        else f"concat('{f.name} ', {shown}, ' is not a number')"
    )


def sql_check(
    f: SongField, song: str = "s", raw_json: str = "record_value", json_path: str = "$.song"
) -> str:
    """One Spark SQL ``CASE`` giving the message of the first rule ``f`` breaks, else null.

    ``song`` is the parsed song struct; ``raw_json`` the record's JSON text, read (only when
    the typed value is null) to tell a missing value from one of the wrong type.
    """
    col = f"{song}.{f.name}"
    whens: list[str] = []
    if f.kind == "text":
        text = f"trim({col})"
        blank = f"coalesce({text}, '') = ''"
        missing = sql_literal(f.name + " is required") if f.required else "NULL"
        whens.append(f"WHEN {blank} THEN {missing}")
        if f.max_length is not None:
            msg = f.message(f.length_message or "", limit=f.max_length)
            whens.append(f"WHEN length({text}) > {f.max_length} THEN {sql_literal(msg)}")
        if f.pattern is not None:
            msg = f.message(f.pattern_message or "", value=_VALUE)
            whens.append(
                f"WHEN NOT {text} RLIKE {sql_literal(f.pattern)} THEN {_sql_message(msg, text)}"
            )
    elif f.kind == "text_list":
        items = _list_column(f)
        if f.required:
            whens.append(f"WHEN {col} IS NULL THEN {sql_literal(f.name + ' is required')}")
        if f.min_items:
            msg = f.message(f.min_items_message or "{field} is required")
            few = f"size(coalesce({items}, array())) < {f.min_items}"
            whens.append(f"WHEN {few} THEN {sql_literal(msg)}")
        if f.max_length is not None:
            msg = f.message(f.length_message or "", limit=f.max_length)
            whens.append(f"WHEN size({items}) > {f.max_length} THEN {sql_literal(msg)}")
        if f.pattern is not None:
            bad = f"a -> NOT a RLIKE {sql_literal(f.pattern)}"
            first = f"element_at(filter({items}, {bad}), 1)"
            msg = f.message(f.pattern_message or "", value=_VALUE)
            whens.append(f"WHEN exists({items}, {bad}) THEN {_sql_message(msg, first)}")
    else:
        raw = f"get_json_object({raw_json}, {sql_literal(json_path + '.' + f.name)})"
        if f.required:
            whens.append(
                f"WHEN {col} IS NULL AND {raw} IS NULL THEN {sql_literal(f.name + ' is required')}"
            )
        whens.append(f"WHEN {col} IS NULL AND {raw} IS NOT NULL THEN {_sql_type_error(f, raw)}")
        if f.kind in ("number", "integer") and (f.minimum is not None or f.maximum is not None):
            bad = []
            if f.kind == "number":
                bad.append(f"isnan({col}) OR abs({col}) = double('Infinity')")
            if f.minimum is not None:
                bad.append(f"{col} < {_bound(f, f.minimum)}")
            if f.maximum is not None:
                bad.append(f"{col} > {_bound(f, f.maximum)}")
            shown = sql_number_text(col) if f.kind == "number" else f"CAST({col} AS STRING)"
            msg = _range_message(f, _VALUE)
            whens.append(f"WHEN {' OR '.join(bad)} THEN {_sql_message(msg, shown)}")
    return "CASE " + " ".join(whens) + " END"


def sql_checks(
    song: str = "s", fields: tuple[SongField, ...] = SONG_FIELDS, raw_json: str = "record_value"
) -> list[str]:
    """One :func:`sql_check` per field, in field order."""
    return [sql_check(f, song, raw_json) for f in fields]
