"""MetaSchedule tuning on top of the schedule rules, with a database on disk that later compiles reuse.

    tune:  for every kernel of the fused (unscheduled) module
             1. the rule schedule (lowering.cpu_schedules) is built and measured like any candidate (on
                this machine, or on the devices of an RPC tracker: codegen.rpc) and committed to the database,
                so the database's best is never worse than the rules and the evolutionary search
                starts from it (it seeds its population with the database's best records);
             2. MetaSchedule searches, `trials` candidates in all, split by TVM's gradient task scheduler.
    apply: every kernel whose workload (the PrimFunc, structurally hashed) has a record made on a
           machine of this kind (same CPU name and features) gets the database's best schedule, looked
           up in the user's database, then in the records shipped with slimgraph (codegen/
           tuning_records: the built-in models' tuned kernels); the rest get the rules. No search.

Traps handled here, not by the user (see docs/tuning.md): apache-tvm-ffi is pinned to 0.1.14.post1
(0.1.15 crashes TVM's serialization, and with it the database); the builder's default 30 s timeout is
shorter than a worker's first `import tvm.s_tir.tensor_intrin`, so workers import it up front and get
300 s; the xgb cost model needs xgboost (xgboost-cpu) and the runner psutil, both dependencies.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from slimgraph.ir.errors import SlimgraphError
from slimgraph.lowering.pipeline import kernel_calls

from .cache import cache_dir
from .rpc import RpcDevice, export_for_aarch64, rpc_runner
from .tuning_measure import commit_rule_schedules, recheck_rules_against_best, workload_of

BUILD_TIMEOUT_SECONDS = 300
RECORDS_SCANNED = 64  # a workload's fastest records looked at for one made on this kind of machine
SHIPPED_RECORDS = Path(__file__).parent / "tuning_records"  # best records per kernel: shipped_records.py


class TuningError(SlimgraphError):
    """The tuning database cannot be opened or written."""


def default_database_dir() -> Path:
    """$SLIMGRAPH_TUNING_DB, else $XDG_CACHE_HOME/slimgraph/tuning, else ~/.cache/slimgraph/tuning."""
    if os.environ.get("SLIMGRAPH_TUNING_DB"):
        return Path(os.environ["SLIMGRAPH_TUNING_DB"])
    return cache_dir("tuning")


@dataclass
class TuningReport:
    applied: list[str] = field(default_factory=list)  # kernels scheduled from the database
    shipped: list[str] = field(default_factory=list)  # those of them whose record came with slimgraph
    tuned: dict[str, float] = field(default_factory=dict)  # kernel -> best seconds after tuning
    rule_seconds: dict[str, float] = field(default_factory=dict)  # kernel -> rule schedule's seconds
    rechecked: dict[str, tuple[float, float]] = field(default_factory=dict)  # kernel -> (rules, best) measured again


@dataclass
class TuningOptions:
    trials: int = 0  # MetaSchedule candidates in all; 0 = only apply what the database holds
    database: Path | None = None  # None: default_database_dir(); use_database=False ignores it
    use_database: bool = True
    seed: int = 0
    rpc: RpcDevice | None = None  # measure on a device farm through TVM's RPC tracker (codegen.rpc)
    kernels: tuple[str, ...] = ()  # tune only these kernels (names as `slimgraph bench` shows them)
    progress: Callable | None = None  # progress(kernel, trials_done, best_seconds) during the search
    report: TuningReport = field(default_factory=TuningReport)  # filled by tune / apply_database

    @property
    def directory(self) -> Path:
        return Path(self.database) if self.database is not None else default_database_dir()


def open_database(directory: Path, create: bool = True):
    """The JSONDatabase in `directory` (made if missing and `create`), after registering the tensor
    intrinsics its records name (TVM cannot read traces that name unknown ones)."""
    from tvm.s_tir import meta_schedule as ms

    from slimgraph.lowering.intrinsics import register_named_in

    try:
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        records = directory / "database_tuning_record.json"
        register_named_in(records.read_text() if records.is_file() else "")
    except OSError as exc:
        raise TuningError(f"tuning database '{directory}' cannot be created: {exc.strerror}") from exc
    try:
        return ms.database.JSONDatabase(work_dir=str(directory), allow_missing=create)
    except Exception as exc:  # noqa: BLE001 - TVM raises its own error types for unreadable JSON
        first = (str(exc).strip().splitlines() or ["unreadable"])[-1]
        raise TuningError(f"tuning database '{directory}' is unreadable (delete it or pass --no-db): {first}") from exc


def kernels(mod) -> dict[str, object]:
    """The unscheduled TIR kernels of a fused module, by name."""
    from tvm import tirx

    from slimgraph.lowering.cpu_schedules import is_scheduled

    return {gv.name_hint: f for gv, f in mod.functions_items()
            if isinstance(f, tirx.PrimFunc) and not is_scheduled(f)}


def machine_kind(target) -> tuple:
    """What a record is valid for: target kind, triple, CPU name and features, GPU architecture (not
    the core count, which the schedules' tile sizes do not depend on)."""
    attrs = target.attrs
    return (target.kind.name, str(attrs.get("mtriple", "")), str(attrs.get("mcpu", "")), str(attrs.get("arch", "")),
            tuple(sorted(str(a) for a in (attrs.get("mattr") or []))))


def same_machine_kind(recorded, target) -> bool:
    return machine_kind(recorded) == machine_kind(target)


def mean_seconds(record) -> float:
    return float(sum(float(s) for s in record.run_secs) / len(record.run_secs))


def _databases(options: TuningOptions) -> list[tuple[object, bool]]:
    """(database, shipped?) to look records up in, the user's first."""
    found = []
    if options.use_database and (options.directory / "database_workload.json").is_file():
        found.append((open_database(options.directory), False))
    if options.use_database and (SHIPPED_RECORDS / "database_workload.json").is_file():
        found.append((open_database(SHIPPED_RECORDS, create=False), True))
    return found


def _best_record(database, workload, target):
    """The fastest record of `workload` made on this kind of machine, or None."""
    if not database.has_workload(workload):  # before commit_workload, which would add it
        return None
    records = database.get_top_k(database.commit_workload(workload), RECORDS_SCANNED)
    return next((r for r in records if same_machine_kind(r.target, target)), None)


def apply_database(mod, target, options: TuningOptions):
    """Give every kernel a database holds a record for (made on this kind of machine) its best schedule,
    marked scheduled; the user's database first, then the shipped records."""
    from tvm import s_tir

    databases = _databases(options)
    for name, func in kernels(mod).items() if databases else ():
        workload = workload_of(func)
        for database, shipped in databases:
            record = _best_record(database, workload, target)
            if record is None:
                continue
            schedule = s_tir.Schedule(workload)
            record.trace.apply_to_schedule(schedule, remove_postproc=False)
            mod[name] = schedule.mod["main"].with_attr("tirx.is_scheduled", True).without_attr("global_symbol")
            options.report.applied.append(name)
            if shipped:
                options.report.shipped.append(name)
            break
    return mod


def _import_tensor_intrinsics() -> None:  # builder workers: before the first build, not inside its timeout
    import tvm.s_tir.tensor_intrin  # noqa: F401


def _build_candidate(mod, target, params):  # as codegen.build builds the model, and under the target (nvcc's arch)
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build

    from .build import build_context

    with target, build_context(target.kind.name):
        return default_build(mod, target, params)


def _prepare_cuda_builder() -> None:  # CUDA builder workers also compile kernels to a fatbin with nvcc
    _import_tensor_intrinsics()
    from .cuda import enable_cuda_codegen

    enable_cuda_codegen()


def _prepare_cuda_runner() -> None:  # CUDA runner workers load TVM's CUDA runtime to run the fatbins
    from .cuda import load_cuda_runtime

    load_cuda_runtime()


def _targets_aarch64(target) -> bool:
    return str(target.attrs.get("mtriple", "")).startswith("aarch64")


def candidate_builder(target, max_workers: int | None = None):
    """MetaSchedule's builder for `target`'s candidates: aarch64 libraries linked by the cross
    compiler; CUDA kernels compiled to the target's arch by nvcc in the workers."""
    from tvm.s_tir import meta_schedule as ms

    export = export_for_aarch64 if _targets_aarch64(target) else None
    on_gpu = target.kind.name == "cuda"
    return ms.builder.LocalBuilder(timeout_sec=BUILD_TIMEOUT_SECONDS, f_export=export, max_workers=max_workers,
                                   f_build=_build_candidate,
                                   initializer=_prepare_cuda_builder if on_gpu else _import_tensor_intrinsics)


def _builder_and_runner(target, options: TuningOptions):
    from tvm.s_tir import meta_schedule as ms

    on_gpu = target.kind.name == "cuda"
    builder = candidate_builder(target)
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=20)
    if options.rpc is not None:
        return builder, rpc_runner(options.rpc, evaluator)
    if _targets_aarch64(target):
        raise TuningError("tuning for an aarch64 target measures on the devices: give --rpc HOST:PORT "
                          "--device-key KEY (docs/tuning.md, 'Tuning on a device farm')")
    if on_gpu:
        from .cuda import cubin_runs_on, gpu_arch

        present, arch = gpu_arch(), str(target.attrs.get("arch", ""))
        if present is None:
            raise TuningError("tuning for cuda measures on this machine's GPU and it has none (no NVIDIA driver or "
                              "device): tune on a GPU host, or give --rpc HOST:PORT --device-key KEY")
        if not cubin_runs_on(arch, present):
            raise TuningError(f"tuning for cuda:{arch} measures on this machine's GPU, an {present}, which cannot run "
                              f"{arch} code: tune with --target cuda:{present}, or on an {arch} host through --rpc")
        return builder, ms.runner.LocalRunner(evaluator_config=evaluator, initializer=_prepare_cuda_runner)
    return builder, ms.runner.LocalRunner(evaluator_config=evaluator)


