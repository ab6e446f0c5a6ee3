"""The graph of one IR stage as an SVG picture (Graphviz `dot`), with what a pass changed marked.

Read from the IR text (docs/ir.md), one node a line. Parameters are left out of the picture
(they are counted in the timeline). Against the stage before, a node is *added* (green) when
its name is new, *changed* (amber) when its line differs (op, operands, attributes, shape, or the passes in its
provenance: fold-bn rewrites a conv's weights in place and says so there);
removed nodes are drawn as dashed red ghosts wired to their inputs that survived (and listed
under the picture). Hovering a node shows its IR line and provenance.
Nodes of one fused region sit in one dashed box. A graph with more than COLLAPSE_ABOVE ops is
drawn one box per module (two levels of the module path, e.g. `layer1.0`), so a ResNet-18
still reads at a glance; a box is marked when any node inside it was added or changed.
"""
from __future__ import annotations

import html
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from slimgraph.ir.errors import SlimgraphError

COLLAPSE_ABOVE = 40
MODULE_DEPTH = 2
LINE = re.compile(r"^\s*%(?P<name>[\w.]+) = (?P<op>[\w.:]+)\((?P<args>.*?)\)(?: : (?P<type>[^ ]+))?(?P<rest>.*)$")
REGION = re.compile(r"region\((\d+)\)")
LOC = re.compile(r'loc\("([^"]*)"')
COLORS = {"added": "#b7f0b1", "changed": "#ffd98a", "removed": "#f6c1c1", "same": "#ffffff"}


class ReportError(SlimgraphError):
    """The report cannot be drawn (no Graphviz) or its dump folder is not one."""


@dataclass
class IrNode:
    name: str
    op: str
    line: str  # the IR line, provenance included (a pass that rewrites a node in place adds its name)
    inputs: list[str]
    type: str = ""
    region: str | None = None
    source: str = ""  # module path or ONNX node name


@dataclass
class IrPicture:
    nodes: dict[str, IrNode] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)


def parse_ir_text(text: str) -> IrPicture:
    picture = IrPicture()
    for raw in text.splitlines():
        match = LINE.match(raw)
        if match is None:
            if raw.strip().startswith("return"):
                picture.outputs = re.findall(r"%([\w.]+)", raw)
            continue
        name, op, rest = match["name"], match["op"], match["rest"] or ""
        if op == "param":
            continue
        region, loc = REGION.search(rest), LOC.search(rest)
        picture.nodes[name] = IrNode(name, op, raw.strip(),
                                     re.findall(r"%([\w.]+)", match["args"]), match["type"] or "",
                                     region.group(1) if region else None, loc.group(1) if loc else "")
    for node in picture.nodes.values():
        node.inputs = [i for i in node.inputs if i in picture.nodes]
    return picture


def diff(before: IrPicture | None, after: IrPicture) -> tuple[dict[str, str], list[str]]:
    """({node: added | changed | same}, removed node names)."""
    if before is None:
        return {n: "same" for n in after.nodes}, []
    status = {n: ("added" if n not in before.nodes else "changed" if before.nodes[n].line != node.line else "same")
              for n, node in after.nodes.items()}
    return status, [n for n in before.nodes if n not in after.nodes]


def _short_op(op: str) -> str:
    parts = op.split(".")
    return parts[1] if op.startswith("aten.") and len(parts) > 1 else parts[-1] if op != "input" else "input"


def _attrs(**values) -> str:
    return ", ".join(f'{k}="{v}"' for k, v in values.items())


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _node_dot(node: IrNode, state: str) -> str:
    op = _short_op(node.op)
    label = f"{node.name}\\n{node.type}" if node.name.rstrip("_0123456789") == op else \
        f"{node.name}\\n{op}\\n{node.type}"
    tooltip = _escape(f"{node.line}\nfrom: {node.source or '-'}\n{state}")
    shape = "ellipse" if node.op == "input" else "box"
    return f'  "{node.name}" [{_attrs(label=label, tooltip=tooltip, fillcolor=COLORS[state], shape=shape)}];'


def _ghost_dot(ghosts: list[IrNode], picture: IrPicture) -> list[str]:
    lines = []
    for node in ghosts:
        tooltip = _escape(f"removed: {node.line}\nfrom: {node.source or '-'}")
        label = f"{node.name}\\n{_short_op(node.op)}"
        style = _attrs(label=label, tooltip=tooltip, fillcolor=COLORS["removed"], style="filled,dashed", shape="box",
                       fontcolor="#8a1c1c")
        lines.append(f'  "{node.name}" [{style}];')
        lines += [f'  "{i}" -> "{node.name}" [style=dashed, color="#d48a8a"];'
                  for i in node.inputs if i in picture.nodes]
    return lines


