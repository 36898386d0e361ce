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


def parse(text: str) -> dict[str, str]:
    """The fields of a line that line() wrote (for readers of the log: tests, the demo); quotes are undone."""
    fields: dict[str, str] = {}
    position, length = 0, len(text)
    while position < length:
        while position < length and text[position] == " ":
            position += 1
        equals = text.find("=", position)
        if equals < 0:
            break
        key = text[position:equals]
        position = equals + 1
        if position < length and text[position] == '"':
            position += 1
            value = []
            while position < length and text[position] != '"':
                char = text[position]
                if char == "\\" and position + 1 < length:
                    position += 1
                    char = {"n": "\n", "t": "\t"}.get(text[position], text[position])
                value.append(char)
                position += 1
            position += 1
            fields[key] = "".join(value)
        else:
            end = text.find(" ", position)
            end = length if end < 0 else end
            fields[key] = text[position:end]
            position = end
    return fields
