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


#: What a strict settings field expects, by pydantic's error type (the value was of another type).
EXPECTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
            "string_type": "text (a quoted string)", "list_type": "a list", "tuple_type": "a list",
            "dict_type": "a table", "model_type": "a table", "path_type": "a path (text)"}


def _kind(value: Any) -> str:
    """The type of a value as a TOML or command-line user wrote it."""
    import datetime

    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, datetime.datetime):
        return f"a date and time ({value.isoformat()})"
    if isinstance(value, datetime.date):
        return f"a date ({value.isoformat()})"
    if isinstance(value, datetime.time):
        return f"a time of day ({value.isoformat()})"
    if isinstance(value, float):
        return f"the decimal number {value!r}"
    if isinstance(value, int):
        return f"the integer {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


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
    if first["type"] in EXPECTED:  # strict settings: a value of another type is never converted
        hint = "; write it without quotes" if isinstance(value, str) and first["type"] in (
            "int_type", "float_type", "bool_type") else ""
        return f"{where}{'.'.join(loc)}: expected {EXPECTED[first['type']]}, got {_kind(value)}{hint}"
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
