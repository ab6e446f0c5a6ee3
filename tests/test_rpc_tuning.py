"""Tuning through TVM's RPC tracker: a tracker and two RPC servers on loopback stand in for a farm
of devices; the search measures its candidates there, and the database it fills builds a library
that runs. Also the one-line errors for a bad --rpc, an unreachable tracker and an unknown key."""
import json
import shutil
import socket
import subprocess
import sys
import time

import pytest

import slimgraph
from slimgraph.codegen.rpc import RpcDevice, RpcError, free_servers, parse_rpc
from slimgraph.codegen.tuning import TuningOptions

from .test_cli import run_cli
from .test_tuning import FACTORY

KEY = "loopback-cpu"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    """A tracker and two servers registered under KEY, all on 127.0.0.1; yields (device, server logs)."""
    folder = tmp_path_factory.mktemp("farm")
    port = _free_port()
    processes = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                                   "--port", str(port), "--port-end", str(port + 1)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    logs = [folder / f"server{i}.log" for i in range(2)]
    for log in logs:
        server_port = _free_port()
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(server_port),
             "--port-end", str(server_port + 1), "--tracker", f"127.0.0.1:{port}", "--key", KEY],
            stdout=open(log, "w"), stderr=subprocess.STDOUT))
    device = RpcDevice("127.0.0.1", port, KEY)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if free_servers(device) == 2:
                    break
            except RpcError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the loopback RPC servers did not register with the tracker in 120 s")
            time.sleep(1)
        yield device, logs
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def test_tuning_through_the_tracker_fills_a_database_that_builds(farm, tmp_path, capsys):
    device, logs = farm
    factory = tmp_path / "mlp.py"
    factory.write_text(FACTORY)
    database = tmp_path / "db"
    code, out, err = run_cli(capsys, "tune", f"{factory}:mlp", "--trials", "4", "--db", str(database),
                             "--rpc", f"{device.host}:{device.port}", "--device-key", KEY, "--runs", "0", "--quiet")
    assert code == 0, err
    records = [json.loads(line) for line in (database / "database_tuning_record.json").read_text().splitlines()]
    assert len(records) >= 2 and all(record[1][1] for record in records[:2])  # measured seconds came back
    assert "rules (us)" in out  # the rule schedule was measured on the servers too
    served = "".join(log.read_text() for log in logs)
    assert "connected from" in served or "connection from" in served, served[-2000:]
    compiled = slimgraph.compile(f"{factory}:mlp", tuning=TuningOptions(database=database))
    assert compiled.report.tuning.applied == compiled.report.kernels
    assert compiled.report.max_abs_diff <= 1e-5


def test_bad_rpc_options_are_one_line_errors(farm, capsys):
    device, _ = farm
    with pytest.raises(RpcError, match="'localhost' is not HOST:PORT"):
        parse_rpc("localhost", KEY)
    with pytest.raises(RpcError, match="needs --device-key"):
        parse_rpc("127.0.0.1:9190", None)
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "--tune", "2", "--rpc", f"127.0.0.1:{_free_port()}",
                           "--device-key", KEY, "--quiet")
    assert code == 1 and "cannot reach the RPC tracker at 127.0.0.1:" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "tune", "digit_cnn", "--trials", "2", "--rpc", f"127.0.0.1:{device.port}",
                           "--device-key", "rasp5", "--quiet")
    assert code == 1 and f"has no server with key 'rasp5' (keys registered: {KEY})" in err
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "--rpc", f"127.0.0.1:{device.port}",
                           "--device-key", KEY, "--quiet")
    assert code == 1 and "give --tune TRIALS too" in err


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None, reason="needs g++-aarch64-linux-gnu")
def test_aarch64_candidates_are_linked_by_the_cross_compiler(tmp_path):
    """What a device farm of ARM boards is sent: a shared library for aarch64, no .tar to link there."""
    import tvm
    from tvm import te

    from slimgraph.codegen.rpc import export_for_aarch64

    a = te.placeholder((16,), "float32", name="a")
    add_one = te.create_prim_func([a, te.compute((16,), lambda i: a[i] + 1.0, name="b")])
    target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    path = export_for_aarch64(tvm.compile(tvm.IRModule({"main": add_one}), target=target))
    header = open(path, "rb").read(20)
    assert path.endswith(".so") and header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183


def test_tuning_needs_a_device_to_measure_on(capsys):
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "--target", "arm64", "--tune", "2", "--quiet")
    assert code == 1 and "aarch64 target measures on the devices: give --rpc HOST:PORT" in err
    from slimgraph.codegen.cuda import gpu_present

    if not gpu_present():
        code, _, err = run_cli(capsys, "compile", "digit_cnn", "--target", "cuda", "--tune", "2", "--quiet")
        assert code == 1 and "tuning for cuda measures on this machine's GPU and it has none" in err


def test_tuning_for_another_gpu_generation_is_refused(capsys, monkeypatch):
    """sm_80 candidates cannot run on an sm_90 GPU: said before any search, naming the target to use."""
    from slimgraph.codegen import cuda

    monkeypatch.setattr(cuda, "gpu_arch", lambda: "sm_90")
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "--target", "cuda:sm_80", "--tune", "2", "--quiet")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "an sm_90, which cannot run sm_80 code: tune with --target cuda:sm_90" in err