def tune(mod, target, options: TuningOptions) -> None:
    """Search schedules for the module's kernels and store them in the database (module docstring)."""
    from tvm.s_tir import meta_schedule as ms

    funcs = kernels(mod)
    if options.kernels:
        unknown = [name for name in options.kernels if name not in funcs]
        if unknown:
            raise TuningError(f"--kernels: no kernel named {', '.join(repr(n) for n in unknown)} in this model; "
                              f"its kernels: {', '.join(sorted(funcs))}")
        funcs = {name: funcs[name] for name in options.kernels}
    if not funcs or options.trials <= 0:
        return
    builder, runner = _builder_and_runner(target, options)
    directory = options.directory
    database = open_database(directory)
    with target:
        rule_schedules = commit_rule_schedules(database, funcs, target, builder, runner, options.report)
    calls = kernel_calls(mod)
    names = list(funcs)
    contexts = [ms.TuneContext(mod=workload_of(funcs[n]), target=target, space_generator="post-order-apply",
                               search_strategy="evolutionary", task_name=n, num_threads="physical",
                               rand_state=options.seed) for n in names]
    callbacks = ms.MeasureCallback.create("default")
    if options.progress is not None:
        callbacks = [*callbacks, _progress_callback(names, options.progress)]
    ms.tune_tasks(
        tasks=contexts, task_weights=[float(calls.get(n, 1)) for n in names], work_dir=str(directory),
        max_trials_global=options.trials, num_trials_per_iter=min(64, max(options.trials, 2)),
        builder=builder, runner=runner, database=database, cost_model="xgb", measure_callbacks=callbacks)
    with target:
        recheck_rules_against_best(database, funcs, rule_schedules, target, builder, runner, options.report)
    for name in names:
        record = _best_record(database, workload_of(funcs[name]), target)
        if record is not None:
            options.report.tuned[name] = mean_seconds(record)


def tune_and_apply(mod, target, options: TuningOptions):
    """The compiler's hook before the schedule rules: search (if trials > 0), then apply the database."""
    if target.kind.name not in ("llvm", "cuda"):
        if options.trials > 0:
            raise TuningError(f"MetaSchedule tuning for {target.kind.name} is not built: compile without --tune")
        return mod
    if options.trials > 0:
        tune(mod, target, options)
    return apply_database(mod, target, options)


def _progress_callback(names: list[str], report: Callable):
    """A MetaSchedule measure callback that calls report(kernel, trials done, best seconds)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class ProgressCallback(PyMeasureCallback):
        def __init__(self):
            self.done: dict[str, int] = {}
            self.best: dict[str, float] = {}

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            name = names[task_id]
            for result in runner_results:
                if result.run_secs:
                    seconds = sum(float(s) for s in result.run_secs) / len(result.run_secs)
                    self.best[name] = min(self.best.get(name, seconds), seconds)
            self.done[name] = self.done.get(name, 0) + len(measure_candidates)
            report(name, self.done[name], self.best.get(name))

    return ProgressCallback()
