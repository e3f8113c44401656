"""Per-layer weight widths chosen while training (``bitsnn train --precision auto``), after ALBSNN
(Pei, Xu, Wu, Liu, Yang, "ALBSNN: ultra-low latency adaptive local binary spiking neural network
with accuracy loss estimator", Frontiers in Neuroscience 2023).

ALBSNN binarises only the layers whose binarisation costs little accuracy, and measures that cost
during training. Here (docs/model.md, "Per-layer precision", says what is interpreted):

- **Search.** The network trains with every layer at the widest width (8 bits) for the search
  epochs. After each of them the *accuracy-loss estimator* measures, on held-out training images
  (taken out of the training set), what each layer would cost at each narrower width with every
  other layer left as it is: the increase of the cross-entropy and the drop of the accuracy (in
  points). The narrowed layer keeps its pre-activations' size: each neuron's scale takes the
  least-squares factor between its weights at the two widths (:func:`bitsnn.model.layers.width_ratio`),
  and the BatchNorm statistics are estimated anew on the held-out images (for the network as it
  is too), so the estimate is of the weights' error, not of stale normalisation.
- **Choice.** After each search epoch, from the estimates averaged over the search epochs so far
  (:func:`smooth`, an exponential moving average), the widths from :data:`WIDTHS` with the fewest weight bits
  whose summed accuracy drops stay within the budget (``max_loss`` points), or the smallest summed
  drop within ``max_weight_bits`` bits; ties go to the smaller summed loss increase. Every
  combination is tried (at most 4^8). A negative drop (narrower measured better) counts as 0.
- **Fine-tuning.** After the last search epoch the choice is applied (scales rescaled as above)
  and the remaining epochs train the network at its chosen widths. The checkpoint's spec carries
  them, so export writes them into the file as per-layer weight bits.

ALBSNN's *binary weight optimisation* (BWO, "updates the overall weight by directly adjusting the
binary weight", for a network that "reaches the training bottleneck") is
:class:`BinaryWeightOptimiser`: ``--bwo-epochs N`` hands the +-1 layers' weights to it for the
last N epochs (docs/model.md, "Binary weight optimisation", says how it is interpreted).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["WIDTHS", "WIDEST", "MAX_LAYERS", "Budget", "weight_layers", "weight_bits", "measure", "recalibrated", "estimate",
           "smooth", "choose", "apply_widths", "describe_estimate", "parse_bit_budget", "shares",
           "BWO_RATE", "BWO_THRESHOLD", "BinaryWeightOptimiser"]

#: the widths a layer may take: +-1, 2, 4 and 8-bit integers
WIDTHS = (1, 2, 4, 8)
WIDEST = WIDTHS[-1]
#: the weight of the earlier epochs' estimates in the one the choice reads (:func:`smooth`): one
#: epoch's estimate on a few thousand images moves by tenths of a point from epoch to epoch
SMOOTHING = 0.5
#: the most weight layers whose widths are searched (every combination: 4^8 = 65,536)
MAX_LAYERS = 8


@dataclass(frozen=True)
class Budget:
    """At most ``max_loss`` points of estimated accuracy, and/or at most ``max_weight_bits`` bits."""

    max_loss: float | None = None
    max_weight_bits: int | None = None

    def text(self) -> str:
        parts = []
        if self.max_loss is not None:
            parts.append(f"at most {self.max_loss:g} pt estimated accuracy loss")
        if self.max_weight_bits is not None:
            parts.append(f"at most {self.max_weight_bits:,} weight bits")
        return " and ".join(parts)


def parse_bit_budget(text, widest_bits: int) -> int:
    """``--max-weight-bits``: a count of bits, or ``P%`` of the network at the widest width."""
    t = str(text).strip()
    if t.endswith("%"):
        p = float(t[:-1])
        if not 0 < p <= 100:
            raise ValueError(f"--max-weight-bits {text}: a percentage must be in (0, 100]")
        return int(widest_bits * p / 100)
    return int(t)


def weight_layers(model) -> list:
    """The layers whose weights have a width: the hidden layers, then the output layer (unless it
    holds none: a global sum pooling head)."""
    return [layer for layer in (*model.hidden, model.output) if layer.n_weights]


def weight_bits(counts, widths) -> int:
    """Weight bits of layers of ``counts`` weights at ``widths``."""
    return sum(int(n) * int(b) for n, b in zip(counts, widths))


@torch.no_grad()
def measure(model, x, y, batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode (the float path) on images ``x``."""
    was = model.training
    model.eval()
    loss, correct = 0.0, 0
    for lo in range(0, len(x), batch_size):
        tr = model.run(x[lo:lo + batch_size], "float")
        yb = y[lo:lo + batch_size]
        loss += float(F.cross_entropy(tr.logits, yb, reduction="sum"))
        correct += int((tr.logits.argmax(1) == yb).sum())
    model.train(was)
    return loss / len(x), correct / len(x)


