"""Parser for the IR text form printed by `ir.text.print_graph`, and save/load with parameters."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
import torch.fx as fx

from .dtypes import SHORT_TO_DTYPE
from .errors import ParseError
from .graph import Graph
from .text import REGION, SPECIAL_ENUMS, print_graph, resolve_op, set_provenance

TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<node>%[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?(?:\d+\.\d*(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+|\d+|inf|nan)(?![A-Za-z0-9_]))
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[()\[\],=:{}])
""", re.VERBOSE)


class _Tokens:
    def __init__(self, text: str, where: str):
        self.items: list[tuple[str, str]] = []
        self.where = where
        pos = 0
        while pos < len(text):
            match = TOKEN.match(text, pos)
            if not match:
                raise ParseError(f"{where}: unexpected character {text[pos]!r} at column {pos + 1}")
            pos = match.end()
            if match.lastgroup != "ws":
                self.items.append((match.lastgroup, match.group()))
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.items[self.pos] if self.pos < len(self.items) else ("end", "")

    def take(self, expected: str | None = None) -> tuple[str, str]:
        kind, text = self.peek()
        if expected is not None and text != expected:
            raise ParseError(f"{self.where}: expected '{expected}' but found '{text or 'end of line'}'")
        self.pos += 1
        return kind, text

    def accept(self, text: str) -> bool:
        if self.peek()[1] == text:
            self.pos += 1
            return True
        return False


class _LineParser:
    def __init__(self, nodes: dict[str, fx.Node], where: str):
        self.nodes = nodes
        self.where = where

    def value(self, tokens: _Tokens):
        kind, text = tokens.take()
        if kind == "node":
            if text[1:] not in self.nodes:
                raise ParseError(f"{self.where}: use of undefined value {text}")
            return self.nodes[text[1:]]
        if kind == "string":
            return json.loads(text)
        if kind == "number":
            if text in ("inf", "-inf", "nan"):
                return float(text)
            return float(text) if any(c in text for c in ".eE") else int(text)
        if text == "[":
            return self._sequence(tokens, "]")
        if text == "(":
            return tuple(self._sequence(tokens, ")"))
        if kind == "name":
            return self._named(tokens, text)
        raise ParseError(f"{self.where}: unexpected '{text or 'end of line'}'")

    def _sequence(self, tokens: _Tokens, close: str) -> list:
        items = []
        while not tokens.accept(close):
            items.append(self.value(tokens))
            if not tokens.accept(","):
                tokens.take(close)
                break
        return items

    def _named(self, tokens: _Tokens, text: str):
        constants = {"None": None, "True": True, "False": False}
        if text in constants:
            return constants[text]
        if text == "device":
            tokens.take("(")
            device = torch.device(json.loads(tokens.take()[1]))
            tokens.take(")")
            return device
        if text in SPECIAL_ENUMS:
            return SPECIAL_ENUMS[text]
        if text.startswith("torch.") and isinstance(getattr(torch, text[6:], None), torch.dtype):
            return getattr(torch, text[6:])
        raise ParseError(f"{self.where}: unknown name '{text}'")

    def type_(self, tokens: _Tokens):
        if tokens.accept("("):
            items = []
            while not tokens.accept(")"):
                items.append(self.type_(tokens))
                tokens.accept(",")
            return tuple(items)
        _, dtype_name = tokens.take()
        if dtype_name not in SHORT_TO_DTYPE:
            raise ParseError(f"{self.where}: unknown dtype '{dtype_name}'")
        tokens.take("[")
        dims = [int(d) for d in self._sequence(tokens, "]")]
        return torch.empty(dims, dtype=SHORT_TO_DTYPE[dtype_name], device="meta")


def parse(text: str, params: dict[str, torch.Tensor] | None = None, *, source: str = "<text>") -> Graph:
    """Parse IR text; `params` supplies the tensors that `param("name")` lines refer to."""
    params = params or {}
    fx_graph = fx.Graph()
    nodes: dict[str, fx.Node] = {}
    name = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or line == "}":
            continue
        where = f"{source}:{number}"
        tokens = _Tokens(line, where)
        parser = _LineParser(nodes, where)
        if name is None:
            tokens.take("graph")
            name = json.loads(tokens.take()[1])
            tokens.take("{")
            continue
        if tokens.accept("return"):
            fx_graph.output(parser.value(tokens))
            continue
        _parse_node(tokens, parser, fx_graph, nodes, params, where)
    if name is None:
        raise ParseError(f"{source}: no 'graph \"name\" {{' header found")
    return Graph(fx_graph, {k: params[k] for k in _param_names(fx_graph)}, name)


