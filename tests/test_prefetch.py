"""Software prefetch of the next step's weights (lowering/prefetch.py) in the packed conv's weight
chunks: which lines each prefetch names, evaluated for every iteration of the loops around it, and the
outputs against PyTorch."""
import itertools

import slimgraph
from slimgraph.lowering import conv_packed
from slimgraph.tests.test_cpu_schedules import AVX2_TARGET, conv_graph


def prefetches(stmt, around=()):
    """(the For / IfThenElse / Bind statements around it, the call) for each prefetch under `stmt`."""
    from tvm import s_tir, tirx

    found = []
    if isinstance(stmt, s_tir.SBlockRealize):
        found += prefetches(stmt.block, around)
    elif isinstance(stmt, s_tir.SBlock):
        found += prefetches(stmt.body, around)
    elif isinstance(stmt, tirx.For):
        found += prefetches(stmt.body, (*around, stmt))
    elif isinstance(stmt, tirx.IfThenElse):
        found += prefetches(stmt.then_case, (*around, stmt))
    elif isinstance(stmt, tirx.SeqStmt):
        binds = ()
        for child in stmt.seq:
            if isinstance(child, tirx.Bind):
                binds += (child,)
            found += prefetches(child, (*around, *binds))
    elif isinstance(stmt, tirx.Evaluate) and getattr(getattr(stmt.value, "op", None), "name", "") == "tirx.prefetch":
        found.append((around, stmt.value))
    return found


def row_major_strides(shape) -> list[int]:
    strides = [1]
    for extent in reversed(shape[1:]):
        strides.insert(0, strides[0] * extent)
    return strides


def prefetched_lines(around, call) -> dict[tuple, set[int]]:
    """{values of the loops around the prefetch but the innermost (the piece): the 64-byte lines (flat
    element index // 16 of an fp32 buffer) it prefetches over all pieces}."""
    from tvm import tirx
    from tvm.sym import Analyzer

    loops = [s for s in around if isinstance(s, tirx.For)]
    load = call.args[0].args[0]
    strides = row_major_strides([int(e) for e in load.source.shape])
    lines = {}
    for values in itertools.product(*[range(int(loop.extent)) for loop in loops]):
        analyzer = Analyzer()
        for loop, value in zip(loops, values):
            analyzer.bind(loop.loop_var, value)
        taken = True
        for s in around:
            if isinstance(s, tirx.Bind):
                analyzer.bind(s.var, analyzer.simplify(s.value))
            elif isinstance(s, tirx.IfThenElse):
                taken = taken and bool(analyzer.simplify(s.condition))
        flat = sum(int(analyzer.simplify(index)) * stride for index, stride in zip(load.indices, strides))
        line_set = lines.setdefault(values[:-1], set())
        if taken:
            line_set.add(flat // 16)
    return lines


def weight_lines(shape, box) -> set[int]:
    """The 64-byte lines of fp32 `box` (a (start, stop) per dim) of a buffer of `shape`."""
    strides = row_major_strides(shape)
    return {sum(i * s for i, s in zip(index, strides)) // 16
            for index in itertools.product(*[range(start, stop) for start, stop in box])}


def kernel(compiled, block: str):
    (func,) = [f for _, f in compiled.lowered.functions_items() if block in str(f)]
    return func


def test_each_row_of_a_weight_chunk_prefetches_its_share_of_the_next_chunk(monkeypatch):
    """32 -> 8, 3x3 at 6x6, AVX2 (one block of 8 lanes), chunks of 4 input channels (monkeypatched sizes):
    over a chunk's 6 rows the prefetches name exactly the lines of the next chunk's weights (4 inputs x 3 x 3
    x 8 outputs: 18 lines, 3 a row), none after the last chunk; without the flag, no prefetch."""
    monkeypatch.setattr(conv_packed, "CHUNKED_WEIGHT_BYTES", 1 << 12)
    monkeypatch.setattr(conv_packed, "WEIGHT_CHUNK_BYTES", 1 << 11)
    compiled = slimgraph.compile(conv_graph(1, 32, 8, 6, 3, 1, 1, 1), target=AVX2_TARGET, check=True)
    assert compiled.report.max_abs_diff <= 1e-4
    (found,) = prefetches(kernel(compiled, "conv2d_packed").body)
    around, call = found
    shape = [int(e) for e in call.args[0].args[0].source.shape]
    assert shape == [1, 32, 3, 3, 8]
    lines = prefetched_lines(around, call)
    chunks = {values[-2] for values in lines}  # (.., chunk, row) -> lines
    assert chunks == set(range(8))
    for chunk in chunks:
        got = set().union(*[s for values, s in lines.items() if values[-2] == chunk])
        expected = weight_lines(shape, [(0, 1), (4 * chunk + 4, 4 * chunk + 8), (0, 3), (0, 3), (0, 8)])
        assert len(expected) == 18 and got == (expected if chunk < 7 else set())
    assert max(len(s) for s in lines.values()) == 3  # 18 lines over 6 rows
    monkeypatch.setattr(conv_packed, "PREFETCH_NEXT_CHUNK", False)
    compiled = slimgraph.compile(conv_graph(1, 32, 8, 6, 3, 1, 1, 1), target=AVX2_TARGET, check=True)
    assert prefetches(kernel(compiled, "conv2d_packed").body) == []
