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


def validation_message(err: Any, where: str = "") -> str:
    """One line from a pydantic ValidationError's first error: `field=value is invalid: why` for a field,
    the validator's own sentence for a combination of fields (pydantic's 'Value error, ' prefix dropped)."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    message = str(first["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if first["type"] == "extra_forbidden":
        return f"{where}unknown key {'.'.join(loc)!r}"
    if first["type"] == "missing":
        return f"{where}{'.'.join(loc)} is required"
    if first["type"] == "value_error" or not loc:
        section = ".".join(loc)
        return f"{where}{section + ': ' if section else ''}{message}"
    value = first.get("input")
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{where}{'.'.join(loc)}={text} is invalid: {message}"


def validated(model: type[T], /, **values: Any) -> T:
    """Build a pydantic settings model, turning its first validation error into a one-line PQError that names
    the field and the value (pydantic's own message spans several lines)."""
    from pydantic import ValidationError  # lazy: pydantic

    try:
        return model(**values)
    except ValidationError as err:
        raise PQError(validation_message(err)) from None
    except PQError:
        raise
