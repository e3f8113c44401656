"""bitsnn.kinds: every layer kind has all six parts, each answers to its kind, and every stage
dispatches through them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bitsnn import hwmodel, hwplan, kinds
from bitsnn.hwmodel import random_model


def _model_with_every_kind():
    """Pixels into two convolutions (one pooled), a hidden dense layer and the output layer."""
    return random_model(np.random.default_rng(3), [196, 24, 10], input_encoding="pixels", input_shape=(14, 14),
                        convs=((4, 3, 2), (8, 3, 1)))


def test_every_kind_has_every_part_and_the_file_knows_each():
    """Every kind has its file, export, golden and NIR parts; the kinds with hardware (dense and
    conv2d at least) have all seven, and they are exactly the ones the hardware plan takes. The
    file spells each kind with weights twice, for +-1 and for multi-bit weights, and reads both;
    a kind without weights (the global sum pool) once."""
    assert tuple(kinds.FILE_KINDS) == hwmodel.LAYER_KINDS
    assert set(kinds.FILE_KINDS) == {"binary_dense", "binary_conv2d", "int_dense", "int_conv2d", "global_sum_pool"}
    assert hwplan.HARDWARE_KINDS == tuple(n for n, k in kinds.KINDS.items() if k.has_hardware)
    assert {"dense", "conv2d"} <= set(hwplan.HARDWARE_KINDS)
    for file_name, (k, multibit) in kinds.FILE_KINDS.items():
        assert kinds.kind(file_name) is k and k.file_kind(4 if multibit else 1) == file_name
        assert hwmodel.LAYER_CLASSES[file_name] is k.part("layer")
    for name, k in kinds.KINDS.items():
        assert tuple(k.parts) == kinds.PARTS
        for p in kinds.PARTS:
            if k.has_hardware or p not in kinds.HARDWARE_PARTS:
                # each part resolves to the class or function its "module:name" names, importable
                obj = k.part(p)
                fn = obj.convert if p == "export" else obj  # export: a LayerExport (module, prefix, convert)
                assert callable(fn) and fn.__module__.split(".")[0] == "bitsnn", (name, p, obj)
                if p != "export":
                    assert obj.__name__ == k.parts[p].split(":")[-1], (name, p, obj)
            else:
                assert k.parts[p] is None, (name, p)
        layer_cls = k.part("layer")
        assert layer_cls.kind_name == name
        assert callable(k.part("golden"))
        if k.has_hardware:
            assert callable(k.part("plan")) and callable(k.part("estimate"))


def test_unknown_kind_and_part_are_named():
    with pytest.raises(KeyError, match="unsupported layer kind 'ttfs'.*binary_dense, binary_conv2d, global_sum_pool, int_dense, int_conv2d"):
        kinds.part("ttfs", "golden")
    with pytest.raises(KeyError, match="unknown part 'cycles'"):
        kinds.kind("binary_dense").part("cycles")


def test_stages_dispatch_by_kind():
    """Golden, plan, estimate and report each reach the model's layers through their kind's part."""
    from bitsnn.hw.estimate import estimate_resources
    from bitsnn.sim import golden

    model = _model_with_every_kind()
    assert [l.kind for l in model.layers] == ["binary_conv2d", "binary_conv2d", "binary_dense", "binary_dense"]
    for layer in model.layers:
        assert isinstance(golden.plan_for(layer), kinds.part(layer.kind, "golden"))
    plan = hwplan.HardwarePlan.of(model, lanes=8)
    assert [lp.conv is not None for lp in plan.layers] == [True, True, False, False]
    # the dense layer after the convolutions reads the second convolution's map store
    assert plan.layers[2].input_layout == plan.layers[1].conv.out_layout
    est = estimate_resources(model, lanes=8)
    assert set(est["breakdown"]) >= {f"layer{i}" for i in range(4)}
    assert [l.compares for l in model.layers] == [4 * 14 * 14, 8 * 7 * 7, 24, 9]


def test_every_stage_has_the_one_signature():
    """Each kind's Amaranth stage has the members of hw.stage.stage_signature, sized by the plan."""
    from bitsnn.hw.stage import StageOptions, stage_for, stage_signature

    model = _model_with_every_kind()
    plan = hwplan.HardwarePlan.of(model, lanes=8)
    members = {"start", "done", "src", "values", "out", "count", "seen", "scores", "rotate"}
    for l, layer in enumerate(model.layers):
        opts = StageOptions(n_readers=2)
        stage = stage_for(layer, plan, l, opts)
        stage._MustUse__silence = True  # inspected, not elaborated
        assert isinstance(stage, kinds.part(layer.kind, "stage"))
        assert set(stage.signature.members) == members
        assert stage.signature == stage_signature(plan, l, opts)
        assert len(stage.values) == (1 if l == 0 else 0)  # pixels reach the first layer only
        assert len(stage.out) == (0 if layer.is_output else 2)
        assert len(stage.scores) == (10 if layer.is_output else 0)
    assert [kinds.part(l.kind, "stage").counts_spikes for l in model.layers] == [False, False, True, True]


