"""Measuring tuning candidates on remote devices through TVM's RPC tracker (a device farm).

    this machine: MetaSchedule search + LocalBuilder (compiles each candidate, cross-compiles
                  for aarch64)
        |  upload the candidate library, time it on random arguments, send back the seconds
        v
    tracker HOST:PORT -- hands each measurement to a free server registered under --device-key
        |-- rpc_server --key KEY   (board 1)
        `-- rpc_server --key KEY   (board 2) ...

The tracker and servers are TVM's own (`python -m tvm.exec.rpc_tracker`, `python -m
tvm.exec.rpc_server --tracker HOST:PORT --key KEY` on each device; docs/tuning.md). Before
any search the tracker is asked whether it is reachable and has a server with the key, so a
typo is one line at once, not hours of failed measurements.
"""
from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass

from slimgraph.ir.errors import SlimgraphError

SESSION_TIMEOUT_SECONDS = 120
CONNECT_TIMEOUT_SECONDS = 5


class RpcError(SlimgraphError):
    """The tracker cannot be reached, or has no device with the requested key."""


@dataclass(frozen=True)
class RpcDevice:
    host: str
    port: int
    key: str

    def __str__(self) -> str:
        return f"key '{self.key}' at tracker {self.host}:{self.port}"


def parse_rpc(address: str, key: str | None) -> RpcDevice:
    """'HOST:PORT' and the device key -> RpcDevice (checked for form, not yet for reachability)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RpcError(f"--rpc '{address}' is not HOST:PORT (e.g. 127.0.0.1:9190)")
    if not key:
        raise RpcError(f"--rpc {address} needs --device-key KEY: the key the device's rpc_server registered with")
    return RpcDevice(host, int(port), key)


def _reachable(device: RpcDevice) -> None:
    """One quick TCP connect (TVM's own client retries a refused connection for a minute)."""
    try:
        with socket.create_connection((device.host, device.port), timeout=CONNECT_TIMEOUT_SECONDS):
            pass
    except OSError as exc:
        raise RpcError(f"cannot reach the RPC tracker at {device.host}:{device.port} ({exc.strerror or exc}); "
                       f"start one with 'python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port {device.port}' "
                       f"or fix --rpc") from exc


def free_servers(device: RpcDevice) -> int:
    """How many servers with the device's key the tracker lists; raises RpcError when there is none."""
    from tvm import rpc

    _reachable(device)
    try:
        summary = rpc.connect_tracker(device.host, device.port).summary()
    except (OSError, RuntimeError) as exc:
        raise RpcError(f"the RPC tracker at {device.host}:{device.port} does not answer: {exc}") from exc
    keys = [item["key"].split(":", 1)[-1] for item in summary.get("server_info", [])]
    if device.key not in keys:
        known = ", ".join(sorted(set(keys))) or "none"
        raise RpcError(f"the RPC tracker at {device.host}:{device.port} has no server with key '{device.key}' "
                       f"(keys registered: {known}); on the device run 'python -m tvm.exec.rpc_server "
                       f"--tracker {device.host}:{device.port} --key {device.key}'")
    return keys.count(device.key)


def rpc_runner(device: RpcDevice, evaluator_config):
    """MetaSchedule's RPCRunner measuring on the tracker's servers with the device key."""
    from tvm.s_tir import meta_schedule as ms

    config = ms.runner.RPCConfig(tracker_host=device.host, tracker_port=device.port, tracker_key=device.key,
                                 session_priority=1, session_timeout_sec=SESSION_TIMEOUT_SECONDS)
    return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator_config,
                               max_workers=free_servers(device))


def export_for_aarch64(mod) -> str:
    """Builder export for aarch64 candidates: a shared library linked by the cross compiler, so the
    device loads it without a compiler of its own (MetaSchedule's default ships a .tar to link there)."""
    from slimgraph.codegen.aarch64 import cross_compiler

    path = os.path.join(tempfile.mkdtemp(prefix="slimgraph-candidate-"), "candidate.so")
    mod.export_library(path, cc=cross_compiler())
    return path