def _parse_node(tokens, parser, fx_graph, nodes, params, where) -> None:
    kind, node_token = tokens.take()
    if kind != "node":
        raise ParseError(f"{where}: expected a %name at the start of the line, found '{node_token}'")
    node_name = node_token[1:]
    if node_name in nodes:
        raise ParseError(f"{where}: value %{node_name} is defined twice")
    tokens.take("=")
    _, op_text = tokens.take()
    tokens.take("(")
    if op_text == "input":
        target = node_name if tokens.accept(")") else json.loads(tokens.take()[1])
        if target != node_name:
            tokens.take(")")
        node = fx_graph.create_node("placeholder", target, name=node_name)
    elif op_text == "param":
        target = json.loads(tokens.take()[1])
        tokens.take(")")
        if target not in params:
            raise ParseError(f"{where}: parameter '{target}' of %{node_name} is not in the parameter file")
        node = fx_graph.create_node("get_attr", target, name=node_name)
    else:
        try:
            op = resolve_op(op_text)
        except ValueError as exc:
            raise ParseError(f"{where}: {exc}") from exc
        args, kwargs = [], {}
        while not tokens.accept(")"):
            if tokens.peek()[0] == "name" and tokens.items[tokens.pos + 1][1] == "=":
                key = tokens.take()[1]
                tokens.take("=")
                kwargs[key] = parser.value(tokens)
            else:
                args.append(parser.value(tokens))
            if not tokens.accept(","):
                tokens.take(")")
                break
        node = fx_graph.create_node("call_function", op, tuple(args), kwargs, name=node_name)
    if node.name != node_name:
        raise ParseError(f"{where}: '%{node_name}' is not a usable value name (fx renamed it '%{node.name}')")
    tokens.take(":")
    node.meta["val"] = parser.type_(tokens)
    if tokens.accept("region"):
        tokens.take("(")
        node.meta[REGION] = int(tokens.take()[1])
        tokens.take(")")
    if tokens.accept("loc"):
        tokens.take("(")
        parts = []
        while not tokens.accept(")"):
            parts.append(json.loads(tokens.take()[1]))
            tokens.accept(",")
        set_provenance(node, parts[0] if parts else "", tuple(parts[1:]))
    if tokens.peek()[0] != "end":
        raise ParseError(f"{where}: unexpected '{tokens.peek()[1]}' after the node's type")
    nodes[node_name] = node


def _param_names(fx_graph: fx.Graph) -> list[str]:
    return [n.target for n in fx_graph.nodes if n.op == "get_attr"]


def params_path(ir_path: Path) -> Path:
    return Path(ir_path).with_suffix(".safetensors")


def save(graph: Graph, path: str | os.PathLike) -> Path:
    """Write `path` (the IR text) and `path` with suffix `.safetensors` (the parameters)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() for k, v in graph.params.items()}
    save_file(tensors, str(params_path(path)))
    path.write_text(print_graph(graph))
    return path


def load(path: str | os.PathLike) -> Graph:
    """Read an IR text file and its parameters (no pickle involved): the files a leading
    `# params: a.safetensors b.safetensors` line names (later files win), else `path.safetensors`."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ParseError(f"{path}: no such IR file")
    text = path.read_text()
    first = text.split("\n", 1)[0]
    files = [path.parent / f for f in first[len("# params:"):].split()] if first.startswith("# params:") \
        else [params_path(path)]
    params: dict[str, torch.Tensor] = {}
    for weights in files:
        if weights.is_file():
            params.update(load_file(str(weights)))
        elif first.startswith("# params:"):
            raise ParseError(f"{path}: parameter file '{weights.name}' named in its header is missing")
    return parse(text, params, source=str(path))
