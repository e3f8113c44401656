"""The neurons of a timed stage: P lanes of membrane updates, one step a cycle.

A stage over time (:attr:`bitsnn.hwplan.LayerPlan.timed`: a convolution's, or a dense layer's
event core) gets, for one lane group (of one output position) at one step, each lane's c_o * a
(its accumulator, weights of a compare -1 neuron inverted) and turns it into that step's spikes. The rule (docs/hardware-model.md, "Time
steps"; the golden model's :class:`bitsnn.sim.golden.IFNeurons` and ``StepNeurons``), in integers:

- ``if``/``lif``: V <- V - ((V * m) >> 16) (``lif``, arithmetic shift: for m = 2^(16-k) it is
  V >> k), V <- V + (c_o * a << shift) + b_o, minus theta_o after a spike of the last step (reset
  ``subtract-next``); spike = [V >= theta_o]; then V <- V - theta_o (``subtract``) or 0 (``zero``).
  V is 0 at step 0: the stage runs one lane group's T steps back to back, so its membranes are P
  registers, never stored;
- ``step`` (no membrane): spike = [c_o * a >= c_o * theta_o] at every step.

Per lane group, theta_o, b_o (or c_o * theta_o) are constants looked up by the group number.
"""

from __future__ import annotations

from amaranth.hdl import Const, Mux, Signal, signed

from bitsnn.hwplan import signed_bits

__all__ = ["MembraneLanes", "membrane_update", "signed_update"]


def membrane_update(m, v, a, *, theta, bias, prev, first, layer, width: int):
    """One lane's step: (spike, V after the reset, the membrane the comparison saw), as
    Amaranth values. ``v``: the lane's membrane register (ignored at ``first``); ``a``: c_o * a;
    ``theta``/``bias``: the lane's constants (``bias`` None: it is in ``a`` already, the accumulator
    having started at it); ``prev``: its spike of the last step (``subtract-next``);
    ``layer``: the hidden layer (``leak``, ``shift``, ``reset``); ``width``: the membrane's bits
    (:func:`bitsnn.hwplan.membrane_bits`, which no membrane exceeds)."""
    w = width + 1  # the sum before the reset, one bit of headroom
    v0 = Signal(signed(w))
    m.d.comb += v0.eq(Mux(first, 0, v))
    leaked = Signal(signed(w))
    mm = int(layer.leak)
    if mm == 0:
        m.d.comb += leaked.eq(v0)
    elif mm & (mm - 1) == 0:  # m = 2^(16-k): (V * m) >> 16 is V >> k
        m.d.comb += leaked.eq(v0 - (v0 >> (16 - (mm.bit_length() - 1))))
    else:
        m.d.comb += leaked.eq(v0 - ((v0 * Const(mm, 17)) >> 16))
    taken = Const(0, 1)
    if layer.reset == "subtract-next":
        taken = prev & ~first
    vn = Signal(signed(w))
    total = leaked + (a << int(layer.shift))
    if bias is not None:
        total = total + bias
    m.d.comb += vn.eq(total - Mux(taken, theta, 0))
    # one subtraction serves the compare and the reset: d = V - theta, a spike when d >= 0
    d = Signal(signed(w + 1))
    m.d.comb += d.eq(vn - theta)
    spike = Signal()
    m.d.comb += spike.eq(~d[-1])
    after = Signal(signed(w))
    if layer.reset == "zero":
        m.d.comb += after.eq(Mux(spike, 0, vn))
    elif layer.reset == "subtract":
        m.d.comb += after.eq(Mux(spike, d, vn))
    else:
        m.d.comb += after.eq(vn)
    return spike, after, vn


def signed_update(m, v, count, a, *, theta, bias, first, shift: int, width: int):
    """One ``signed_if`` lane's step (Fast-SNN; the golden model's
    :class:`bitsnn.sim.golden.SignedIFNeurons`): (+1 spike, -1 spike, V after, count after), as
    Amaranth values. ``v``, ``count``: the lane's membrane and its +1 spikes less its -1 spikes
    (both ignored at ``first``, where V starts at theta/2 and the count at 0); ``a``: c_o * a;
    ``theta`` (even), ``bias``: the lane's constants; ``width``: the membrane's bits. One
    subtraction, d = V - theta, gives the +1 spike (d >= 0) and the V after it; a -1 spike needs
    V < 0 (its sign bit) and a count above 0, and adds theta back."""
    w = width + 1
    v0 = Signal(signed(w))
    m.d.comb += v0.eq(Mux(first, theta >> 1, v))
    c0 = Signal(len(count))
    m.d.comb += c0.eq(Mux(first, 0, count))
    vn = Signal(signed(w))
    m.d.comb += vn.eq(v0 + (a << int(shift)) + bias)
    d = Signal(signed(w + 1))
    m.d.comb += d.eq(vn - theta)
    up, down = Signal(), Signal()
    m.d.comb += [up.eq(~d[-1]), down.eq(d[-1] & vn[-1] & (c0 != 0))]
    after = Signal(signed(w))
    m.d.comb += after.eq(Mux(up, d, Mux(down, vn + theta, vn)))
    count_after = Signal(len(count))
    m.d.comb += count_after.eq(c0 + up - down)
    return up, down, after, count_after


