"""The tuning records shipped with slimgraph: the best schedule of each tuned kernel, per kind of machine.

    python -m slimgraph.codegen.shipped_records DB [--into DIR]

merges DB (a tuning database that `slimgraph tune --db DB` filled) into DIR, by default
codegen/tuning_records, which every compile consults after the user's own database
(codegen/tuning.py). Per workload (a kernel's PrimFunc, structurally hashed) and kind of machine
(codegen.tuning.machine_kind: CPU name and features), only the fastest record is kept, so the
shipped files hold one schedule per tuned kernel and machine kind, not the search's thousands of
candidates. A best record that is the rule schedule itself (the search found nothing faster) is
left out: shipped, it would pin today's rule schedule on that kernel after the rules improve.
DIR is rewritten whole (into a temporary directory, then moved into place).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from .tuning import SHIPPED_RECORDS, TuningError, machine_kind, mean_seconds, open_database


def _best_records(directories: list[Path]) -> dict:
    """(workload hash, machine kind) -> the fastest record over the databases in `directories`."""
    from tvm_ffi import structural_hash

    best: dict = {}
    for directory in directories:
        if not (directory / "database_workload.json").is_file():
            continue
        for record in open_database(directory).get_all_tuning_records():
            if not record.run_secs:
                continue
            key = (structural_hash(record.workload.mod), machine_kind(record.target))
            if key not in best or mean_seconds(record) < mean_seconds(best[key]):
                best[key] = record
    return {key: record for key, record in best.items() if not is_rule_schedule(record)}


def is_rule_schedule(record) -> bool:
    """Is the record's schedule the one our rules give its kernel (same trace)?"""
    from .tuning_measure import rule_schedule

    with record.target:
        rules = rule_schedule(record.workload.mod["main"], record.target)
    return rules is not None and rules.trace is not None and str(rules.trace) == str(record.trace)


def merge_into(source: Path, destination: Path = SHIPPED_RECORDS) -> int:
    """Merge the best records of `source` into `destination` (module docstring); the records it holds."""
    from tvm.s_tir import meta_schedule as ms

    if not (source / "database_tuning_record.json").is_file():
        raise TuningError(f"'{source}' is not a tuning database (no database_tuning_record.json): "
                          f"give the --db directory that `slimgraph tune` filled")
    best = _best_records([destination, source])
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        merged = ms.database.JSONDatabase(work_dir=scratch, allow_missing=True)
        for record in best.values():
            workload = merged.commit_workload(record.workload.mod)
            merged.commit_tuning_record(ms.database.TuningRecord(record.trace, workload, record.run_secs,
                                                                 record.target, record.args_info))
        destination.mkdir(parents=True, exist_ok=True)
        for name in ("database_workload.json", "database_tuning_record.json"):
            shutil.move(str(Path(scratch) / name), str(destination / name))
    return len(best)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", type=Path, help="a tuning database directory")
    parser.add_argument("--into", type=Path, default=SHIPPED_RECORDS, help=f"default: {SHIPPED_RECORDS}")
    args = parser.parse_args(argv)
    try:
        count = merge_into(args.database, args.into)
    except TuningError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{args.into}: {count} record(s), the fastest per kernel and kind of machine")


if __name__ == "__main__":
    main()
