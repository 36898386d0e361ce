"""A namespace matcher added to every series selector of a PromQL expression: the rule generator's `--watch-namespaces`
and `--ignore-namespaces`, the way kubernetes-mixin templates its selectors when its rules are generated.

A tokenizer, not a parser: it knows PromQL's keywords, label lists and aggregation operators, and refuses
(UnscopableExpr) what it cannot scope for sure instead of writing an expression that would see other namespaces.
Stdlib only.
"""

from __future__ import annotations

import re
from typing import Final


class UnscopableExpr(ValueError):
    """An expression the scoper cannot scope for sure; the message says what in it, and what to write instead."""


# PromQL words that are not metric names: binary and set operators, modifiers, the literals, and the aggregation
# operators (Prometheus' docs, querying/operators: an aggregation is followed by `(` or by `by`/`without`; a metric of
# that name would not be). PromQL's keywords are case-insensitive.
_KEYWORDS: Final = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
_LABEL_LISTS: Final = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_GROUPING: Final = frozenset({"by", "without"})
AGGREGATIONS: Final = frozenset(
    {
        *("sum", "avg", "min", "max", "bottomk", "topk", "group", "count", "count_values"),
        *("stddev", "stdvar", "quantile"),
        # experimental since Prometheus 3.0 (--enable-feature=promql-experimental-functions)
        *("limitk", "limit_ratio"),
    }
)
_STRING = r""""(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`"""
_TOKEN: Final = re.compile(
    rf"""(?P<string>{_STRING})
    |(?P<matchers>\{{(?:{_STRING}|[^}}"'`])*\}})
    |(?P<range>\[[^\]]*\])
    |(?P<comment>\#[^\n]*)
    |(?P<space>\s+)
    |(?P<number>\d[\w.]*)
    |(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<other>.)""",
    re.VERBOSE | re.DOTALL,
)


def _tokens(expr: str) -> list[tuple[str, str]]:
    return [(str(match.lastgroup), match.group()) for match in _TOKEN.finditer(expr)]


def _promql_string(text: str) -> str:
    """text as a PromQL double-quoted string (Go's escapes: a regexp's backslash is written twice)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_namespace_regex(regex: str) -> None:
    """ValueError unless regex is one Prometheus takes as a label matcher's (RE2: no lookaround, no backreference)."""
    if not regex or "\n" in regex:
        raise ValueError(f"{regex!r}: give a one-line regular expression")
    try:
        re.compile(regex)
    except re.error as error:
        raise ValueError(f"{regex!r} is not a regular expression ({error})") from None
    if re.search(r"\(\?<?[=!]|\\[1-9]", regex):
        raise ValueError(
            f"{regex!r}: Prometheus' regular expressions (RE2) have no lookaround or backreference; "
            "to leave namespaces out, use --ignore-namespaces"
        )


def scope_expr(expr: str, namespaces: str, ignore: bool = False) -> str:
    """expr with `namespace=~"<namespaces>"` (with ignore, `namespace!~`) added to every series selector in it, so
    that it sees only the namespaces the regular expression matches (or all but those). Prometheus anchors the
    expression: `oom-killer|team-.*`. UnscopableExpr for what the scoper cannot scope for sure, rather than a
    wrong expression: a grouping modifier without its label list, a name used as an aggregation that it does not
    know as one, an aggregation operator without its argument."""
    check_namespace_regex(namespaces)
    matcher = f"namespace{'!~' if ignore else '=~'}{_promql_string(namespaces)}"
    tokens = _tokens(expr)

    def following(index: int) -> tuple[int, str, str]:
        """The next token after index that is not space or a comment: (its index, kind, text)."""
        for later in range(index + 1, len(tokens)):
            if tokens[later][0] not in ("space", "comment"):
                return (later, *tokens[later])
        return len(tokens), "", ""

    out: list[str] = []
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        word = text.lower() if kind == "name" else ""
        if word in _LABEL_LISTS:  # `by (namespace, pod)`: label names, copied as they are
            opening, _, opening_text = following(index)
            if opening_text != "(":
                raise UnscopableExpr(
                    f"{text} without a label list: the scoper cannot tell where it would end; "
                    f"write {text}() for an empty one"
                )
            close = next((i for i in range(opening, len(tokens)) if tokens[i][1] == ")"), len(tokens) - 1)
            out.extend(token for _, token in tokens[index : close + 1])
            index = close + 1
            continue
        if kind == "name" and word not in _KEYWORDS:
            later, next_kind, next_text = following(index)
            if next_text.lower() in _GROUPING and word not in AGGREGATIONS:
                raise UnscopableExpr(
                    f"{text} {next_text} (...): not an aggregation the scoper knows ({', '.join(sorted(AGGREGATIONS))})"
                    ", and not a metric either"
                )
            call = next_text == "(" or next_text.lower() in _GROUPING
            if not call and word in AGGREGATIONS:
                raise UnscopableExpr(f"{text} is an aggregation, not a metric: give it its argument, {text}(...)")
            if not call:  # a metric name: scope its matchers, or give it some
                if next_kind == "matchers":
                    out.extend(token for _, token in tokens[index:later])
                    out.append(_with_matcher(next_text, matcher))
                    index = later + 1
                else:
                    out.append(f"{text}{{{matcher}}}")
                    index += 1
                continue
        if kind == "matchers":  # a selector without a metric name: {__name__=~"..."}
            out.append(_with_matcher(text, matcher))
        else:
            out.append(text)
        index += 1
    return "".join(out)


def _with_matcher(matchers: str, matcher: str) -> str:
    inside = matchers[1:-1].rstrip()
    inside = inside.removesuffix(",").rstrip()
    return "{" + (f"{inside}, {matcher}" if inside else matcher) + "}"