def test_a_kind_before_its_hardware_is_refused_by_name(monkeypatch):
    """A kind whose hardware parts are None: its parts say so, and sim/build/report/run's check
    names the layer before any work (here conv stands in for such a kind)."""
    k = kinds.kind("binary_conv2d")
    early = kinds.LayerKind(k.name, k.summary, {**k.parts, **{p: None for p in kinds.HARDWARE_PARTS}})
    assert k.has_hardware and not early.has_hardware
    with pytest.raises(KeyError, match="'conv2d' has no stage part yet"):
        early.part("stage")
    assert early.part("golden") is k.part("golden")
    monkeypatch.setattr(hwplan, "HARDWARE_KINDS", ("dense",))
    with pytest.raises(hwplan.UnsupportedLayerError, match=r"layer 0 \(conv1\) is a binary_conv2d layer, which has no hardware stage yet"):
        hwplan.check_supported(_model_with_every_kind())


def test_every_neuron_model_has_every_part():
    """Each neuron model's parts resolve to what they name, inside the package; a layer's neuron
    model is a field of the layer, checked by the file."""
    assert "step" in kinds.NEURONS
    for name, n in kinds.NEURONS.items():
        assert tuple(n.parts) == kinds.NEURON_PARTS
        for p in kinds.NEURON_PARTS:
            if n.parts[p] is None:
                assert p in ("plan", "estimate", "hw") and not n.has_hardware, (name, p)
                continue
            obj = n.part(p)
            assert callable(obj) and obj.__module__.split(".")[0] == "bitsnn", (name, p, obj)
            assert obj.__name__ == n.parts[p].split(":")[-1], (name, p, obj)
    with pytest.raises(KeyError, match="unsupported neuron model 'izhikevich'.*step"):
        kinds.neuron("izhikevich")
    with pytest.raises(KeyError, match="unknown part 'cycles'"):
        kinds.neuron("step").part("cycles")
    model = _model_with_every_kind()
    assert {l.neuron for l in model.layers} == {"step"}
    bad = dataclasses.replace(model.layers[2], neuron="izhikevich")
    with pytest.raises(hwmodel.HardwareModelError, match=r"layer 2 \(fc1\): unknown neuron model 'izhikevich'"):
        hwmodel.HardwareModel(model.input_shape, model.input_encoding, model.input_threshold,
                              (*model.layers[:2], bad, model.layers[3]))


def _doc_tables() -> list[tuple[list[str], dict[str, dict[str, str]]]]:
    """docs/kinds.md's part tables: (column names, part -> column -> the cell's name)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "kinds.md").read_text(encoding="utf-8")
    tables = []
    for block in re.findall(r"(?m)^\| part \|.*\n\|[-| ]+\|\n(?:\|.*\n)+", text):
        rows = [[c.strip().strip("`") for c in line.strip().strip("|").split("|")] for line in block.splitlines()]
        cols = rows[0][3:]
        tables.append((cols, {r[0]: dict(zip(cols, r[3:])) for r in rows[2:]}))
    return tables


def test_docs_tables_match_the_registries():
    """docs/kinds.md's two tables: one column per kind and per neuron model, one row per part,
    each cell the name the registry's part points at."""
    (kind_cols, kind_rows), (neuron_cols, neuron_rows) = _doc_tables()
    for cols, rows, registry, parts in ((kind_cols, kind_rows, kinds.KINDS, kinds.PARTS),
                                        (neuron_cols, neuron_rows, kinds.NEURONS, kinds.NEURON_PARTS)):
        assert cols == list(registry) and tuple(rows) == parts
        for p in parts:
            for name, entry in registry.items():
                want = entry.parts[p].split(":")[-1] if entry.parts[p] else "None"
                assert rows[p][name] == want, (name, p, rows[p][name], want)
