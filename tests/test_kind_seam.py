"""A ratchet on the layer-kind seam: code outside the registries (bitsnn/kinds.py and each kind's
parts) should ask a layer's kind what it is, not branch on its class or name. Today's branches
are listed below, file by file. A new one fails this test (ask the kind instead, or, where a
branch must stay, raise the file's count with a reason); a removed one fails it too, until its
count is lowered, so the list only shrinks.

What counts as a branch (found in the AST, not by text): ``isinstance``/``issubclass`` against a
layer class, a comparison with a kind's name, ``.conv is None`` on a layer plan, and ``.bits``
(or ``.wbits``) compared with 1."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the package's folders (the registry, bitsnn/kinds.py, branches on nothing)
FOLDERS = ("bitsnn", "model", "sim", "hw", "boards", "firmware")
LAYER_CLASSES = {"Layer", "ConvLayer", "IntDenseLayer", "IntConvLayer", "_IntWeights"}

#: file -> branches allowed there today. bitsnn/hwmodel.py holds the layer classes and the
#: loader, which tells the kinds' fields apart; the others are what the seam has yet to absorb.
ALLOWED = {
    "bitsnn/hwmodel.py": 10,
    "bitsnn/hwplan.py": 2,
    "bitsnn/nirgraph.py": 2,
    "bitsnn/report/counts.py": 2,
    "bitsnn/report/neurobench.py": 2,
    "model/export.py": 3,
    "model/layers.py": 2,
    "model/neurobench.py": 2,
    "sim/cosim/cli.py": 1,
    "sim/golden.py": 1,
    "hw/conv.py": 2,
    "hw/core.py": 4,
    "hw/estimate.py": 2,
    "hw/stage.py": 2,
}


def kind_names() -> set[str]:
    from bitsnn.kinds import KINDS

    return set(KINDS)


def branches(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """(line, what) of every branch on a layer kind in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("isinstance", "issubclass") and len(node.args) == 2:
            t = node.args[1]
            for e in (t.elts if isinstance(t, ast.Tuple) else [t]):
                cls = e.id if isinstance(e, ast.Name) else e.attr if isinstance(e, ast.Attribute) else None
                if cls in LAYER_CLASSES:
                    found.append((node.lineno, f"{node.func.id}(..., {cls})"))
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            for c in sides:
                if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value in names:
                    found.append((node.lineno, f"compares with the kind name {c.value!r}"))
                elif isinstance(c, ast.Attribute) and c.attr == "conv" and \
                        any(isinstance(o, (ast.Is, ast.IsNot)) for o in node.ops):
                    found.append((node.lineno, "tests .conv against None"))
                elif isinstance(c, ast.Attribute) and c.attr in ("bits", "wbits") and \
                        any(isinstance(x, ast.Constant) and x.value == 1 for x in sides):
                    found.append((node.lineno, f"compares .{c.attr} with 1"))
    return found


def scan() -> dict[str, list[tuple[int, str]]]:
    names = kind_names()
    out = {}
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel == "bitsnn/kinds.py":
                continue
            found = branches(ast.parse(path.read_text(encoding="utf-8")), names)
            if found:
                out[rel] = found
    return out


def test_no_new_branches_on_layer_kinds():
    found = scan()
    grown = {f: b for f, b in found.items() if len(b) > ALLOWED.get(f, 0)}
    assert not grown, "new branches on a layer kind (ask bitsnn.kinds instead): " + "; ".join(
        f"{f} has {len(b)}, allowed {ALLOWED.get(f, 0)}: " + ", ".join(f"line {l} {w}" for l, w in b)
        for f, b in grown.items())
    shrunk = {f: n for f, n in ALLOWED.items() if len(found.get(f, [])) < n}
    assert not shrunk, "fewer branches than ALLOWED says: lower it: " + ", ".join(
        f"{f} {len(found.get(f, []))} < {n}" for f, n in shrunk.items())


def test_the_scan_sees_each_shape_of_branch():
    """The detector itself: each shape it counts, and none of the look-alikes."""
    code = '''
isinstance(l, ConvLayer)
issubclass(cls, (int, IntDenseLayer))
l.kind == "binary_conv2d"
lp.conv is None
layer.bits == 1
cp.wbits > 1
isinstance(l, dict)
l.kind == "pixels"
lp.conv.lanes == 1
'''
    found = branches(ast.parse(code), {"binary_conv2d"})
    assert [line for line, _ in found] == [2, 3, 4, 5, 6, 7], found
