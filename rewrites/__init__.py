"""Rewrite passes over ir.Graph: the pass API, pipelines, the pass manager and its instruments,
pattern rules, and the built-in passes (fold-bn, fold-constants, fuse, quantize)."""
from . import fold_bn, fold_constants, fuse, prune, quant_realize, quantize  # noqa: F401  (register the built-in passes)
from .base import PASS_REGISTRY, Pass, PassError, PassResult, register_pass
from .instruments import InstrumentOptions
from .manager import Instrument, PassManager, PipelineResult
from .patterns import Any, Const, Lit, Match, Op
from .plugins import load_plugin
from .rule_pass import register_rule_pass
from .pipeline import NAMED_PIPELINES, Pipeline, format_pass, parse_pipeline
from .rules import Rule, RuleSet, apply_rules, trace_rules

__all__ = ["Pass", "PassResult", "PassError", "register_pass", "PASS_REGISTRY", "Pipeline", "parse_pipeline",
           "format_pass", "NAMED_PIPELINES", "PassManager", "PipelineResult", "Instrument", "InstrumentOptions",
           "load_plugin", "register_rule_pass", "Op", "Any", "Const", "Lit", "Match", "Rule", "RuleSet", "apply_rules", "trace_rules"]
