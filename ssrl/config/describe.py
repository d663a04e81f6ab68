"""What each config key means, for ``ssrl <command> --help``, ``ssrl config`` and ``ssrl config --describe KEY``.

A field's description is its comment in the dataclass source (on the field's line, else the comment lines right
above it), read once per class with :mod:`tokenize`; a subclass inherits the description of a field it only
re-defaults. :func:`keys` lists a config's keys (dotted, grouped like ``ssrl config``) with type, value,
description and allowed values; :func:`help_text`, :func:`commented_yaml` and :func:`describe` render them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from ssrl.config.registry import GROUPS
from ssrl.config.schema import CHOICES
from ssrl.errors import ConfigError


@dataclass(frozen=True)
class Key:
    """One config key: dotted name, type, value (the default, or what the given overrides set), description and
    allowed values (empty: any value of the type)."""

    key: str
    type: str
    value: Any
    doc: str
    choices: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------------ field docs
@functools.cache
def _own_docs(cls: type) -> dict[str, str]:
    """The comments of the fields ``cls`` itself defines."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined in a REPL or an exec'd string: no docs
        return {}
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    docs = {}
    lines = source.splitlines()
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    for number, line in enumerate(lines, 1):
        name = line.strip().split(":", 1)[0]
        if name not in names or line[: len(line) - len(line.lstrip())] != "    " or ":" not in line:
            continue
        if number in comments:  # trailing comment
            docs[name] = comments[number]
            continue
        above = []
        n = number - 1
        while n in comments and n not in code_lines:
            above.insert(0, comments[n])
            n -= 1
        if above:
            docs[name] = " ".join(above)
    return docs


def field_docs(cls: type) -> dict[str, str]:
    """``{field: description}`` of dataclass ``cls``, base classes' descriptions included."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs |= _own_docs(klass)
    return docs


# ------------------------------------------------------------------------------------------------ keys
def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " | ".join(_type_name(k) for k in typing.get_args(kind))
    return getattr(kind, "__name__", str(kind))


def format_value(value: Any) -> str:
    """A value as it is written on the command line (``true``, ``100000``, ``""``)."""
    if isinstance(value, str):
        return value if value else '""'
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def keys(cfg: Any, choices: dict[str, tuple[str, ...]] | None = None) -> list[tuple[str, str, list[Key]]]:
    """The keys of config dataclass ``cfg`` as sections ``(group, title, keys)``: first the top-level keys
    (group ``""``), then one section per nested group (``agent``, ``encoder``, ...), as ``ssrl config`` prints
    them. ``choices`` adds allowed values by dotted key (default: :data:`ssrl.config.schema.CHOICES`)."""
    choices = CHOICES if choices is None else choices
    sections: list[tuple[str, str, list[Key]]] = [("", _title(cfg), [])]

    def walk(obj: Any, prefix: str, out: list[Key]) -> None:
        docs, hints = field_docs(type(obj)), typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            key, value = prefix + f.name, getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                options = tuple(GROUPS[f.name]) if not prefix and f.name in GROUPS else ()
                out.append(Key(key, "group", getattr(value, "name", ""), docs.get(f.name, ""), options))
                group: list[Key] = []
                sections.append((key, _title(value, key, docs.get(f.name, "")), group))
                walk(value, key + ".", group)
                continue
            allowed = choices.get(key, ("true", "false") if isinstance(value, bool) else ())
            if prefix and f.name == "name" and prefix[:-1] in GROUPS:
                allowed = tuple(GROUPS[prefix[:-1]])
            out.append(Key(key, _type_name(hints.get(f.name, type(value))), value, docs.get(f.name, ""), allowed))

    walk(cfg, "", sections[0][2])
    return sections


def _title(obj: Any, key: str = "", doc: str = "") -> str:
    first = (type(obj).__doc__ or "").strip().split("\n\n")[0].replace("\n", " ").replace("``", "`")
    name = getattr(obj, "name", "")
    head = f"{key}={name}" if key in GROUPS and name else key
    return f"{head}: {first}" if head else first


def flat(cfg: Any, choices: dict[str, tuple[str, ...]] | None = None) -> dict[str, Key]:
    """``{dotted key: Key}`` over every section of :func:`keys` (groups included)."""
    return {k.key: k for _, _, section in keys(cfg, choices) for k in section}


# ------------------------------------------------------------------------------------------------ rendering
def help_text(cfg: Any, choices: dict[str, tuple[str, ...]] | None = None, width: int = 120) -> str:
    """Every key with its value and description, one line each, grouped like ``ssrl config``."""
    sections = keys(cfg, choices)
    rows = [k for _, _, section in sections for k in section if k.type != "group"]
    kw = max(len(k.key) for k in rows) + 2
    vw = min(max(len(format_value(k.value)) for k in rows), 24) + 2
    out = []
    for group, title, section in sections:
        out.append("")
        out.append(textwrap.shorten(title, width) if not group else textwrap.shorten(title, width))
        for k in section:
            if k.type == "group":
                continue
            note = k.doc + (f" [{'|'.join(k.choices)}]" if k.choices and k.type != "bool" else "")
            value = format_value(k.value)
            line = f"  {k.key:<{kw}}{value:<{vw}}" if len(value) < vw else f"  {k.key:<{kw}}{value}  "
            out.append(line + note)
    return "\n".join(out).lstrip("\n") + "\n"


def commented_yaml(cfg: Any, choices: dict[str, tuple[str, ...]] | None = None) -> str:
    """``cfg`` as YAML (what ``config.yaml`` holds), each key followed by its description as a comment."""
    docs = flat(cfg, choices)
    lines: list[str] = []

    def walk(data: dict[str, Any], prefix: str, indent: str) -> None:
        body = []
        for key, value in data.items():
            dotted = prefix + key
            doc = docs[dotted].doc if dotted in docs else ""
            if isinstance(value, dict):
                body.append((f"{indent}{key}:", doc, value, dotted))
            else:
                text = yaml.safe_dump({key: value}, sort_keys=False, width=1000).rstrip("\n")
                body.append((indent + text, doc, None, dotted))
        pad = max((len(t) for t, _, v, _ in body if v is None), default=0) + 2
        for text, doc, value, dotted in body:
            lines.append(f"{text:<{pad}}# {doc}" if doc and value is None else
                         (f"{text}  # {doc}" if doc else text))
            if value is not None:
                walk(value, dotted + ".", indent + "  ")

    walk(dataclasses.asdict(cfg), "", "")
    return "\n".join(lines) + "\n"


def describe(cfg: Any, key: str, choices: dict[str, tuple[str, ...]] | None = None) -> str:
    """``key``'s type, value, description and allowed values (a group: its selection names and its keys)."""
    table = flat(cfg, choices)
    if key not in table:
        import difflib

        close = difflib.get_close_matches(key, list(table), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown key '{key}'.{hint}")
    k = table[key]
    lines = [f"{k.key}", f"  type:        {k.type}", f"  default:     {format_value(k.value)}",
             f"  description: {k.doc or '-'}"]
    if k.choices:
        lines.append(f"  allowed:     {', '.join(k.choices)}")
    if k.type == "group":
        lines.append(f"  keys:        {', '.join(x.key for x in table.values() if x.key.startswith(key + '.'))}")
        lines.append(f"  select with: {key}=NAME, then tune with {key}.KEY=VALUE")
    return "\n".join(lines) + "\n"
