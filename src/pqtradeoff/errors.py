"""The one exception type users see: a one-line message naming the field and the value."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


class PQError(ValueError):
    """Bad input or an impossible request. The CLI prints `error: <message>` and exits with code 2."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (or its type name): library errors can span many lines."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def validated(model: type[T], **values: Any) -> T:
    """Build a pydantic settings model, turning its first validation error into a one-line PQError that names
    the field and the value (pydantic's own message spans several lines)."""
    from pydantic import ValidationError

    try:
        return model(**values)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        raise PQError(f"{field}={first.get('input')!r} is invalid: {first['msg']}") from None
