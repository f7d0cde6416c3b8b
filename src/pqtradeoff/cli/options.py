"""CLI options derived from the settings models: each option's type, default and help come from its field.

A command declares only a table `{"--flag": "dotted.field.path"}` (a flag may set several paths, e.g. one
`--dtype` for both models of `score`); `settings_command` builds the typer command from it, and
`settings_from_options` turns the parsed values back into the nested settings, validated by the model (so a
range check is written once, in the model). `tests/test_cli_options.py` walks every model and checks that
every field is reachable from its command.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined

from pqtradeoff.errors import PQError, validation_message

Paths = str | tuple[str, ...]


def field_info(model: type[BaseModel], path: str) -> Any:
    """The pydantic FieldInfo at a dotted path, walking nested sections (`X` or `X | None`)."""
    head, _, rest = path.partition(".")
    if head not in model.model_fields:
        raise KeyError(f"{model.__name__} has no field {head!r}")
    info = model.model_fields[head]
    if not rest:
        return info
    for candidate in [info.annotation, *typing.get_args(info.annotation)]:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return field_info(candidate, rest)
    raise KeyError(f"{path!r}: {head!r} is not a section")


def _cli_type(annotation: Any) -> Any:
    """The type typer parses: `X | None` -> X, Literal[...] -> str; lists and plain types stay."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return str
    if origin is list:
        return annotation
    if origin is typing.Union or isinstance(annotation, types.UnionType):
        return _cli_type(args[0])
    return annotation


def _paths(value: Paths) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def parameters(model: type[BaseModel], flags: dict[str, Paths], overrides: dict[str, Any] | None = None
               ) -> list[inspect.Parameter]:
    """typer parameters for `flags`, typed, defaulted and documented from `model`'s fields."""
    out = []
    for flag, paths in flags.items():
        info = field_info(model, _paths(paths)[0])
        kind = _cli_type(info.annotation)
        default = info.get_default(call_default_factory=True) if info.default is not PydanticUndefined or \
            info.default_factory is not None else ...
        if (overrides or {}).get(flag, PydanticUndefined) is not PydanticUndefined:
            default = overrides[flag]
        if kind is bool:
            decl = f"{flag}/--no-{flag[2:]}"
            option = typer.Option(default, decl, help=info.description)
        else:
            if isinstance(default, list) and not default:
                default = None
            option = typer.Option(default, flag, help=info.description,
                                  show_default=default not in (None, ...))
        name = flag[2:].replace("-", "_")
        annotation = kind if default is not None or kind is bool else kind | None
        if typing.get_origin(kind) is list:
            annotation = kind | None
        out.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                     annotation=annotation))
    return out


def nested_values(flags: dict[str, Paths], values: dict[str, Any]) -> dict[str, Any]:
    """Parsed option values -> the nested dict the settings model reads. Unset options (None) are left out,
    so the model's defaults apply; a section whose `name` is unset (an optional model) is left out whole."""
    nested: dict[str, Any] = {}
    for flag, paths in flags.items():
        value = values.get(flag[2:].replace("-", "_"))
        if value is None or (isinstance(value, list) and not value):
            continue
        for path in _paths(paths):
            node = nested
            *sections, leaf = path.split(".")
            for s in sections:
                node = node.setdefault(s, {})
            node[leaf] = list(value) if isinstance(value, (list, tuple)) else value
    for key in [k for k,
                v in nested.items() if isinstance(v, dict) and "name" not in v and _is_model_section(k)]:
        del nested[key]
    return nested


_MODEL_SECTIONS = {"model", "prior", "reward_model", "aligned"}


def _is_model_section(key: str) -> bool:
    return key in _MODEL_SECTIONS


def settings_from_options(model: type[BaseModel], flags: dict[str, Paths], values: dict[str, Any],
                          extra: dict[str, Any] | None = None) -> Any:
    """Build and validate the settings; a bad value is a one-line PQError naming the option."""
    nested = nested_values(flags, values)
    for key, value in (extra or {}).items():
        if isinstance(value, dict):
            nested.setdefault(key, {}).update(value)
        else:
            nested[key] = value
    try:
        return model(**nested)
    except ValidationError as err:
        raise PQError(_option_message(validation_message(err), flags)) from None


def _option_message(message: str, flags: dict[str, Paths]) -> str:
    """Name the CLI option rather than the settings path where the message starts with one."""
    for flag, paths in flags.items():
        for path in _paths(paths):
            if message.startswith(f"{path}="):
                return f"{flag}{message[len(path):]}"
            if message.startswith(f"{path} is required"):
                return f"{flag} is required"
    return message


def settings_command(app: typer.Typer, name: str, model: type[BaseModel], flags: dict[str, Paths],
                     handler: Callable[..., None], leading: list[inspect.Parameter] | None = None,
                     trailing: list[inspect.Parameter] | None = None, overrides: dict[str, Any] | None = None,
                     help: str | None = None) -> None:
    """Register `name` on `app` with `leading` parameters, the settings options, then `trailing` ones; the
    handler gets the validated settings and the values of the leading/trailing parameters."""
    own = parameters(model, flags, overrides)
    extra = [*(leading or []), *(trailing or [])]
    names = {p.name for p in extra}

    def command(**values: Any) -> None:
        settings = settings_from_options(model, flags, values)
        handler(settings, **{k: v for k, v in values.items() if k in names})

    command.__signature__ = inspect.Signature([*(leading or []), *own,
                                               *(trailing or [])])  # type: ignore[attr-defined]
    command.__doc__ = help
    command.__name__ = name
    app.command(name, help=help)(command)


def option(name: str, default: Any, *decls: str, annotation: Any = Path, **kwargs: Any) -> inspect.Parameter:
    """A plain (non-settings) option as an inspect.Parameter, e.g. `--out`."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                             default=typer.Option(default, *decls, **kwargs),
                             annotation=annotation)


def argument(name: str, annotation: Any = Path, **kwargs: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=typer.Argument(..., **kwargs),
                             annotation=annotation)
