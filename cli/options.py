"""Command-line options generated from the config models, as TRL's parser makes flags of its config dataclasses.

Each field of a model (and of its sections, such as JudgeConfig's `sampling` and `compute`) is one flag: the field's
description is its help, its default is shown, and each section has its own help panel. `@model_options(config=JUDGE)`
gives a command those flags and hands it one validated model. Only flags given on the command line (or through their
environment variable) override; the rest come from the `--config` file, where the group has one, then the model's
defaults. A value that does not validate is an error naming its flag, or its file and line.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from deltarubric.cli.errors import CLIError
from deltarubric.rm.config import ConfigError, ConfigProblem, JudgeConfig, build_config
from deltarubric.rm.validation import Loc, field_problems

FieldPath = tuple[str, ...]
GIVEN = ("COMMANDLINE", "ENVIRONMENT")  # click's parameter sources that count as set by the user


@dataclass(frozen=True)
class ModelOptions:
    """How one model becomes flags. `panels`: help panel per section ('' for the model's own fields); `exclude`:
    dotted paths without a flag; `default_text`: what a default means where the model's value is not what the
    command does (dotted path -> text); `from_file`: with a `--config` flag, builds the model from that file and the
    flags given (`from_file(file, **given)`, raising ConfigError)."""

    model: type[BaseModel]
    panels: Mapping[str, str]
    exclude: frozenset[str] = frozenset()
    default_text: Mapping[str, str] = field(default_factory=dict)
    from_file: Callable[..., BaseModel] | None = None

    @property
    def config_file(self) -> bool:
        return self.from_file is not None


@dataclass(frozen=True)
class Flag:
    path: FieldPath
    param: str  # the Python parameter name typer sees: unique across the groups of a command
    decls: tuple[str, ...]
    annotation: Any
    default: Any

    @property
    def name(self) -> str:
        return self.decls[0].split("/")[0]


def _help(text: str) -> str:
    """Help text as typer renders it, with rich markup: a literal '[' must be escaped or '[demo]' vanishes."""
    return text.replace("[", "\\[")


def _section(f: FieldInfo) -> type[BaseModel] | None:
    a = f.annotation
    return a if isinstance(a, type) and issubclass(a, BaseModel) else None


def _value_type(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None was allowed)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), len(args) < len(typing.get_args(annotation))
    return annotation, False


def _flag(opts: ModelOptions, group: str, path: FieldPath, f: FieldInfo, panel: str) -> Flag | None:
    value_type, optional = _value_type(f.annotation)
    if typing.get_origin(value_type) is dict or value_type is dict:
        return None  # a mapping (vllm_kwargs) is set in a config file
    extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
    dotted = ".".join(path)
    long = "--" + path[-1].replace("_", "-")
    decls = tuple(extra.get("flags") or [long])
    if value_type is bool:
        decls = (f"{decls[0]}/--no-{decls[0][2:]}", *decls[1:])
    required = f.is_required()
    default = None if required else f.get_default(call_default_factory=True)
    help_text = f.description or ""
    shown: str | bool = opts.default_text.get(dotted) or extra.get("default_text") or True
    if required:
        help_text += " Required, here or in the --config file." if opts.config_file else ""
        shown = False
    elif default is None or default == []:
        shown = shown if isinstance(shown, str) else "none"
    option = typer.Option(
        *decls,
        help=_help(help_text),
        rich_help_panel=panel,
        show_default=shown,
        envvar=extra.get("envvar"),
    )
    annotation = Optional[value_type] if optional or (required and opts.config_file) else value_type
    typer_default = None if required and opts.config_file else ... if required else default
    return Flag(path, f"{group}__{'__'.join(path)}", decls, Annotated[annotation, option], typer_default)


def model_flags(opts: ModelOptions, group: str) -> list[Flag]:
    """One flag per field of `opts.model`, its sections flattened into their own panels."""
    out: list[Flag] = []

    def walk(model: type[BaseModel], path: FieldPath, panel: str) -> None:
        for name, f in model.model_fields.items():
            p = (*path, name)
            if ".".join(p) in opts.exclude:
                continue
            section = _section(f)
            if section is not None:
                walk(section, p, opts.panels.get(name, panel))
            elif (flag := _flag(opts, group, p, f, panel)) is not None:
                out.append(flag)

    walk(opts.model, (), opts.panels[""])
    return out


def _set(tree: dict[str, Any], path: FieldPath, value: Any) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def _explain(problems: list[ConfigProblem], flags: dict[Loc, Flag], config_file: bool) -> str:
    """The problems in one line, each naming the flag it came from (or the file and line)."""
    parts = []
    for p in problems:
        flag = flags.get(p.loc)
        if p.file is not None or flag is None:
            parts.append(str(p))
        elif p.message == "missing":
            parts.append(
                f"give {flag.name}" + (f" (or {'.'.join(p.loc)}: in the --config file)" if config_file else "")
            )
        else:
            parts.append(f"{flag.name}: {p.message}")
    return "; ".join(parts)


def _validate(opts: ModelOptions, given: dict[str, Any], file: Path | None, flags: list[Flag]) -> BaseModel:
    by_loc: dict[Loc, Flag] = {f.path: f for f in flags}
    try:
        if opts.from_file is not None:
            return opts.from_file(file, **given)
        return opts.model.model_validate(given)
    except ConfigError as e:
        raise CLIError(_explain(e.problems, by_loc, opts.config_file)) from None
    except ValidationError as e:
        problems = [ConfigProblem(loc, message) for _, loc, message in field_problems(e, opts.model)]
        raise CLIError(_explain(problems, by_loc, opts.config_file)) from None


def model_options(**groups: ModelOptions) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the flags of each model in `groups` (parameter name -> how): the command takes each group as one
    validated model under that parameter name."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(command)
        hints = typing.get_type_hints(command, include_extras=True)  # postponed annotations are strings until resolved
        own = [p.replace(annotation=hints.get(n, p.annotation)) for n, p in sig.parameters.items() if n not in groups]
        flags = {group: model_flags(opts, group) for group, opts in groups.items()}
        kw = inspect.Parameter.KEYWORD_ONLY
        added = [inspect.Parameter("ctx", kw, annotation=typer.Context)]
        for group, opts in groups.items():
            if opts.config_file:
                config = typer.Option(
                    "--config",
                    help=f"YAML or JSON file of {opts.model.__name__} fields (docs/cli.md); flags override it.",
                    rich_help_panel=opts.panels[""],
                    show_default="none",
                    exists=True,
                    dir_okay=False,
                )
                added.append(
                    inspect.Parameter(
                        f"{group}__config", kw, default=None, annotation=Annotated[Optional[Path], config]
                    )
                )
            added += [inspect.Parameter(f.param, kw, default=f.default, annotation=f.annotation) for f in flags[group]]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            ctx: typer.Context = kwargs.pop("ctx")
            models = {}
            for group, opts in groups.items():
                given: dict[str, Any] = {}
                for f in flags[group]:
                    value = kwargs.pop(f.param)
                    source = ctx.get_parameter_source(f.param)
                    if source is not None and source.name in GIVEN:
                        _set(given, f.path, value)
                file = kwargs.pop(f"{group}__config") if opts.config_file else None
                models[group] = _validate(opts, given, file, flags[group])
            return command(**models, **kwargs)

        wrapper.__signature__ = sig.replace(parameters=own + added)  # type: ignore[attr-defined]
        return wrapper

    return decorate


JUDGE = ModelOptions(
    JudgeConfig,
    panels={"": "Judge", "sampling": "Sampling", "compute": "Compute (how verdicts are computed)"},
    from_file=build_config,
)
judge_options = model_options(config=JUDGE)
