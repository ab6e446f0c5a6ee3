"""The code in docs/writing-a-pass.md runs as written, in the API and as a CLI plugin."""
import re
from pathlib import Path

from slimgraph import cli

DOC = Path(__file__).resolve().parent.parent / "docs" / "writing-a-pass.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


def test_every_python_block_runs(capsys):
    namespace: dict = {}
    for block in python_blocks():
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    assert "graph \"demo\"" in capsys.readouterr().out


def test_doc_passes_load_as_a_plugin(tmp_path, capsys):
    blocks = python_blocks()
    plugin = tmp_path / "my_passes.py"
    plugin.write_text("import torch\n" + blocks[0] + "\n" + blocks[3])  # the rule and the pass definitions
    assert cli.main(["passes", "--plugin", str(plugin)]) == 0
    listing = capsys.readouterr().out
    assert "simplify-arith" in listing and "merge-duplicate-constants" in listing
