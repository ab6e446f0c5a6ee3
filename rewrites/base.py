"""Passes: a small object with a kebab-case `name`, options as dataclass fields, and
`run(graph) -> PassResult(graph, modified, stats, notes)`.

A pass may change the graph it is given (the pass manager hands it a copy) and keeps no state
between runs. `modified` must be honest: the manager compares the IR text before and after and
refuses a pass that changed the graph but said it did not (or the reverse).

    @register_pass
    @dataclass
    class DropIdentity(Pass):
        name: ClassVar[str] = "drop-identity"
        summary: ClassVar[str] = "remove x * 1 and x + 0"
        def run(self, graph): ...
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import ClassVar

from slimgraph.ir import Graph
from slimgraph.ir.errors import SlimgraphError

KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


class PassError(SlimgraphError):
    """A pass failed, broke the graph, or a pipeline / plugin is invalid."""


@dataclass
class PassResult:
    graph: Graph
    modified: bool
    stats: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # why rules declined, what was skipped


class Pass:
    """Base class of every pass; subclasses are dataclasses whose fields are the options."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    lossy: ClassVar[bool] = False  # changes outputs on purpose (quantize): numerics are reported, not enforced
    idempotent: ClassVar[bool] = True  # a second run changes nothing (prune by a ratio removes more again)

    def run(self, graph: Graph) -> PassResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def options(self) -> dict:
        """Options that differ from their defaults, in field order."""
        changed = {}
        for option in dataclasses.fields(self):
            default = option.default if option.default is not dataclasses.MISSING else (
                option.default_factory() if option.default_factory is not dataclasses.MISSING else None)
            value = getattr(self, option.name)
            if value != default:
                changed[option.name] = value
        return changed


PASS_REGISTRY: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    """Class decorator: make a pass available by name in pipelines, the CLI and `slimgraph passes`."""
    if not dataclasses.is_dataclass(cls):
        raise PassError(f"pass class {cls.__name__} must be a @dataclass (its fields are the options)")
    if not KEBAB.match(cls.name or ""):
        raise PassError(f"pass class {cls.__name__} needs a kebab-case `name`, got '{cls.name}'")
    existing = PASS_REGISTRY.get(cls.name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise PassError(f"pass name '{cls.name}' is taken by {existing.__module__}.{existing.__qualname__}")
    PASS_REGISTRY[cls.name] = cls
    return cls
