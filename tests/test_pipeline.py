"""Pipeline strings parse and print back; bad ones are one clear error naming what exists."""
import pytest

from slimgraph import cli
from slimgraph.rewrites import PassError, parse_pipeline


@pytest.mark.parametrize("text", [
    "fold-bn,fold-constants,fuse",
    "fuse{parallel=false}",
    "fold-constants{max_bytes=1024},fuse{algebra=false,parallel=false,regions=false}",
    "",
])
def test_round_trip(text):
    assert str(parse_pipeline(text)) == text


def test_named_pipeline_expands_and_defaults_are_not_printed():
    assert str(parse_pipeline("default")) == "fold-bn,fold-constants,fuse"
    assert str(parse_pipeline("fuse{parallel=true}")) == "fuse"
    assert parse_pipeline("fold-constants{max_bytes=12}").passes[0].max_bytes == 12


@pytest.mark.parametrize("text, message", [
    ("fold-bnn", "pipeline 'fold-bnn': unknown pass 'fold-bnn'; did you mean 'fold-bn'? (passes: fold-bn, fold-constants, fuse"),
    ("prune{ratio=two}", "option 'ratio' of pass 'prune' expects float, got 'two'"),
    ("prunee", "unknown pass 'prunee'; did you mean 'prune'?"),
    ("fuse{parallel=maybe}", "option 'parallel' of pass 'fuse' expects bool, got 'maybe'"),
    ("fold-constants{max_bytes=lots}", "option 'max_bytes' of pass 'fold-constants' expects int, got 'lots'"),
    ("fuse{paralel=true}", "pass 'fuse' has no option 'paralel'; did you mean 'parallel'? (options: algebra, parallel, regions, depthwise)"),
    ("fuse{parallel=true", "unbalanced '{' at column 5"),
    ("fuse}", "unbalanced '}' at column 5"),
    ("fuse{parallel}", "option 'parallel' at column 6 is not KEY=VALUE"),
    ("fold-bn,,fuse", "empty pass name at column 9"),
])
def test_bad_pipelines(text, message):
    with pytest.raises(PassError) as info:
        parse_pipeline(text)
    assert message in str(info.value)


@pytest.mark.parametrize("pipeline", ["fold-bnn", "prune{ratio=two}", "fuse{parallel=true"])
def test_bad_pipeline_in_cli_is_one_line_and_compiles_nothing(pipeline, tmp_path, capsys):
    code = cli.main(["compile", "digit_cnn", "--pipeline", pipeline, "-o", str(tmp_path / "m.so")])
    err = capsys.readouterr().err
    assert code == 1 and err.count("slimgraph: error:") == 1 and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_plugin_that_fails_to_import(tmp_path, capsys):
    plugin = tmp_path / "broken_passes.py"
    plugin.write_text("import torch\nraise RuntimeError('missing dependency')\n")
    code = cli.main(["compile", "digit_cnn", "--plugin", str(plugin), "-o", str(tmp_path / "m.so")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert f"plugin '{plugin}' failed to import: RuntimeError: missing dependency" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken_passes.py"]
    code = cli.main(["compile", "digit_cnn", "--plugin", str(tmp_path / "absent.py")])
    assert code == 1 and "plugin" in capsys.readouterr().err