@torch.no_grad()
def recalibrated(model, x, y, batch_size: int = 1000) -> tuple[float, float]:
    """:func:`measure` after the BatchNorm statistics are estimated anew on ``x`` (a cumulative
    average over its batches), then put back: what a network whose weights changed computes once
    its normalisation has followed, without any training."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, {k: v.clone() for k, v in m.named_buffers()}) for m in norms]
    was = model.training
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for lo in range(0, len(x), batch_size):
            if len(x) - lo >= 2:  # BatchNorm needs two images
                model.run(x[lo:lo + batch_size], "float")
        return measure(model, x, y, batch_size)
    finally:
        for m, (momentum, bufs) in zip(norms, saved):
            m.momentum = momentum
            for k, v in m.named_buffers():
                v.copy_(bufs[k])
        model.train(was)


@torch.no_grad()
def estimate(model, x, y, batch_size: int = 1000) -> dict:
    """The accuracy-loss estimator: {"loss", "accuracy" (the network as it is), "layers": per
    layer {width: (loss increase, accuracy drop in points)} for each width of :data:`WIDTHS`,
    only that layer at that width (0, 0 at its own)}, each with the BatchNorm statistics
    re-estimated on ``x`` (:func:`recalibrated`)."""
    ref_loss, ref_acc = recalibrated(model, x, y, batch_size)
    layers = []
    for layer in weight_layers(model):
        own = layer.bits
        saved = {k: v.detach().clone() for k, v in layer.named_parameters()}
        row = {}
        for b in WIDTHS:
            if b == own:
                row[b] = (0.0, 0.0)
                continue
            layer.set_bits(b)
            loss, acc = recalibrated(model, x, y, batch_size)
            layer.set_bits(own)
            for k, v in layer.named_parameters():  # the scales exactly as they were
                v.copy_(saved[k])
            row[b] = (loss - ref_loss, 100.0 * (ref_acc - acc))
        layers.append(row)
    return {"loss": ref_loss, "accuracy": ref_acc, "layers": layers}


def smooth(previous: dict | None, est: dict, keep: float = SMOOTHING) -> dict:
    """The estimate the choice reads: ``keep`` x the previous one + (1 - ``keep``) x this epoch's
    (an exponential moving average over the search epochs; the first epoch's as it is)."""
    if previous is None:
        return est
    mix = lambda a, b: tuple(keep * p + (1 - keep) * q for p, q in zip(a, b))  # noqa: E731
    return {"loss": est["loss"], "accuracy": est["accuracy"],
            "layers": [{b: mix(prev[b], row[b]) for b in row} for prev, row in zip(previous["layers"], est["layers"])]}


def choose(est: dict, counts, budget: Budget) -> list[int]:
    """The widths the estimate ``est`` and the ``budget`` give (see the module docstring)."""
    rows = est["layers"]
    if len(rows) > MAX_LAYERS:
        raise ValueError(f"--precision auto searches at most {MAX_LAYERS} weight layers, the network has {len(rows)}")
    best, best_key = None, None
    for widths in itertools.product(WIDTHS, repeat=len(rows)):
        drop = sum(max(0.0, rows[i][b][1]) for i, b in enumerate(widths))
        dloss = sum(max(0.0, rows[i][b][0]) for i, b in enumerate(widths))
        bits = weight_bits(counts, widths)
        if budget.max_loss is not None and drop > budget.max_loss + 1e-9:
            continue
        if budget.max_weight_bits is not None and bits > budget.max_weight_bits:
            continue
        key = (bits, dloss) if budget.max_weight_bits is None else (drop, dloss, bits)
        if best_key is None or key < best_key:
            best, best_key = list(widths), key
    if best is None:  # nothing within a bit budget that the narrowest network exceeds: refused before training
        raise ValueError("no widths fit the budget")
    return best


def apply_widths(model, widths) -> None:
    """Give each weight layer its width (scales rescaled, :meth:`set_bits`) and the model's spec
    the same widths, which the checkpoint stores."""
    from .network import with_layer_bits

    layers = weight_layers(model)
    for layer, b in zip(layers, widths):
        if layer.bits != b:
            layer.set_bits(b)
    # a head without weights keeps its token as it is
    rest = [1] * (len(model.hidden) + 1 - len(layers))
    model.arch["spec"] = with_layer_bits(model.arch["spec"], [*widths, *rest])


def describe_estimate(est: dict, names) -> list[str]:
    """Log lines: per layer, each narrower width's loss increase and accuracy drop."""
    lines = []
    for name, row in zip(names, est["layers"]):
        cells = [f"w{b} {dl:+.4f} / {da:+.2f} pt" for b, (dl, da) in sorted(row.items())]
        lines.append(f"  {name}: " + ", ".join(cells))
    return lines


def shares(counts, widths) -> float:
    """The weight bits at ``widths`` as a share of the same layers at :data:`WIDEST`."""
    return weight_bits(counts, widths) / max(1, weight_bits(counts, [WIDEST] * len(counts)))


#: BWO's averaging rate of each binary weight's gradients, and the averaged gradient that flips it
#: (docs/model.md, "Binary weight optimisation": on conv-tiny 10^-5 and 3 x 10^-5 flipped hundreds
#: to thousands of weights an epoch and cost 0.7 to 1 pt; 10^-4 flips about ten)
BWO_RATE = 1e-3
BWO_THRESHOLD = 1e-4


class BinaryWeightOptimiser:
    """ALBSNN's binary weight optimisation, as bitsnn interprets it: the +-1 weights themselves are
    trained, not latent real weights behind a sign.

    When it starts, each +-1 layer's real weights are replaced by their signs (+-1: the layer
    computes the same, and so does its export), and from then on the training's optimiser leaves
    them alone (their gradients are taken away before its step). Each step, per weight, the
    gradient (straight through the sign) is averaged, m <- (1 - r) m + r g (``rate``), and every
    weight w whose averaged gradient points against its sign by more than ``threshold`` (m w >
    threshold: a smaller w would lower the loss, and w is +1, or the other way round) flips. The
    scales, BatchNorm and biases train on as before, so "the overall weight", scale times sign,
    follows both. Layers with b-bit weights are not its to change. ``flips`` counts the flips."""

    def __init__(self, model, *, rate: float = BWO_RATE, threshold: float = BWO_THRESHOLD):
        from .layers import BinaryConv2d, BinaryLinear, binarize

        # the one branch on the width: only +-1 weights have a sign to flip
        self.params = [m.weight for m in model.modules()
                       if isinstance(m, (BinaryLinear, BinaryConv2d)) and m.bits == 1]
        self.rate, self.threshold = float(rate), float(threshold)
        with torch.no_grad():
            for p in self.params:
                p.copy_(binarize(p))
        self.avg = [torch.zeros_like(p) for p in self.params]
        self.flips = 0

    @property
    def n_weights(self) -> int:
        return sum(p.numel() for p in self.params)

    @torch.no_grad()
    def step(self) -> None:
        """Average the gradients, flip the weights they say are wrong, take the gradients away
        (call after the backward pass and any gradient reduction, before the optimiser's step)."""
        for p, m in zip(self.params, self.avg):
            if p.grad is None:
                continue
            m.mul_(1 - self.rate).add_(p.grad, alpha=self.rate)
            flip = m * p > self.threshold
            p.copy_(torch.where(flip, -p, p))
            self.flips += int(flip.sum())
            p.grad = None
