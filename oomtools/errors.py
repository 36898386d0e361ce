"""Errors as the one line a user is shown: the Docker engine's, the Kubernetes client's and urllib3's come wrapped
several deep, with reprs of connection pools on the way; what they come down to is usually the socket's own word."""

from __future__ import annotations


def one_line(error: BaseException) -> str:
    """An error as one line: the engine's explanation where it gives one, white space collapsed."""
    return " ".join(str(getattr(error, "explanation", None) or error).split())


def root_cause(error: BaseException) -> str:
    """What an error comes down to, in a few words: the socket's own error where there is one (No such file or
    directory, Connection refused, Permission denied), else the error's own line."""
    pending, seen = [error], set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        pending += [arg for arg in current.args if isinstance(arg, BaseException)]
        pending += [link for link in (current.__cause__, current.__context__) if link is not None]
    return one_line(error)
