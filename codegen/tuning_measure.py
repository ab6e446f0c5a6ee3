"""Measuring schedules for tuning: the rule schedules that seed the search, and a re-check after it.

A measurement on a shared machine can be wrong by a lot: a burst of other work while the rule
schedule is timed (once, before the search) makes every candidate look better than it, and the
database then serves a schedule slower than the rules forever. So after the search the rule
schedule and the database's best are built and timed again, back to back, ROUNDS times (the
fastest time of each kept: interference only ever adds time). If the rules win, their schedule
is committed again with a time on the database's scale,

    recorded_rules = recorded_best x rules_now / best_now      (< recorded_best)

so it becomes the best record, and the report says so (`rechecked`).
"""
from __future__ import annotations

ROUNDS = 2


def workload_of(func):
    """A kernel as MetaSchedule's workload: an IRModule of a deep copy of it alone, named main.

    A copy, because TVM 0.27's schedules can write through to the function they started from:
    replaying a trace that begins with TransformBlockLayout on Schedule(IRModule({"main":
    func.with_attr(...)})) rewrote `func` itself into the transformed loops. A record committed
    afterwards for `func` then stored that transformed function as its workload, the trace no
    longer applied to it, and the whole database became unreadable ("parallel_for_dynamic error")
    whenever the re-check after a search kept the rules (a timing-dependent, flaky failure)."""
    import tvm

    copy = tvm.ir.load_json(tvm.ir.save_json(func))
    return tvm.IRModule({"main": copy.with_attr("global_symbol", "main")})


def _commit(database, func, trace, seconds: float, target) -> None:
    """A tuning record of `trace` on `func`'s workload, timed at `seconds`."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    workload_mod = workload_of(func)
    database.commit_tuning_record(ms.database.TuningRecord(
        trace, database.commit_workload(workload_mod), [tvm.tirx.FloatImm("float64", seconds)], target,
        ms.arg_info.ArgInfo.from_prim_func(workload_mod["main"])))


def _measure(builder, runner, workloads: dict, target) -> dict[str, float]:
    """Build and time scheduled kernels the way MetaSchedule measures its candidates (on this machine
    or on the RPC devices); kernel name -> mean seconds, for those that built and ran."""
    from tvm.s_tir import meta_schedule as ms

    names = list(workloads)
    built = builder.build([ms.builder.BuilderInput(workloads[n], target) for n in names])
    ready = [(n, b) for n, b in zip(names, built) if b.error_msg is None]
    device_type = "cuda" if target.kind.name == "cuda" else "cpu"
    futures = runner.run([ms.runner.RunnerInput(b.artifact_path, device_type,
                                                ms.arg_info.ArgInfo.from_prim_func(workloads[n]["main"]))
                          for n, b in ready])
    seconds = {}
    for (name, _), future in zip(ready, futures):
        result = future.result()
        if result.error_msg is None and result.run_secs:
            seconds[name] = float(sum(float(s) for s in result.run_secs) / len(result.run_secs))
    return seconds


def rule_schedule(func, target):
    """The schedule the target's rules give `func` (ours on CPUs, dlight's on GPUs, as the compile
    would), or None."""
    from slimgraph.lowering.cpu_schedules import CPU_RULES
    from slimgraph.lowering.gpu_schedules import first_gpu_schedule

    if "gpu" in target.keys:
        found = first_gpu_schedule(func, target)
        return found[1] if found else None
    return next((s for rule in CPU_RULES if (s := rule.apply(func, target, False))), None)


def commit_rule_schedules(database, funcs: dict, target, builder, runner, report) -> dict:
    """Commit each kernel's rule schedule, measured like a candidate, as a tuning record (the search's
    starting point, so the database's best is never worse than the rules); the rule schedules."""
    schedules = {}
    for name, func in funcs.items():
        schedule = rule_schedule(workload_of(func)["main"], target)
        if schedule is not None and schedule.trace is not None:
            schedules[name] = schedule
    measured = _measure(builder, runner, {n: s.mod for n, s in schedules.items()}, target)
    for name, seconds in measured.items():
        report.rule_seconds[name] = seconds
        _commit(database, funcs[name], schedules[name].trace, seconds, target)
    return schedules


def recheck_rules_against_best(database, funcs: dict, rule_schedules: dict, target, builder, runner, report) -> None:
    """Time each kernel's rule schedule and the database's best again, back to back (module docstring);
    where the rules win, commit them as the best record."""
    from tvm import s_tir

    from .tuning import _best_record, mean_seconds

    pairs = {}
    for name, rules in rule_schedules.items():
        best = _best_record(database, workload_of(funcs[name]), target)
        if best is None or str(best.trace) == str(rules.trace):
            continue
        schedule = s_tir.Schedule(workload_of(funcs[name]))
        best.trace.apply_to_schedule(schedule, remove_postproc=False)
        pairs[name] = (best, schedule.mod)
    if not pairs:
        return
    timed: dict[str, list[float]] = {}
    for _ in range(ROUNDS):
        workloads = {}
        for name, (_, best_mod) in pairs.items():
            workloads[f"{name}/rules"], workloads[f"{name}/best"] = rule_schedules[name].mod, best_mod
        for key, seconds in _measure(builder, runner, workloads, target).items():
            timed.setdefault(key, []).append(seconds)
    for name, (best, _) in pairs.items():
        rules_now, best_now = min(timed.get(f"{name}/rules", [0.0])), min(timed.get(f"{name}/best", [0.0]))
        if not rules_now or not best_now:
            continue
        report.rechecked[name] = (rules_now, best_now)
        if rules_now < best_now:
            _commit(database, funcs[name], rule_schedules[name].trace, mean_seconds(best) * rules_now / best_now,
                    target)
