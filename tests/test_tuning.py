"""MetaSchedule tuning: the search fills a database on disk; a later compile reuses it without search."""
import json
import time

import slimgraph
from slimgraph.codegen.tuning import TuningOptions, default_database_dir

from .test_cli import run_cli

FACTORY = '''
import torch

def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU()), (torch.randn(32, 64),)
'''


def test_tune_then_compile_reuses_the_database(tmp_path, capsys):
    factory = tmp_path / "mlp.py"
    factory.write_text(FACTORY)
    database = tmp_path / "db"
    code, out, _ = run_cli(capsys, "tune", f"{factory}:mlp", "--trials", "2", "--db", str(database),
                           "--runs", "0", "--quiet")
    assert code == 0, out
    workloads = (database / "database_workload.json").read_text().splitlines()
    records = [json.loads(line) for line in (database / "database_tuning_record.json").read_text().splitlines()]
    assert len(workloads) == 1  # one fused kernel: linear + bias + relu
    assert len(records) >= 2  # the rule schedule, measured, plus the search's candidates
    assert "rules (us)" in out and "1 kernel(s) scheduled from the tuning database" in out
    assert "max |diff|" in out

    start = time.perf_counter()
    compiled = slimgraph.compile(f"{factory}:mlp", tuning=TuningOptions(database=database))
    assert time.perf_counter() - start < 60  # no search: the builder pool alone takes longer to start
    assert compiled.report.tuning.applied == compiled.report.kernels and not compiled.report.tuning.tuned
    assert compiled.report.max_abs_diff <= 1e-5
    rules_only = slimgraph.compile(f"{factory}:mlp", tuning=TuningOptions(database=database, use_database=False))
    assert rules_only.report.tuning.applied == []


def test_default_database_lives_in_the_cache_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("SLIMGRAPH_TUNING_DB", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_database_dir() == tmp_path / "slimgraph" / "tuning"
    assert TuningOptions().directory == tmp_path / "slimgraph" / "tuning"
    monkeypatch.setenv("SLIMGRAPH_TUNING_DB", str(tmp_path / "elsewhere"))
    assert TuningOptions().directory == tmp_path / "elsewhere"


def test_unwritable_database_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run_cli(capsys, "tune", "digit_cnn", "--trials", "1", "--db", str(blocker / "db"), "--quiet")
    assert code == 1 and "tuning database" in err and str(blocker / "db") in err


def test_trial_counts_are_checked(capsys):
    code, _, err = run_cli(capsys, "tune", "digit_cnn", "--trials", "0", "--quiet")
    assert code == 1 and "--trials must be at least 1, got 0" in err
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "--tune", "-3", "--quiet")
    assert code == 1 and "--tune must be 0 or more, got -3" in err


def test_tuning_an_int8_model_keeps_its_integer_kernels_exact(tmp_path):
    """The integer kernels (pixel-lane, channel-lane, dense) go through tuning too: their rule
    schedules are measured into the database and the search's candidates compete with them; the
    library built from the database still gives the realized graph's outputs bit for bit."""
    import numpy as np

    from slimgraph.rewrites import PassManager, parse_pipeline

    from .conftest import imported_model

    _, _, graph = imported_model("digit_cnn")
    realized = PassManager(parse_pipeline("int8")).run(graph).graph
    tuning = TuningOptions(trials=6, database=tmp_path / "db")
    compiled = slimgraph.compile(realized, pipeline="none", check=False, tuning=tuning)
    assert compiled.report.tuning.tuned and any("qconv" in kernel for kernel in compiled.report.tuning.applied)
    x = graph.example_inputs(2)
    np.testing.assert_array_equal(np.asarray(compiled(*x)[0]), realized.run(*x)[0].numpy())
