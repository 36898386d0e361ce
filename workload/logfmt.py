"""One logfmt line per event: key=value pairs, values quoted only where they need it."""

from __future__ import annotations

_NEEDS_QUOTES = frozenset(' ="\\\t\n')


def _value(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.1f}"
    text = str(value)
    if text == "" or any(char in _NEEDS_QUOTES for char in text):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    return text


def line(**fields: object) -> str:
    """A logfmt line of the fields in the order given; None is written as `none`, floats to one decimal."""
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items())
