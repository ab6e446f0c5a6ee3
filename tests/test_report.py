"""The compile report: one self-contained HTML page per compile, checked in headless Chromium (Debian's
chromium, driven by Playwright): it loads without console errors, has one section per pass and the
graph pictures, stays small and renders fast. The screenshot is kept under test-artifacts/."""
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from slimgraph.report_graph import diff, parse_ir_text

from .test_cli import assert_one_line_error, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("SLIMGRAPH_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
needs_graphviz = pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz (Debian's graphviz)")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


def open_in_chromium(path: Path, screenshot: Path | None = None) -> dict:
    """Load the page from disk; return its load time, console errors and what it shows."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors, requests = [], []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        start = time.perf_counter()
        page.goto(path.resolve().as_uri(), wait_until="load")
        seconds = time.perf_counter() - start
        shown = {"sections": [s.get_attribute("id") for s in page.query_selector_all("section.pass")],
                 "pictures": len(page.query_selector_all(".graph svg")),
                 "nodes": page.evaluate("Array.from(document.querySelectorAll('.graph svg'))"
                                        ".map(svg => svg.querySelectorAll('g.node').length)"),
                 "title": page.title()}
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return {"seconds": seconds, "errors": errors, "requests": requests, **shown}


@needs_graphviz
@needs_browser
def test_resnet18_report_renders_in_chromium(tmp_path, capsys):
    report = tmp_path / "report.html"
    code, _, err = run_cli(capsys, "compile", "resnet18", "-o", str(tmp_path / "r18.so"), "--report", str(report),
                           "--check-numerics", "--bench", "--runs", "3", "--quiet")
    assert code == 0, err
    page = open_in_chromium(report, ARTIFACTS / "report-resnet18.png")
    assert page["errors"] == [] and page["title"] == "slimgraph report: resnet18"
    assert [r for r in page["requests"] if not r.startswith("file:")] == []  # self-contained
    assert page["sections"] == ["pass-000-input", "pass-001-fold-bn", "pass-002-fold-constants", "pass-003-fuse"]
    assert page["pictures"] == 3  # the import, fold-bn and fuse (fold-constants changed nothing)
    assert all(10 <= boxes <= 25 for boxes in page["nodes"])  # 50-70 ops, one box per module: layer1.0, ...
    assert (ARTIFACTS / "report-resnet18.png").stat().st_size > 10_000
    text = report.read_text()
    assert "vs original" in text and "no rewrite passes" in text and "fold-bn" in text
    assert re.search(r"0 added, \d+ changed, 20 removed", text)  # fold-bn: 20 batch norms gone


@needs_graphviz
@needs_browser
@pytest.mark.parametrize("name", ["bert_encoder", "mobilenet_v2"])
def test_reports_stay_small_and_fast(name, tmp_path, capsys):
    report = tmp_path / f"{name}.html"
    pipeline = "int8" if name == "mobilenet_v2" else "default"
    code, _, err = run_cli(capsys, "compile", name, "--pipeline", pipeline, "-o", str(tmp_path / "m.so"),
                           "--report", str(report), "--runs", "0", "--quiet")
    assert code == 0, err
    assert report.stat().st_size < 3 * 2**20
    page = open_in_chromium(report)
    assert page["errors"] == [] and page["seconds"] < 3
    if name == "mobilenet_v2":
        assert "per-layer quantization error" in report.read_text()


@needs_graphviz
def test_report_from_a_dump_folder_without_a_compile(tmp_path, capsys):
    folder = tmp_path / "dump"
    assert run_cli(capsys, "dump", "digit_cnn", "--pipeline", "default", "--dump-dir", str(folder))[0] == 0
    code, out, err = run_cli(capsys, "report", str(folder))
    assert code == 0, err
    text = (folder / "report.html").read_text()
    assert text.count("<section class='pass'") == 4 and "<svg" in text
    assert text.count('fill="#f6c1c1"') == 2  # fold-bn's two batch norms, drawn as removed ghosts
    assert "<a href='001-fold-bn.ir'>" in text  # each stage links its IR file


def test_graph_diff_marks_added_changed_and_removed():
    before = parse_ir_text('graph "g" {\n  %x = input() : f32[4]\n  %a = aten.relu.default(%x) : f32[4]\n'
                           '  %b = aten.neg.default(%a) : f32[4]\n  return %b\n}\n')
    after = parse_ir_text('graph "g" {\n  %x = input() : f32[4]\n  %b = aten.neg.default(%x) : f32[4]\n'
                          '  %c = aten.abs.default(%b) : f32[4]\n  return %c\n}\n')
    status, removed = diff(before, after)
    assert status == {"x": "same", "b": "changed", "c": "added"} and removed == ["a"]
    assert after.nodes["c"].inputs == ["b"] and after.outputs == ["c"]


def test_bad_report_arguments_are_one_line_errors(tmp_path, capsys):
    code, _, err = run_cli(capsys, "report", str(tmp_path / "nowhere"))
    assert_one_line_error(code, err, "dump folder", "does not exist")
    code, _, err = run_cli(capsys, "report", str(tmp_path))
    assert_one_line_error(code, err, "holds no IR dump")
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "--report", str(tmp_path / "no" / "r.html"), "--quiet")
    assert_one_line_error(code, err, "folder", "does not exist")
    code, _, err = run_cli(capsys, "compile", "digit_cnn", "--report", str(tmp_path / "r.txt"), "--quiet")
    assert_one_line_error(code, err, "must be an .html file")
    assert not list(tmp_path.iterdir())  # nothing half-written
