"""A ratchet on the layer-kind seam: code outside the registries (bitsnn/kinds.py and each kind's
parts) should ask a layer's kind what it is, not branch on its class or name. Today's branches
are listed below, file by file. A new one fails this test (ask the kind instead, or, where a
branch must stay, raise the file's count with a reason); a removed one fails it too, until its
count is lowered, so the list only shrinks.

What counts as a branch (found in the AST, not by text): ``isinstance``/``issubclass`` against a
layer class, a comparison with a kind's or neuron model's name, ``.conv is None`` on a layer
plan, ``bits`` or ``.bits`` (or ``wbits``) compared with 1, and any read of ``.multibit``. A layer's weight
bits are an attribute, not a kind; where the arithmetic itself differs (a popcount of +-1
weights against an adder of b-bit ones) the branch stays, counted here."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the package's folders (the registry, bitsnn/kinds.py, branches on nothing)
FOLDERS = ("bitsnn", "model", "sim", "hw", "boards", "firmware")
LAYER_CLASSES = {"Layer", "ConvLayer"}

#: file -> branches allowed there today, and why they stay. The layer classes and the plan are
#: kinds' parts (bitsnn.kinds); the rest is what the seam has yet to absorb, or arithmetic that
#: differs with the weight bits.
ALLOWED = {
    "bitsnn/hwmodel.py": 12,  # the layer part: how +-1 and b-bit weights are stored and checked
    "bitsnn/hwplan.py": 6,  # the plan part: multi-bit refusals; a layer plan with or without a ConvPlan
    "bitsnn/nirgraph.py": 1,  # an imported b-bit output layer's rows share one scale
    "model/layers.py": 4,  # the quantiser: sign for +-1, rounding for b bits; the bits check; extra_repr
    "model/network.py": 1,  # the spec's wB token, none for +-1
    "model/precision.py": 1,  # BWO flips +-1 weights; a b-bit weight has no sign to flip
    "sim/cosim/cli.py": 1,  # names each convolution's stage in the log line
    "sim/golden.py": 1,  # +-1 spikes: packed AND-popcount; b-bit weights: a matrix product
    "hw/arith.py": 1,  # a lane's term: +-v for a weight bit, v*w for a b-bit weight
    "hw/conv.py": 2,  # a +-1 kernel bit versus a b-bit kernel word; the window stage takes +-1 only
    "hw/core.py": 8,  # popcount lanes versus b-bit adders, and the weight checks of each
    "hw/estimate.py": 2,  # the same, in LUTs
    "hw/stage.py": 2,  # a layer plan with or without a ConvPlan; 0/1 versus b-bit weight words
}


def kind_names() -> set[str]:
    """The kinds' and neuron models' names, and the file's spellings of the kinds. ``dense`` is
    left out: it is also the name of a hardware mode (dense versus event), a different thing."""
    from bitsnn.kinds import FILE_KINDS, KINDS, NEURONS

    return (set(KINDS) - {"dense"}) | set(FILE_KINDS) | set(NEURONS)


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
                elif isinstance(c, (ast.Attribute, ast.Name)) and getattr(c, "attr", getattr(c, "id", None)) in \
                        ("bits", "wbits") and any(isinstance(x, ast.Constant) and x.value == 1 for x in sides):
                    found.append((node.lineno, f"compares {ast.unparse(c)} with 1"))
        if isinstance(node, ast.Attribute) and node.attr == "multibit" and isinstance(node.ctx, ast.Load):
            found.append((node.lineno, "reads .multibit"))
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
issubclass(cls, (int, Layer))
l.kind == "binary_conv2d"
lp.conv is None
layer.bits == 1
cp.wbits > 1
layer.multibit
bits == 1
isinstance(l, dict)
l.kind == "pixels"
lp.conv.lanes == 1
'''
    found = branches(ast.parse(code), {"binary_conv2d"})
    assert [line for line, _ in found] == [2, 3, 4, 5, 6, 7, 8, 9], found
