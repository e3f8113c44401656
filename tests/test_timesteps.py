"""Time steps (format version 5): the file's T, input codings and stateful neuron models, and the
golden model over T steps, checked against a plain per-neuron reference written from
docs/hardware-model.md."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from bitsnn import hwplan, kinds
from bitsnn.hwmodel import HardwareModel, HardwareModelError, _content_hash, random_model, rate_randoms
from bitsnn.sim import golden


def _lif_model(seed=0, *, T=4, coding="threshold", encoding="spikes", reset="subtract", convs=(), shape=(8, 8),
               input_seed=None):
    """A small model over T steps: a lif layer (a decay of 0.9: m = 6554, not a power of two) and an
    if layer, with the given reset."""
    sizes = [64, 16, 12, 10] if not convs else [0, 12, 10]
    n_hidden = len(convs) + len(sizes) - 2
    neurons = {i: ({"neuron": "lif", "leak": 6554, "reset": reset, "shift": 3} if i % 2 == 0
                   else {"neuron": "if", "reset": reset})
               for i in range(n_hidden)}
    return random_model(np.random.default_rng(seed), sizes, input_shape=shape, convs=convs, input_encoding=encoding,
                        neurons=neurons, timesteps=T, input_coding=coding, input_seed=input_seed)


def _reference(model: HardwareModel, images) -> tuple[list[np.ndarray], np.ndarray]:
    """Every hidden layer's spikes per step (B, T, n_out) and the summed scores, neuron by neuron
    in Python integers, from the rules as docs/hardware-model.md states them."""
    x_all = model.step_inputs(images)
    B, T = x_all.shape[0], model.timesteps
    steps = [np.zeros((B, T, l.n_out), np.uint8) for l in model.hidden_layers]
    scores = np.zeros((B, model.num_classes), np.int64)
    for b in range(B):
        v, prev = [None] * len(model.layers), {}
        for t in range(T):
            x = (x_all[b] if model.static_input else x_all[b, t]).astype(np.int64)
            for li, layer in enumerate(model.layers):
                a = golden.layer_preactivation(layer, x[None].astype(np.uint8))[0].astype(np.int64)
                if layer.is_output:
                    scores[b] += a
                    break
                c, th = layer.compare.astype(np.int64), layer.thresholds.astype(np.int64)
                if layer.neuron == "step":
                    fired = (a * c.reshape((-1,) + (1,) * (a.ndim - 1)) >= (c * th).reshape((-1,) + (1,) * (a.ndim - 1)))
                else:
                    shape = (-1,) + (1,) * (a.ndim - 1)
                    if v[li] is None:
                        v[li] = np.zeros(a.shape, np.int64)
                    vv = v[li].ravel()
                    cc = np.broadcast_to(c.reshape(shape), a.shape).ravel()
                    bb = np.broadcast_to(layer.bias.reshape(shape), a.shape).ravel()
                    tt = np.broadcast_to(th.reshape(shape), a.shape).ravel()
                    fired = np.zeros(vv.shape, bool)
                    before = prev.get(li, np.zeros(vv.shape, bool))
                    for n in range(vv.size):
                        m = int(vv[n])
                        if layer.leak:
                            m = m - ((m * layer.leak) >> 16)  # Python's >> floors, as the rule says
                        m += int(cc[n]) * int(a.ravel()[n]) * 2**layer.shift + int(bb[n])
                        if layer.reset == "subtract-next" and before[n]:
                            m -= int(tt[n])  # the last step's spike, taken off after the leak
                        if m >= tt[n]:
                            fired[n] = True
                            m = {"zero": 0, "subtract": m - int(tt[n]), "subtract-next": m}[layer.reset]
                        vv[n] = m
                    prev[li] = fired.copy()
                    v[li] = vv.reshape(a.shape)
                    fired = fired.reshape(a.shape)
                if kinds.of(layer).output_is_map and layer.pool > 1:
                    ch, h, w = fired.shape
                    q = layer.pool
                    fired = fired[:, : h - h % q, : w - w % q].reshape(ch, h // q, q, w // q, q).any(axis=(2, 4))
                x = fired.reshape(-1).astype(np.int64)
                steps[li][b, t] = x
    return steps, scores


@pytest.mark.parametrize("reset", ["subtract", "zero", "subtract-next"])
@pytest.mark.parametrize("coding,encoding", [("threshold", "spikes"), ("direct", "pixels"), ("rate", "spikes")])
def test_golden_matches_the_rules_on_every_spike_of_every_step(coding, encoding, reset):
    model = _lif_model(1, coding=coding, encoding=encoding, reset=reset, input_seed=7 if coding == "rate" else None)
    images = np.random.default_rng(2).integers(0, 256, size=(6, 8, 8), dtype=np.uint8)
    g = golden.run(model, images)
    want_steps, want_scores = _reference(model, images)
    assert g.steps == 4 and len(g.step_spikes) == 2
    for got, want in zip(g.step_spikes, want_steps):
        assert got.shape == want.shape and np.array_equal(got, want)
    assert np.array_equal(g.scores, want_scores)
    assert np.array_equal(g.classes, np.argmax(want_scores, axis=1))
    # counts over the steps, and events: a hidden layer's spikes are the next layer's input events
    assert [s.dtype for s in g.spikes] == [np.uint8, np.uint8]
    for l, s in enumerate(g.step_spikes):
        assert np.array_equal(g.spikes[l], s.sum(axis=1))
        assert np.array_equal(g.spike_counts[:, l], s.sum(axis=(1, 2)))
    assert g.spike_counts.sum() > 0 and 0 < g.step_spikes[0].mean() < 1  # the test says something


def test_convolution_with_membranes_given_spikes():
    """Given spikes of two channels (an event sensor's polarity) into a lif convolution, its
    membranes per output position before the OR pool."""
    model = _lif_model(3, T=5, coding="given", convs=((4, 3, 2),), shape=(2, 6, 6))
    assert model.input_shape == (2, 6, 6) and model.layers[0].in_shape == (2, 6, 6)
    frames = (np.random.default_rng(4).random((3, 5, 2, 6, 6)) < 0.3).astype(np.uint8)
    g = golden.run(model, frames)
    want_steps, want_scores = _reference(model, frames)
    assert all(np.array_equal(a, b) for a, b in zip(g.step_spikes, want_steps))
    assert np.array_equal(g.scores, want_scores)
    assert g.inputs.shape == (3, 5, 72) and g.input_events[:, 0].tolist() == frames.reshape(3, -1).sum(axis=1).tolist()
    with pytest.raises(ValueError, match=r"given spikes have shape \[4, 2, 6, 6\] each, the model takes 5x2x6x6"):
        golden.run(model, frames[:, :4])
    with pytest.raises(ValueError, match="given spikes must be 0 or 1"):
        golden.run(model, frames * 2)


def test_one_step_if_neuron_is_a_step_neuron():
    """At one step, an if neuron (V = c*a*2^s + b >= theta) is a step neuron."""
    model = _lif_model(5, T=1)
    steps = golden.run(model, np.random.default_rng(6).integers(0, 256, size=(50, 8, 8), dtype=np.uint8))
    import dataclasses

    layers = []
    for l in model.layers:
        if l.neuron != "step":
            c = l.compare.astype(np.int64)
            # c*a*2^s + b >= theta  <=>  c*a >= ceil((theta - b) / 2^s)
            l = dataclasses.replace(l, neuron="step", reset="subtract", leak=0, shift=0, bias=None,
                                    thresholds=c * -((l.bias - l.thresholds) // 2**l.shift))
        layers.append(l)
    # thresholds outside the step range are clamped to its ends (never / always), as export does
    layers = [dataclasses.replace(l, thresholds=np.clip(l.thresholds, -l.a_max - 1, l.a_max + 1))
              if not l.is_output else l for l in layers]
    step = HardwareModel(model.input_shape, model.input_encoding, model.input_threshold, tuple(layers))
    g = golden.run(step, np.random.default_rng(6).integers(0, 256, size=(50, 8, 8), dtype=np.uint8))
    assert all(np.array_equal(a, b) for a, b in zip(steps.spikes, g.spikes))
    assert np.array_equal(steps.scores, g.scores)


def test_round_trip_and_versions(tmp_path):
    """A model over time writes format version 5 and reads back the same; one step of the default
    coding with step neurons stays at its old version, byte for byte."""
    model = _lif_model(7, coding="rate", input_seed=12345)
    back = HardwareModel.from_bytes(model.to_bytes())
    assert model.format_version == 5 and back.to_bytes() == model.to_bytes()
    assert (back.timesteps, back.input_coding, back.input_seed) == (4, "rate", 12345)
    assert [(l.neuron, l.reset, l.leak, l.shift) for l in back.hidden_layers] == [("lif", "subtract", 6554, 3),
                                                                                 ("if", "subtract", 0, 0)]
    header = json.loads(model.to_bytes()[16:16 + struct.unpack("<I", model.to_bytes()[12:16])[0]])
    assert header["time"] == {"steps": 4, "coding": "rate", "seed": 12345}
    assert header["layers"][0]["neuron"] == "lif" and "layers.0.bias" in header["arrays"]
    old = random_model(np.random.default_rng(7), [64, 12, 10])
    assert old.format_version == 2 and "time" not in json.loads(old.to_bytes()[16:16 + struct.unpack(
        "<I", old.to_bytes()[12:16])[0]])
    # steps alone (step neurons) need version 5 too
    many = random_model(np.random.default_rng(7), [64, 12, 10], timesteps=3)
    assert many.format_version == 5 and HardwareModel.from_bytes(many.to_bytes()).timesteps == 3


def _edit(model, change):
    data = model.to_bytes()
    hlen = struct.unpack("<I", data[12:16])[0]
    header, payload = json.loads(data[16:16 + hlen]), data[16 + hlen:]
    change(header)
    header["content_hash"] = _content_hash(header, payload)
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return data[:8] + struct.pack("<II", header["version"], len(h)) + h + payload


@pytest.mark.parametrize("change,message", [
    (lambda h: h.update(version=4), r"header: unknown key 'time'"),
    (lambda h: h["layers"][0].update(leak=0), r"layer 0 \(fc1\): leak 0: lif neurons take a leak of 1\.\.65535"),
    (lambda h: h["layers"][1].update(leak=2), r"layers\[1\]: unknown key 'leak'"),
    (lambda h: h["layers"][0].update(shift=17), r"layer 0 \(fc1\): shift 17: must be 0\.\.16"),
    (lambda h: h["layers"][0].pop("shift"), r"layers\[0\]: missing key 'shift'"),
    (lambda h: h["layers"][0].update(reset="half"), r"layers\[0\]\.reset 'half' is not one of \('subtract', 'zero', 'subtract-next'\)"),
    (lambda h: h["layers"][0].update(neuron="izhikevich"), r"layers\[0\]\.neuron 'izhikevich' is not one of"),
    (lambda h: h["time"].update(steps=0), r"time steps 0 outside 1\.\.4096"),
    (lambda h: h["time"].update(coding="direct"), r"input coding 'direct': spikes input takes threshold, rate, given"),
    (lambda h: h["time"].update(seed=3), r"a seed belongs to rate coding only, not threshold"),
    (lambda h: h["time"].pop("steps"), r"time: missing key 'steps'"),
    (lambda h: h["layers"][2].update(neuron="if", reset="zero", shift=0), r"the output layer has no neurons"),
])
def test_bad_time_fields_are_refused_in_one_line(change, message):
    model = _lif_model(8)
    with pytest.raises(HardwareModelError, match=message):
        HardwareModel.from_bytes(_edit(model, change))


def test_a_neuron_model_in_a_version_4_file_is_refused():
    model = _lif_model(9, T=1)
    # one step of threshold input: only the neuron model needs version 5
    with pytest.raises(HardwareModelError, match=r"layers\[0\]: unknown key 'neuron'"):
        HardwareModel.from_bytes(_edit(model, lambda h: (h.update(version=4), h.pop("time"))))


def test_stateful_thresholds_are_positive():
    import dataclasses

    model = _lif_model(10)
    l0 = model.layers[0]
    bad = dataclasses.replace(l0, thresholds=np.where(np.arange(l0.rows) == 3, 0, l0.thresholds))
    with pytest.raises(HardwareModelError, match=r"threshold 0 of neuron 3 outside the range of a stateful neuron's \[1, "):
        HardwareModel(model.input_shape, "spikes", 128, (bad, *model.layers[1:]), timesteps=4)


def test_rate_coding_generator():
    """xorshift32 from the seed, one advance per input value, step by step; input i of step t
    spikes when its pixel exceeds the state's low byte."""
    r = rate_randoms(1, 2, 3)
    assert r.shape == (2, 3) and r[0, 0] == 270369 & 0xFF  # xorshift32(1) = 270369
    x, want = 1, []
    for _ in range(6):
        x ^= (x << 13) % (1 << 32)
        x ^= x >> 17
        x ^= (x << 5) % (1 << 32)
        want.append(x & 0xFF)
    assert r.ravel().tolist() == want
    # across the blocks the generator is computed in (4,096 states each)
    x, want = 7, []
    for _ in range(3 * 5000):
        x ^= (x << 13) % (1 << 32)
        x ^= x >> 17
        x ^= (x << 5) % (1 << 32)
        want.append(x & 0xFF)
    assert rate_randoms(7, 3, 5000).ravel().tolist() == want
    model = _lif_model(11, coding="rate", input_seed=1, T=2)
    images = np.full((1, 8, 8), 128, np.uint8)
    s = model.step_inputs(images)
    assert np.array_equal(s[0], (128 > rate_randoms(1, 2, 64)).astype(np.uint8))
    assert 0.3 < s.mean() < 0.7
    assert not model.step_inputs(np.zeros((1, 8, 8), np.uint8)).any()  # pixel 0 never spikes


def test_the_hardware_refuses_time_by_name():
    """sim, build, report and run check the model before any work: over time the hardware takes
    at least one hidden layer, and rate input over at most 32 steps (its generators write an
    input's steps into one word)."""
    hwplan.check_supported(_lif_model(3, T=2, coding="rate", input_seed=5))
    with pytest.raises(hwplan.UnsupportedLayerError, match="the model runs 40 steps of rate input; .* at most 32 steps"):
        hwplan.check_supported(_lif_model(3, T=40, coding="rate", input_seed=5))
    flat = random_model(np.random.default_rng(7), [64, 10], timesteps=3)
    with pytest.raises(hwplan.UnsupportedLayerError, match="the model runs 3 steps with no hidden layer"):
        hwplan.check_supported(flat)
    with pytest.raises(hwplan.UnsupportedLayerError, match="over time, dense layers run in mode='event' only"):
        hwplan.HardwarePlan.of(_lif_model(12), mode="dense")
    hwplan.check_supported(_lif_model(12))
    conv = random_model(np.random.default_rng(3), [0, 10], input_shape=(6, 6), convs=((4, 3, 2),), timesteps=2,
                        input_encoding="pixels", input_coding="direct", neurons={0: {"neuron": "lif", "leak": 8192}})
    hwplan.check_supported(conv)


def test_the_nir_export_refuses_time_by_name(tmp_path):
    """A model NIR cannot hold exactly (lif neurons, resets by subtraction) is refused in one line,
    not written as one step of something else."""
    from bitsnn import BitsnnError
    from bitsnn.nirgraph import to_nir

    with pytest.raises(BitsnnError, match=r"^the NIR export writes one step of step neurons, or if neurons that reset to zero over steps of the same "
                                          r"input; this one runs "
                                          r"4 steps of threshold input, lif neurons \(decay 0\.9000, reset subtract\), if neurons"):
        to_nir(_lif_model(13))


def test_if_neurons_over_steps_round_trip_through_nir_and_run_in_norse(tmp_path):
    """The exact form, if neurons that reset to zero over steps of the same input: the NIR graph
    reads back as the same file, and Norse runs it over the steps to the golden model's spikes."""
    import logging

    import nir
    import torch

    from bitsnn.nirgraph import from_nir, to_nir

    model = random_model(np.random.default_rng(14), [0, 16, 10], input_shape=(8, 8), convs=((4, 3, 2),),
                         neurons={0: {"neuron": "if", "reset": "zero", "shift": 2},
                                  1: {"neuron": "if", "reset": "zero"}}, timesteps=5)
    graph = to_nir(model)
    nir.write(tmp_path / "m.nir", graph)
    back = from_nir(nir.read(tmp_path / "m.nir", type_check=False))
    assert back.content_hash == model.content_hash
    import norse.torch as norse

    logging.disable(logging.WARNING)
    try:
        net = norse.from_nir(graph)
    finally:
        logging.disable(logging.NOTSET)
    images = np.random.default_rng(15).integers(0, 256, size=(20, 8, 8), dtype=np.uint8)
    g = golden.run(model, images)
    x = model.step_inputs(images).astype(np.float32)
    for i in range(len(images)):
        state, total, spikes = None, 0, []
        seen = {}
        hooks = [dict(net.named_modules())[n].register_forward_hook(
            lambda _m, _i, o, n=n: seen.__setitem__(n, (o[0] if isinstance(o, tuple) else o).detach().reshape(-1).numpy()))
            for n in ("conv1_or", "fc1_spike")]
        with torch.no_grad():
            for _t in range(5):
                out, state = net(torch.as_tensor(x[i]).reshape(1, 8, 8), state)
                total = total + out.reshape(-1).numpy()
                spikes.append([seen["conv1_or"].copy(), seen["fc1_spike"].copy()])
        for h in hooks:
            h.remove()
        for li in range(2):
            np.testing.assert_array_equal(np.stack([s[li] for s in spikes]).astype(np.uint8), g.step_spikes[li][i])
        np.testing.assert_array_equal(total, g.scores[i])
    assert 0.05 < g.step_spikes[0].mean() < 0.95


def test_membranes_stay_inside_their_stated_width():
    """hwplan.membrane_bits bounds every membrane the golden model reaches, for every reset."""
    from bitsnn.hwplan import membrane_bits

    for reset in ("subtract", "zero", "subtract-next"):
        model = _lif_model(16, T=6, reset=reset)
        plans = [golden.plan_for(l) for l in model.layers]
        worst = {}
        images = np.random.default_rng(17).integers(0, 256, size=(200, 8, 8), dtype=np.uint8)
        for plan in plans[:-1]:  # record each step's membranes
            fire = plan.neurons.fire

            def spy(a, fire=fire, plan=plan):
                out = fire(a)
                worst[plan.layer.name] = max(worst.get(plan.layer.name, 0), int(np.abs(plan.neurons.v).max()))
                return out
            plan.neurons.fire = spy
        golden.run(model, images, plans=plans)
        for layer in model.hidden_layers:
            assert 0 < worst[layer.name] < 1 << (membrane_bits(layer, 6) - 1), (reset, layer.name)
