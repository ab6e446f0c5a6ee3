"""Per-kernel times of one model two ways: inside the whole model, and each kernel built alone
with warm and with flushed caches. Used to find why a model is slower than the sum of its kernels.

    python -m slimgraph.tests.bench.kernel_timing mobilenet_v2 [--runs 20] [--top 25] [--pipeline P]

In-model: the VM's instrument hook times every call of `main` (adds a few microseconds per call).
Alone: time_evaluator on random inputs; "cold" flushes the caches of every argument but the first
(`f_preproc="cache_flush_cpu_non_first_arg"`) before each run, as a new output buffer would be.
"""
import argparse
import collections
import time

import numpy as np


def in_model_ms(compiled, runs: int) -> tuple[float, dict[str, float]]:
    """(whole-model ms, ms per inference spent in each called function)."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(compiled._executable, tvm.cpu())
    args = [tvm.runtime.tensor(a, tvm.cpu()) for a in compiled.random_inputs()]
    for _ in range(3):
        vm["main"](*args)
    start = time.perf_counter()
    for _ in range(runs):
        vm["main"](*args)
    whole = (time.perf_counter() - start) / runs * 1e3
    totals, started = collections.defaultdict(float), [0.0]

    def instrument(func, symbol, before, result, *rest):
        now = time.perf_counter()
        if before:
            started[0] = now
        else:
            totals[symbol] += now - started[0]
        return 0

    vm.set_instrument(instrument)
    for _ in range(runs):
        vm["main"](*args)
    return whole, {name: seconds / runs * 1e3 for name, seconds in totals.items()}


def alone_ms(func, target) -> tuple[float, float]:
    """(warm, cold) ms per call of one kernel built alone."""
    import tvm

    from slimgraph.codegen.build import build_context
    from slimgraph.codegen.kernel_profile import _random_args

    func = func.with_attr("global_symbol", "main")
    with build_context():
        module = tvm.compile(tvm.IRModule({"main": func}), target).mod
    args = _random_args(func, tvm.cpu())
    warm = module.time_evaluator("main", tvm.cpu(), number=10, repeat=5)(*args).results
    cold = module.time_evaluator("main", tvm.cpu(), number=1, repeat=30,
                                 f_preproc="cache_flush_cpu_non_first_arg")(*args).results
    return float(np.median(warm)) * 1e3, float(np.median(cold)) * 1e3


def main(argv=None) -> None:
    import tvm

    import slimgraph

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--pipeline", default="default")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    compiled = slimgraph.compile(args.model, pipeline=args.pipeline, check=False)
    target = tvm.target.Target(compiled.metadata["target"]["config"])
    whole, inside = in_model_ms(compiled, args.runs)
    print(f"{args.model}: whole model {whole:.3f} ms, sum of timed calls {sum(inside.values()):.3f} ms")
    print(f"{'function':28s} {'in model':>9s} {'alone warm':>11s} {'alone cold':>11s}  (ms per inference / per call)")
    kernels = {gv.name_hint for gv in compiled.lowered.get_global_vars()}
    for name, ms in sorted(inside.items(), key=lambda item: -item[1])[:args.top]:
        warm, cold = alone_ms(compiled.lowered[name], target) if name in kernels else (float("nan"),) * 2
        print(f"{name:28s} {ms:9.3f} {warm:11.3f} {cold:11.3f}")


if __name__ == "__main__":
    main()
