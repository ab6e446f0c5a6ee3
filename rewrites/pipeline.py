"""Pipeline strings: `fold-bn,fold-constants,fuse{regions=true}` parse into passes and print back.

    pipeline := "" | item ("," item)*
    item     := NAME | NAME "{" option ("," option)* "}"
    option   := KEY "=" VALUE          VALUE := word | "[" word ("," word)* "]"

A NAME may also be a named pipeline (`default`), which expands in place. Unknown names and
options are errors that list what exists and suggest the closest match.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass

from .base import PASS_REGISTRY, Pass, PassError

NAMED_PIPELINES: dict[str, str] = {
    "default": "fold-bn,fold-constants,fuse",
    "int8": "fold-bn,fold-constants,quantize,realize",
    "none": "",
}


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


@dataclass
class Pipeline:
    passes: list[Pass]

    def __str__(self) -> str:
        return ",".join(format_pass(p) for p in self.passes)

    def __len__(self) -> int:
        return len(self.passes)


def format_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def format_pass(pass_: Pass) -> str:
    options = pass_.options()
    if not options:
        return pass_.name
    return pass_.name + "{" + ",".join(f"{k}={format_value(v)}" for k, v in options.items()) + "}"


def _split_top_level(text: str, where: str, offset: int = 0) -> list[tuple[int, str]]:
    """Split on commas outside braces/brackets; returns (column, piece) pairs."""
    pieces, depth, start, opener = [], 0, 0, []
    for index, char in enumerate(text):
        if char in "{[":
            depth += 1
            opener.append(index)
        elif char in "}]":
            depth -= 1
            if depth < 0:
                raise PassError(f"{where}: unbalanced '{char}' at column {offset + index + 1}")
            opener.pop()
        elif char == "," and depth == 0:
            pieces.append((offset + start, text[start:index]))
            start = index + 1
    if depth:
        raise PassError(f"{where}: unbalanced '{text[opener[-1]]}' at column {offset + opener[-1] + 1}")
    pieces.append((offset + start, text[start:]))
    return pieces


def _convert(value: str, kind, pass_name: str, key: str):
    origin = typing.get_origin(kind)
    if origin in (list, tuple):
        (element,) = typing.get_args(kind)[:1] or (str,)
        inner = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        items = [v.strip() for v in inner.split(",") if v.strip()] if inner else []
        return [_convert(v, element, pass_name, key) for v in items]
    try:
        if kind is bool:
            lowered = value.lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError
            return lowered in ("true", "1")
        if kind is int:
            return int(value)
        if kind is float:
            return float(value)
    except ValueError:
        raise PassError(f"option '{key}' of pass '{pass_name}' expects {kind.__name__}, got '{value}'") from None
    return value


def make_pass(name: str, options: dict[str, str], where: str = "pipeline") -> Pass:
    """Instantiate a registered pass from string options (as written in a pipeline)."""
    if name not in PASS_REGISTRY:
        known = ", ".join(sorted(PASS_REGISTRY))
        raise PassError(f"{where}: unknown pass '{name}'{_suggest(name, PASS_REGISTRY)} (passes: {known})")
    cls = PASS_REGISTRY[name]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    values = {}
    for key, raw in options.items():
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise PassError(f"{where}: pass '{name}' has no option '{key}'{_suggest(key, fields)} (options: {known})")
        values[key] = _convert(raw.strip(), hints[key], name, key)
    return cls(**values)


def parse_pipeline(text: str) -> Pipeline:
    where = f"pipeline '{text}'"
    text = text.strip()
    if not text:
        return Pipeline([])
    passes: list[Pass] = []
    for column, piece in _split_top_level(text, where):
        piece = piece.strip()
        if not piece:
            raise PassError(f"{where}: empty pass name at column {column + 1}")
        name, options = piece, {}
        if "{" in piece:
            name, _, body = piece.partition("{")
            if not body.endswith("}"):
                raise PassError(f"{where}: text after '}}' in '{piece}'")
            for option_column, option in _split_top_level(body[:-1], where, column + len(name) + 1):
                key, equals, value = option.partition("=")
                if not equals or not key.strip():
                    raise PassError(f"{where}: option '{option.strip()}' at column {option_column + 1} is not KEY=VALUE")
                options[key.strip()] = value
        name = name.strip()
        if name in NAMED_PIPELINES and not options:
            passes.extend(parse_pipeline(NAMED_PIPELINES[name]).passes)
        else:
            passes.append(make_pass(name, options, where))
    return Pipeline(passes)