class MembraneLanes:
    """The P lanes of a timed stage (see the module docstring): ``lanes`` P, ``groups`` G (lane j
    of group g is neuron ``first`` + g*P + j of ``layer``, of ``count`` from ``first``; or channel
    g*P + j of a convolution),
    ``width`` the membranes' bits (:func:`bitsnn.hwplan.membrane_bits`), ``bias_in_acc``: the
    accumulators started at the biases.

    ``build(m, accs, group, first, en)`` adds the lanes to module ``m`` and returns their P spike
    bits (a combinational function of ``accs``, the P lanes' c_o * a, and the registers); on a
    cycle with ``en`` high the membranes (and the last spikes) take the step's values; ``first``:
    the step is step 0 (membranes start at 0)."""

    def __init__(self, layer, lanes: int, groups: int, width: int, *, bias_in_acc: bool = False, first: int = 0,
                 count: int | None = None, steps: int = 1):
        self.layer = layer
        self.P, self.G = lanes, groups
        self.stateful = layer.neuron_model.stateful
        #: signed spikes (``signed_if``): each lane keeps a count of its +1 less its -1 spikes, 0..T
        self.signed = layer.neuron_model.signed
        self.steps = steps
        self.width = width
        self.bias_in_acc = bias_in_acc
        end = None if count is None else first + count
        ths = [int(t) for t in layer.thresholds[first:end]]
        cs = [int(c) for c in layer.compare[first:end]]
        if self.stateful:
            self.theta = ths
            self.bias = [int(b) for b in layer.bias[first:end]]
            self.cbits = max(signed_bits(v) for v in ths + self.bias)
        else:  # c_o * theta_o: the spike is [c_o * a >= c_o * theta_o]
            self.theta = [c * t for c, t in zip(cs, ths)]
            self.bias = [0] * len(ths)
            self.cbits = max(signed_bits(v) for v in self.theta)

    def _constants(self, m, group):
        """Per lane, its channel's theta and b in group ``group`` (padding lanes: theta 1, b 0)."""
        P, G, C = self.P, self.G, len(self.theta)
        th = [Signal(signed(self.cbits), name=f"theta{j}") for j in range(P)]
        bs = [Signal(signed(self.cbits), name=f"bias{j}") for j in range(P)]
        with m.Switch(group):
            for g in range(G):
                with m.Case(g):
                    for j in range(P):
                        o = g * P + j
                        m.d.comb += [th[j].eq(self.theta[o] if o < C else 1), bs[j].eq(self.bias[o] if o < C else 0)]
        return th, bs

    def build(self, m, accs, group, first, en):
        """Adds the lanes to ``m`` (see the class docstring): P spike bits, or for signed neurons P
        (+1 spike, -1 spike) pairs."""
        th, bs = self._constants(m, group)
        spikes = []
        if self.signed:
            for j, a in enumerate(accs):
                v = Signal(signed(self.width), name=f"membrane{j}")
                count = Signal(range(self.steps + 1), name=f"count{j}")
                up, down, after, count_after = signed_update(m, v, count, a, theta=th[j], bias=bs[j], first=first,
                                                             shift=self.layer.shift, width=self.width)
                with m.If(en):
                    m.d.sync += [v.eq(after[:self.width]), count.eq(count_after)]
                spikes.append((up, down))
            return spikes
        if not self.stateful:
            for j, a in enumerate(accs):
                s = Signal(name=f"spike{j}")
                m.d.comb += s.eq(a >= th[j])
                spikes.append(s)
            return spikes
        for j, a in enumerate(accs):
            v = Signal(signed(self.width), name=f"membrane{j}")
            prev = Signal(name=f"fired{j}")
            s, after, _vn = membrane_update(m, v, a, theta=th[j], bias=None if self.bias_in_acc else bs[j], prev=prev,
                                            first=first, layer=self.layer, width=self.width)
            with m.If(en):
                m.d.sync += [v.eq(after[:self.width]), prev.eq(s)]
            spikes.append(s)
        return spikes
