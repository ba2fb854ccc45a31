"""Pydantic validation errors in the words of whoever wrote the input: the field's dotted path and the message without
pydantic's prefixes; for an unknown key, the nearest known one (or the section it belongs in)."""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (`X`, `X | None`, `list[X]`, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model that the mapping at `loc` is validated as (list indexes and union tags skipped), if any."""
    for part in loc:
        if not isinstance(part, str) or part not in model.model_fields:
            continue
        inner = _models_in(model.model_fields[part].annotation)
        if not inner:
            return None
        model = inner[0]
    return model


def closest_key(model: type[BaseModel] | None, key: str) -> str | None:
    """The known key of `model` that `key` is most likely a typo of."""
    close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6) if model else []
    return close[0] if close else None


def unknown_key(model: type[BaseModel] | None, key: str) -> str:
    """'unknown key K', with the closest known key, or the section that has K, when there is one."""
    if model is None:
        return f"unknown key {key!r}"
    known = list(model.model_fields)
    if close := closest_key(model, key):
        return f"unknown key {key!r} (did you mean {close!r}?)"
    for name, field in model.model_fields.items():
        for section in _models_in(field.annotation):
            if key in section.model_fields:
                return f"unknown key {key!r} (it belongs under {name!r})"
    return f"unknown key {key!r}; known keys: {', '.join(known)}"


def field_problems(error: ValidationError, model: type[BaseModel]) -> list[tuple[Loc, Loc, str]]:
    """One (location of the value, location to report, message) per problem: an unknown key is reported at the mapping
    that holds it; a value that fits no member of a union is reported once, at the field."""
    out: list[tuple[Loc, Loc, str]] = []
    errors = error.errors(include_url=False)
    # A required key reported missing next to its misspelling says the same thing twice: keep the misspelling.
    seen: set[Loc] = {
        (*e["loc"][:-1], close)
        for e in errors
        if e["type"] == "extra_forbidden" and (close := closest_key(model_at(model, e["loc"][:-1]), str(e["loc"][-1])))
    }
    for err in errors:
        loc: Loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            out.append((loc, loc[:-1], unknown_key(model_at(model, loc[:-1]), str(loc[-1]))))
            continue
        field = _field_loc(model, loc)
        if field in seen:
            continue
        seen.add(field)
        message = "missing" if err["type"] == "missing" else str(err["msg"]).removeprefix("Value error, ")
        out.append((loc, field, message))
    return out


def _field_loc(model: type[BaseModel], loc: Loc) -> Loc:
    """`loc` up to the field a user wrote, without the union-member tags pydantic appends (`images.0.str`)."""
    out: list[str | int] = []
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            out.append(part)
        elif current is not None and part in current.model_fields:
            out.append(part)
            inner = _models_in(current.model_fields[part].annotation)
            current = inner[0] if inner else None
        else:
            break
    return tuple(out)


def describe(error: ValidationError, model: type[BaseModel]) -> str:
    """The problems as one line: 'a.text: ...; unknown key 'itemz' (did you mean 'items'?)'."""
    parts = []
    for _, loc, message in field_problems(error, model):
        where = ".".join(map(str, loc))
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