def _full_dot(picture: IrPicture, status: dict[str, str], ghosts: list[IrNode]) -> list[str]:
    lines, regions = _ghost_dot(ghosts, picture), {}
    for node in picture.nodes.values():
        if node.region is not None:
            regions.setdefault(node.region, []).append(node)
        else:
            lines.append(_node_dot(node, status[node.name]))
    for region, members in regions.items():
        lines.append(f'  subgraph "cluster_region_{region}" {{ style=dashed; color="#7a869a"; label="region {region}";')
        lines += [_node_dot(n, status[n.name]) for n in members]
        lines.append("  }")
    lines += [f'  "{i}" -> "{n.name}";' for n in picture.nodes.values() for i in n.inputs]
    return lines


def module_groups(picture: IrPicture) -> dict[str, str]:
    """node -> its module box: the first MODULE_DEPTH parts of its provenance, else its first input's box."""
    group: dict[str, str] = {}
    for node in picture.nodes.values():  # the text is in topological order
        if node.source:
            group[node.name] = ".".join(node.source.split(".")[:MODULE_DEPTH])
        elif node.inputs and node.inputs[0] in group and picture.nodes[node.inputs[0]].op != "input":
            group[node.name] = group[node.inputs[0]]
        else:
            group[node.name] = node.name
    return group


def _collapsed_dot(picture: IrPicture, status: dict[str, str]) -> list[str]:
    group = module_groups(picture)
    members: dict[str, list[IrNode]] = {}
    for node in picture.nodes.values():
        members.setdefault(group[node.name], []).append(node)
    lines = []
    for box, nodes in members.items():
        states = {status[n.name] for n in nodes}
        state = "added" if states == {"added"} else "changed" if states - {"same"} else "same"
        ops: dict[str, int] = {}
        for n in nodes:
            ops[_short_op(n.op)] = ops.get(_short_op(n.op), 0) + 1
        summary = ", ".join(f"{op} x{count}" if count > 1 else op for op, count in ops.items())
        marked = [f"{n.name} ({status[n.name]})" for n in nodes if status[n.name] != "same"]
        tooltip = _escape(f"{box}: {len(nodes)} ops\n{summary}" + ("\n" + "\n".join(marked[:20]) if marked else ""))
        label = f"{box}\\n{len(nodes)} ops" if len(nodes) > 1 else f"{box}\\n{summary}"
        lines.append(f'  "{box}" [{_attrs(label=label, tooltip=tooltip, fillcolor=COLORS[state], shape="box")}];')
    edges = {(group[i], group[n.name]) for n in picture.nodes.values() for i in n.inputs if group[i] != group[n.name]}
    lines += [f'  "{a}" -> "{b}";' for a, b in sorted(edges)]
    return lines


def render_svg(picture: IrPicture, status: dict[str, str], title: str, removed: list[IrNode] = ()) -> str:
    """The stage's graph as inline SVG (no XML prolog), drawn by Graphviz's dot; `removed` (nodes of
    the stage before) are drawn as ghosts when the graph is drawn node by node."""
    dot = shutil.which("dot")
    if dot is None:
        raise ReportError("the report draws graphs with Graphviz: install Debian's graphviz (apt-get install graphviz)")
    collapsed = len(picture.nodes) > COLLAPSE_ABOVE
    body = _collapsed_dot(picture, status) if collapsed else _full_dot(picture, status, list(removed))
    source = "\n".join([
        "digraph G {", f'  graph [{_attrs(rankdir="TB", tooltip=_escape(title), nodesep="0.2", ranksep="0.25")}];',
        '  node [style="filled,rounded", fontname="Helvetica", fontsize=10, color="#5b6472", penwidth=0.8];',
        '  edge [color="#8a93a3", arrowsize=0.5];', *body, "}"])
    result = subprocess.run([dot, "-Tsvg"], input=source, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise ReportError(f"Graphviz could not draw '{title}': {result.stderr.strip()[:200]}")
    svg = result.stdout
    return svg[svg.index("<svg"):]


def legend_html() -> str:
    return " ".join(f'<span class="swatch" style="background:{color}"></span>{html.escape(name)}'
                    for name, color in COLORS.items() if name != "same")
