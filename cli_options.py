"""Options shared by several commands: the rewrite-pass flags and the instruments they turn on."""
from __future__ import annotations

import argparse


def instrument_options(args):
    from slimgraph.rewrites import InstrumentOptions

    return InstrumentOptions(print_ir_after_all=args.print_ir_after_all,
                             print_ir_after_change=args.print_ir_after_change,
                             print_ir_before=list(args.print_ir_before), verify_each=args.verify_each,
                             check_numerics=args.check_numerics, timing=args.timing,
                             trace_rule=list(args.trace_rule))


def add_pass_options(parser: argparse.ArgumentParser, default_pipeline: str | None) -> None:
    group = parser.add_argument_group("rewrite passes (also: SLIMGRAPH_PASS_DEBUG=print-ir-after-change,...)")
    shown = default_pipeline or "none; 'default' with --source"
    group.add_argument("--pipeline", default=default_pipeline,
                       help=f"passes to run, e.g. 'fold-bn,fuse{{parallel=false}}' (default: {shown})")
    group.add_argument("--plugin", action="append", default=[], help="a .py file that registers passes (repeatable)")
    group.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass")
    group.add_argument("--print-ir-after-change", action="store_true",
                       help="print a diff of the IR after each pass that changed it")
    group.add_argument("--print-ir-before", action="append", default=[], metavar="PASS",
                       help="print the IR before PASS (repeatable)")
    group.add_argument("--verify-each", action="store_true", help="run the verifier after every pass")
    group.add_argument("--check-numerics", action="store_true",
                       help="compare outputs after every pass with those before it")
    group.add_argument("--timing", action="store_true", help="print a table of time and statistics per pass")
    group.add_argument("--trace-rule", action="append", default=[], metavar="RULE",
                       help="print why RULE did or did not fire at each candidate ('*' for all)")
