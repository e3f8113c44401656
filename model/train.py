"""Training: ``bitsnn train`` and the functions behind it.

Adam with a per-step cosine learning-rate schedule, cross-entropy on the logits s*a plus the
sparsity term ``lambda * mean firing rate`` (mean over the hidden layers), random +-2 px shifts
as augmentation. Deterministic for a given seed: torch.manual_seed, deterministic algorithms, a
seeded generator for shuffling and augmentation (drawn on the CPU whatever the device).

Checkpoint (written atomically, read with ``torch.load(weights_only=True)``)::

    {"config": {...JSON-able TrainConfig + "arch"...}, "state_dict": {...}, "metrics": {...}}
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import sys
import time
import warnings
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from bitsnn import BitsnnError, __version__, kinds
from bitsnn.fileio import CHECKPOINT, atomic_path, check_output_file
from bitsnn.options import FLOAT32_MAX, MAX_LR

from bitsnn.hwmodel import CODINGS_OF, time_text

from . import distributed, precision
from .network import PRESETS, BitSNN, build_model, normalise_time, parse_spec, spec_classes, with_weight_bits

__all__ = [
    "TrainConfig",
    "resolve_config",
    "train_model",
    "evaluate",
    "save_checkpoint",
    "load_checkpoint",
    "train_checkpoint",
    "train_main",
    "shift_images",
]


#: a lif neuron's leak shift when none is given: V <- V - (V >> 3), a decay of 7/8 a step (snnTorch's
#: tutorials take 0.9)
DEFAULT_LEAK = 3
#: the widest quantised activation --act-bits takes (T = 2^b - 1 steps)
MAX_ACT_BITS = 4
#: the neuron model a quantised ANN converts to (Fast-SNN's signed integrate and fire)
ANN_NEURON = next(name for name, nm in kinds.NEURONS.items() if nm.signed)


@dataclass
class TrainConfig:
    """Everything that determines a training run (JSON round-trip via asdict / TrainConfig(**d))."""

    #: preset name or layer spec as given by the user
    preset: str = "tiny"
    #: layer spec, e.g. 576-160-10
    spec: str = "576-160-10"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-2
    #: weight of the firing-rate regulariser: loss += sparsity * mean hidden firing rate
    sparsity: float = 0.0
    #: "box" (BitSNN), "s2nn" (Suetake et al.), "ste"
    surrogate: str = "box"
    #: "spikes" (x >= input_threshold) or "pixels" (8-bit into the first layer)
    input_encoding: str = "spikes"
    input_threshold: int = 128
    #: random shift of +-shift pixels per training image (0: none)
    shift: int = 2
    #: central crop: the network takes the central crop x crop window of each image (0: whole
    #: images); the spec's input size must then be crop * crop
    crop: int = 0
    seed: int = 0
    #: train on the first N images only (None: all)
    limit_train: int | None = None
    #: torch device; None picks cuda when present, else cpu
    device: str | None = None
    #: torch CPU threads while training: the float reductions' order depends on it, so a seed
    #: gives the same model only at the same count (1 by default: the same on any machine's core
    #: count; the MLP presets train fastest on one thread on the 2-core reference machine)
    threads: int = 1
    #: time steps per inference, and the input coding per step (None: the one-step default of
    #: the input encoding: direct pixels or threshold spikes; "rate" takes ``rate_seed``)
    timesteps: int = 1
    coding: str | None = None
    rate_seed: int | None = None
    #: the hidden layers' neuron model (bitsnn.kinds.NEURONS), a lif neuron's leak shift k
    #: (V <- V - (V >> k) each step, 1..16) and a stateful neuron's reset
    neuron: str = "step"
    leak: int = 0
    reset: str = "subtract"
    #: Fast-SNN: train a quantised ANN of b-bit activations and convert it to signed_if neurons
    #: over T = 2^b - 1 steps (sets ``neuron`` and ``timesteps``), then fine-tune the converted
    #: layers one by one for ``finetune_epochs`` epochs each (0: none)
    act_bits: int | None = None
    finetune_epochs: int = 0
    #: train in float64 instead of float32 (slower; what shows that N processes compute the
    #: model one process computes, without float32 rounding that a sign() later amplifies)
    float64: bool = False
    #: the layers' weight widths: "spec" (as the spec gives them) or "auto" (ALBSNN's accuracy-loss
    #: estimator picks each from 1, 2, 4, 8 bits: :mod:`bitsnn.model.precision`) within at most
    #: ``max_loss`` points of estimated accuracy (0.1 when no budget is given) and/or
    #: ``max_weight_bits`` (bits, or "P%" of the network at 8 bits); the estimator runs on the
    #: last ``holdout`` training images (default: a sixth of them, at most 5,000), which are not
    #: trained on, after each of the first ``search_epochs`` epochs (default: half of them)
    precision: str = "spec"
    max_loss: float | None = None
    max_weight_bits: str | None = None
    search_epochs: int | None = None
    holdout: int | None = None
    #: ALBSNN's binary weight optimisation: the last ``bwo_epochs`` epochs train the +-1 layers'
    #: weights by flipping them directly (:class:`bitsnn.model.precision.BinaryWeightOptimiser`)
    bwo_epochs: int = 0

    @property
    def leak_m(self) -> int:
        """The file's leak m of the shift ``leak`` k: V - ((V * m) >> 16) is V - (V >> k); 0: none."""
        return 1 << (16 - self.leak) if self.leak else 0

    def arch(self, image_shape) -> dict:
        """The architecture dict for a data set of ``image_shape`` images."""
        image_shape = [int(d) for d in image_shape]
        a = {
            "spec": self.spec,
            "input_shape": image_shape,
            "input_encoding": self.input_encoding,
            "input_threshold": int(self.input_threshold),
            "surrogate": self.surrogate,
            "timesteps": self.timesteps,
            "input_coding": self.coding or CODINGS_OF[self.input_encoding][0],
            "input_seed": self.rate_seed,
            "neuron": self.neuron,
            "leak": self.leak_m,
            "reset": self.reset,
        }
        if self.crop:
            c = int(self.crop)
            if len(image_shape) != 2 or not 0 < c < min(image_shape):
                raise ValueError(f"--crop {c}: needs 2-D images larger than {c}x{c}, the data set's are "
                                 + "x".join(map(str, image_shape)))
            ih, iw = image_shape
            a["input_shape"] = [c, c]
            a["input_crop"] = [ih, iw, (ih - c) // 2, (iw - c) // 2]
        return a


def resolve_config(preset: str = "tiny", **overrides) -> TrainConfig:
    """A TrainConfig from a preset name (or a layer spec) and non-None overrides."""
    if preset in PRESETS:
        p = PRESETS[preset]
        base = TrainConfig(preset=preset, **p)
    else:
        try:
            parse_spec(preset)
        except ValueError as e:
            raise BitsnnError(f"--preset: not one of {', '.join(PRESETS)} and {e}") from None
        base = TrainConfig(preset=preset, spec=preset)
    for k, v in overrides.items():
        if v is not None:
            if not hasattr(base, k):
                raise TypeError(f"unknown training option {k!r}")
            setattr(base, k, v)
    # Every option is checked here, where the CLI, the flow and Python callers all pass: a run
    # that cannot give a model is refused before any data is loaded.
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if not is_int(base.epochs) or base.epochs < 1:
        raise BitsnnError(f"--epochs must be a positive integer, got {base.epochs!r}")
    if not is_int(base.batch_size) or base.batch_size < 2:
        raise BitsnnError(f"--batch-size must be an integer >= 2 (BatchNorm needs two images to normalise), "
                          f"got {base.batch_size!r}")
    if not isinstance(base.lr, (int, float)) or not 0 < base.lr <= MAX_LR:
        raise BitsnnError(f"--lr must be a finite number > 0 and <= {MAX_LR:g}, got {base.lr!r}")
    if not is_int(base.seed) or base.seed < 0:
        raise BitsnnError(f"--seed must be a non-negative integer, got {base.seed!r}")
    if overrides.get("spec") is not None:
        try:
            parse_spec(base.spec)
        except ValueError as e:
            raise BitsnnError(f"--spec: {e}") from None
    if not 1 <= base.input_threshold <= 255:
        raise BitsnnError(f"--input-threshold must be in 1..255, got {base.input_threshold}")
    if not isinstance(base.sparsity, (int, float)) or not 0 <= base.sparsity <= FLOAT32_MAX:
        raise BitsnnError(f"--sparsity must be a finite number >= 0 (a float32), got {base.sparsity!r}")
    if base.threads < 1:
        raise BitsnnError(f"--threads must be >= 1, got {base.threads}")
    if base.crop < 0:
        raise BitsnnError(f"--crop must be >= 0, got {base.crop}")
    if base.act_bits is not None:
        if not is_int(base.act_bits) or not 1 <= base.act_bits <= MAX_ACT_BITS:
            raise BitsnnError(f"--act-bits must be 1..{MAX_ACT_BITS}, got {base.act_bits!r}")
        T = (1 << base.act_bits) - 1
        if overrides.get("timesteps") not in (None, T):
            raise BitsnnError(f"--act-bits {base.act_bits} runs T = 2^{base.act_bits} - 1 = {T} steps, not --steps "
                              f"{overrides['timesteps']}")
        if overrides.get("neuron") not in (None, ANN_NEURON):
            raise BitsnnError(f"--act-bits converts to {ANN_NEURON} neurons, not --neuron {overrides['neuron']}")
        base.timesteps, base.neuron = T, ANN_NEURON
    trained_as_ann = base.neuron in kinds.NEURONS and kinds.neuron(base.neuron).signed
    if not is_int(base.finetune_epochs) or base.finetune_epochs < 0:
        raise BitsnnError(f"--finetune-epochs must be a non-negative integer, got {base.finetune_epochs!r}")
    if base.finetune_epochs and not trained_as_ann:
        raise BitsnnError(f"--finetune-epochs fine-tunes a converted quantised ANN: give --act-bits ({ANN_NEURON} "
                          "neurons)")
    if trained_as_ann and (base.coding or CODINGS_OF[base.input_encoding][0]) not in ("direct", "threshold"):
        raise BitsnnError(f"{base.neuron} neurons train as a quantised ANN of one input: direct or threshold coding, "
                          f"not {base.coding}")
    if base.neuron in kinds.NEURONS and kinds.neuron(base.neuron).leak_problem(0):
        base.leak = base.leak or DEFAULT_LEAK  # a model that needs a leak, none given
    elif base.leak:
        raise BitsnnError(f"--leak {base.leak}: {base.neuron} neurons have no leak (lif neurons do)")
    if not is_int(base.leak) or not 0 <= base.leak <= 16:
        raise BitsnnError(f"--leak must be a shift of 1..16, got {base.leak!r}")
    try:
        normalise_time({"input_encoding": base.input_encoding, "input_shape": [28, 28], "timesteps": base.timesteps,
                        "input_coding": base.coding or CODINGS_OF[base.input_encoding][0], "input_seed": base.rate_seed,
                        "neuron": base.neuron, "leak": base.leak_m,
                        "reset": base.reset})
    except (ValueError, KeyError) as e:
        raise BitsnnError(str(e).strip('"')) from None
    _check_precision(base, is_int)
    if base.limit_train is not None and (not is_int(base.limit_train) or base.limit_train < 2):
        raise BitsnnError(f"--limit-train must be an integer >= 2 (BatchNorm needs two images to normalise), "
                          f"got {base.limit_train!r}")
    return base


def search_epochs_of(cfg: TrainConfig) -> int:
    """``--precision auto``'s search epochs: as given, or half the epochs (at least one)."""
    return cfg.search_epochs or max(1, cfg.epochs // 2)


def _check_precision(base: TrainConfig, is_int) -> None:
    if base.precision not in PRECISIONS:
        raise BitsnnError(f"--precision must be one of {', '.join(PRECISIONS)}, got {base.precision!r}")
    auto = base.precision == "auto"
    for name, flag in (("max_loss", "--max-loss"), ("max_weight_bits", "--max-weight-bits"),
                       ("search_epochs", "--search-epochs")):
        if getattr(base, name) is not None and not auto:
            raise BitsnnError(f"{flag} belongs to --precision auto")
    if base.max_loss is not None and (not isinstance(base.max_loss, (int, float)) or isinstance(base.max_loss, bool)
                                      or not 0 <= base.max_loss <= 100):
        raise BitsnnError(f"--max-loss must be a number of accuracy points in 0..100, got {base.max_loss!r}")
    if base.max_weight_bits is not None:
        try:
            budget = precision.parse_bit_budget(base.max_weight_bits, 1 << 40)
        except ValueError as e:
            msg = str(e) if "%" in str(e) else f"--max-weight-bits must be a bit count or a percentage such as 80%, " \
                f"got {base.max_weight_bits!r}"
            raise BitsnnError(msg) from None
        if budget <= 0:
            raise BitsnnError(f"--max-weight-bits must be positive, got {base.max_weight_bits!r}")
        base.max_weight_bits = str(base.max_weight_bits).strip()
    if base.search_epochs is not None and (not is_int(base.search_epochs) or not 1 <= base.search_epochs <= base.epochs):
        raise BitsnnError(f"--search-epochs must be in 1..{base.epochs} (the epochs), got {base.search_epochs!r}")
    if not is_int(base.bwo_epochs) or not 0 <= base.bwo_epochs <= base.epochs:
        raise BitsnnError(f"--bwo-epochs must be in 0..{base.epochs} (the epochs), got {base.bwo_epochs!r}")
    if auto and base.bwo_epochs > base.epochs - search_epochs_of(base):
        raise BitsnnError(f"--bwo-epochs {base.bwo_epochs}: BWO runs after the width search, in the last "
                          f"{base.epochs - search_epochs_of(base)} epochs at most")
    if base.holdout is not None and not auto:
        raise BitsnnError("--holdout belongs to --precision auto")
    if base.holdout is not None and (not is_int(base.holdout) or base.holdout < 1):
        raise BitsnnError(f"--holdout must be a positive integer, got {base.holdout!r}")


#: ``--precision auto``'s accuracy budget when none is given, in points (ALBSNN's claim: the
#: accuracy of the wider network at more than 20 % fewer weight bits)
DEFAULT_MAX_LOSS = 0.1
#: at most this many training images are held out for the estimator
DEFAULT_HOLDOUT = 5000
#: ``--precision``: the spec's widths, or ALBSNN's choice (:mod:`bitsnn.model.precision`)
PRECISIONS = ("spec", "auto")


def pick_device(name: str | None) -> torch.device:
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise BitsnnError(f"--device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BitsnnError(f"--device {name}: CUDA is not available")
    return dev


def set_determinism(seed: int) -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def shift_images(images: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each (H, W) image by a random (dy, dx) in [-shift, shift]^2, zero fill."""
    if shift <= 0:
        return images
    b, h, w = images.shape
    d = torch.randint(-shift, shift + 1, (2, b), generator=gen).to(images.device)
    padded = F.pad(images, (shift, shift, shift, shift))
    rows = (shift - d[0])[:, None] + torch.arange(h, device=images.device)[None, :]
    cols = (shift - d[1])[:, None] + torch.arange(w, device=images.device)[None, :]
    bi = torch.arange(b, device=images.device)[:, None, None]
    return padded[bi, rows[:, :, None], cols[:, None, :]]


@torch.no_grad()
def evaluate(model: BitSNN, images, labels, *, path: str | None = None, batch_size: int = 1000,
             device: torch.device | None = None, group: distributed.Group | None = None) -> dict:
    """Accuracy and per-layer firing rates on a uint8 image set (eval mode); with a process
    ``group``, each process takes its share of the images and all get the sums."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    x_all = torch.as_tensor(np.asarray(images))
    y_all = torch.as_tensor(np.asarray(labels)).long()
    n = len(x_all)
    if group is not None:
        x_all, y_all = x_all[group.part(n)], y_all[group.part(n)]
    correct, rates = 0, None
    for lo in range(0, len(x_all), batch_size):
        x = x_all[lo : lo + batch_size].to(device)
        tr = model.run(x, path)
        correct += int((tr.classes.cpu() == y_all[lo : lo + batch_size]).sum())
        r = [float(s.abs().sum()) / s[0].numel() for s in tr.spikes]  # spikes of either sign
        rates = r if rates is None else [a + b for a, b in zip(rates, r)]
    model.train(was_training)
    if group is not None:
        k = len(model.hidden)
        sums = group.all_sum(torch.tensor([correct] + (rates or [0.0] * k), dtype=torch.float64))
        correct, rates = int(sums[0]), [float(v) for v in sums[1:]]
    return {"accuracy": correct / n if n else float("nan"), "firing_rates": [r / n for r in (rates or [])]}


def train_model(cfg: TrainConfig, dataset, *, progress: bool | None = None, log=print) -> tuple[BitSNN, dict]:
    """Train a BitSNN on ``dataset`` (a bitsnn.data.Dataset); returns (model in eval mode, metrics).

    ``progress``: a live bar per epoch on stderr (default: only when stderr is a terminal; a log
    gets the one line per epoch that ``log`` prints). A non-finite loss stops training with a
    BitsnnError."""
    if progress is None:
        progress = sys.stderr.isatty()
    set_determinism(cfg.seed)
    group = distributed.current()
    device = group.device if group else pick_device(cfg.device)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, dataset, device, progress=progress, log=log, group=group)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg: TrainConfig, dataset, device, *, progress: bool, log,
           group: distributed.Group | None = None) -> tuple[BitSNN, dict]:
    input_shape = dataset.train_images.shape[1:]
    auto = cfg.precision == "auto"
    try:
        arch = cfg.arch(input_shape)
        if auto:  # the search trains every layer at the widest width
            arch["spec"] = with_weight_bits(arch["spec"], precision.WIDEST)
        model = build_model(arch)
    except ValueError as e:
        raise BitsnnError(str(e)) from None
    n_classes = spec_classes(cfg.spec)
    if dataset.num_classes > n_classes:
        raise BitsnnError(f"the data set has {dataset.num_classes} classes but the spec ends in {n_classes}")
    model.to(device, torch.float64 if cfg.float64 else torch.float32)
    if group is not None:
        if cfg.batch_size < group.world:
            raise BitsnnError(f"--batch-size {cfg.batch_size} gives {group.world} processes less than a row each")
        distributed.global_batchnorm(model)
        distributed.sync_state(model, group)

    n = len(dataset.train_images) if cfg.limit_train is None else min(cfg.limit_train, len(dataset.train_images))
    search = _precision_search(cfg, model, dataset, n, group) if auto else None
    if search:
        n -= len(search["y"])
    x_train = torch.as_tensor(dataset.train_images[:n]).to(device)
    y_train = torch.as_tensor(dataset.train_labels[:n]).long().to(device)
    gen = torch.Generator().manual_seed(cfg.seed)

    if n < 2:
        raise BitsnnError(f"the data set has {n} training image(s); training needs at least 2 (BatchNorm)")
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    if n % cfg.batch_size == 1 and steps_per_epoch > 1:
        steps_per_epoch -= 1  # a last batch of one image joins the one before (BatchNorm cannot take it alone)
    total = max(1, cfg.epochs * steps_per_epoch)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))

    history = []
    t_start = time.perf_counter()
    bwo = None
    for epoch in range(cfg.epochs):
        if cfg.bwo_epochs and epoch == cfg.epochs - cfg.bwo_epochs:
            bwo = precision.BinaryWeightOptimiser(model)
            log(f"BWO: the last {cfg.bwo_epochs} epoch(s) flip the {bwo.n_weights:,} +-1 weights directly"
                if bwo.params else "BWO: the network has no +-1 weights to flip")
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum, correct, rate_sums = 0.0, 0, None
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=not progress, leave=False, mininterval=1.0, file=sys.stderr)
        for step in bar:
            idx = perm[step * cfg.batch_size : n if step == steps_per_epoch - 1 else (step + 1) * cfg.batch_size]
            xb = shift_images(x_train[idx], cfg.shift, gen) if cfg.shift else x_train[idx]
            yb = y_train[idx]
            share = 1.0
            if group is not None:  # the global batch drawn the same in every process; this one's rows
                rows = group.part(len(idx))
                xb, yb, share = xb[rows], yb[rows], (rows.stop - rows.start) / len(idx)
            tr = model.run(xb, "float")
            rates = tr.firing_rates()
            loss = F.cross_entropy(tr.logits, yb)
            if cfg.sparsity and rates:
                loss = loss + cfg.sparsity * torch.stack(rates).mean()
            opt.zero_grad(set_to_none=True)
            (loss * share if group is not None else loss).backward()
            with torch.no_grad():
                stats = torch.stack([t.to(model.dtype) for t in
                                     [loss.detach() * share, (tr.logits.detach().argmax(1) == yb).sum()]
                                     + [x.detach() * share for x in rates]])
                if group is not None:
                    stats = distributed.sum_gradients(params, stats, group)
            lv = float(stats[0])
            if not math.isfinite(lv):
                raise BitsnnError(f"training diverged: the loss is {lv} at epoch {epoch + 1}, step {step + 1} "
                                  f"(lr {cfg.lr:g}, sparsity {cfg.sparsity:g}); nothing was written")
            if bwo is not None:
                bwo.step()
            opt.step()
            sched.step()
            loss_sum += lv * len(idx)
            correct += int(stats[1])
            r = [float(x) * len(idx) for x in stats[2:]]
            rate_sums = r if rate_sums is None else [a + b for a, b in zip(rate_sums, r)]
            if progress and step % 20 == 0:
                bar.set_postfix(loss=f"{lv:.3f}")
        bar.close()
        train_time = time.perf_counter() - t0
        if not all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point()):
            raise BitsnnError(f"training diverged: the parameters are not finite after epoch {epoch + 1} "
                              f"(lr {cfg.lr:g}, sparsity {cfg.sparsity:g}); nothing was written")
        test = evaluate(model, dataset.test_images, dataset.test_labels, device=device, group=group)
        rec = {
            "epoch": epoch + 1,
            "loss": loss_sum / n,
            "train_accuracy": correct / n,
            "train_firing_rates": [r / n for r in (rate_sums or [])],
            "test_accuracy": test["accuracy"],
            "test_firing_rates": test["firing_rates"],
            "epoch_seconds": train_time,
            "lr": sched.get_last_lr()[0],
        }
        if bwo is not None:
            rec["bwo_flips"], bwo.flips = bwo.flips, 0
        history.append(rec)
        log(
            f"epoch {epoch + 1}/{cfg.epochs}: loss {rec['loss']:.4f}  train acc {rec['train_accuracy']:.4f}  "
            f"test acc {rec['test_accuracy']:.4f}  firing rates "
            + "/".join(f"{r:.3f}" for r in rec["train_firing_rates"])
            + f"  ({train_time:.1f} s)"
            + (f"  BWO flips {rec['bwo_flips']:,}" if bwo is not None and bwo.params else "")
        )
        if search and epoch < search["epochs"]:
            _precision_step(model, search, epoch, device, log)
    model.eval()
    if group is not None:
        distributed.local_batchnorm(model)
        if group.rank:  # rank 0 alone goes on: fine-tuning, the final checks, the checkpoint
            return model, {}
    tuned = None
    if model.one_pass and cfg.finetune_epochs and len(model.hidden) > 1:
        tuned = finetune_layers(model, x_train, y_train, epochs=cfg.finetune_epochs, batch_size=cfg.batch_size,
                                gen=gen, log=log)
    final = evaluate(model, dataset.test_images, dataset.test_labels, device=device)
    conversion = None
    if model.one_pass:
        conversion = conversion_check(model, dataset.test_images, dataset.test_labels, device=device)
        T = model.timesteps
        log(f"conversion: quantised ANN test accuracy {conversion['qann_accuracy']:.4f}, signed-IF SNN over "
            f"{T} step{'s' if T != 1 else ''} (integer) {conversion['snn_accuracy']:.4f}; spike count = ANN level in "
            + ", ".join(f"layer {i} {100 * v:.2f} %" for i, v in enumerate(conversion["level_agreement"]))
            + " of the neurons")
    metrics = {
        "test_accuracy": final["accuracy"],
        "test_firing_rates": final["firing_rates"],
        "train_images": n,
        "train_seconds": time.perf_counter() - t_start,
        "device": str(device),
        "dataset": dataset.name,
        "history": history,
        **({"conversion": conversion} if conversion else {}),
        **({"finetune": tuned} if tuned else {}),
        **({"precision": search["record"]} if search else {}),
    }
    return model, metrics


def _precision_search(cfg: TrainConfig, model: BitSNN, dataset, n: int, group) -> dict:
    """``--precision auto``'s set-up, every check before training: the held-out images, the layers'
    weight counts, the budget (:mod:`bitsnn.model.precision`)."""
    if group is not None:
        raise BitsnnError("--precision auto trains in one process: leave out --nproc")
    layers = precision.weight_layers(model)
    if len(layers) > precision.MAX_LAYERS:
        raise BitsnnError(f"--precision auto searches at most {precision.MAX_LAYERS} weight layers; "
                          f"{cfg.spec} has {len(layers)}")
    hold = cfg.holdout if cfg.holdout is not None else max(1, min(DEFAULT_HOLDOUT, n // 6))
    if n - hold < 2:
        raise BitsnnError(f"--holdout {hold} leaves {max(0, n - hold)} of the {n} training images to train on; "
                          "it needs at least 2")
    counts = [layer.n_weights for layer in layers]
    widest = precision.weight_bits(counts, [precision.WIDEST] * len(counts))
    narrowest = precision.weight_bits(counts, [precision.WIDTHS[0]] * len(counts))
    max_bits = None if cfg.max_weight_bits is None else precision.parse_bit_budget(cfg.max_weight_bits, widest)
    if max_bits is not None and max_bits < narrowest:
        raise BitsnnError(f"--max-weight-bits {cfg.max_weight_bits}: {max_bits:,} bits, fewer than the {narrowest:,} of "
                          f"every layer at {precision.WIDTHS[0]} bit")
    budget = precision.Budget(max_loss=cfg.max_loss if cfg.max_loss is not None or max_bits is not None
                              else DEFAULT_MAX_LOSS, max_weight_bits=max_bits)
    lo = n - hold
    return {
        "x": torch.as_tensor(dataset.train_images[lo:n]),
        "y": torch.as_tensor(dataset.train_labels[lo:n]).long(),
        "epochs": search_epochs_of(cfg),
        "counts": counts,
        "budget": budget,
        "names": [f"layer {i} ({re.sub(r'w[0-9]+$', '', tok)})" for i, tok in enumerate(str(cfg.spec).split("-")[1:])
                  if i < len(layers)],
        "record": {"widths_tried": list(precision.WIDTHS), "holdout_images": hold, "weight_counts": counts,
                   "smoothing": precision.SMOOTHING,
                   "widest_weight_bits": widest, "budget": {"max_loss": budget.max_loss, "max_weight_bits": max_bits},
                   "history": []},
    }


def _precision_step(model: BitSNN, search: dict, epoch: int, device, log) -> None:
    """After search epoch ``epoch`` (0-based): the estimator, the choice, and after the last search
    epoch, the chosen widths applied."""
    x, y = search["x"].to(device), search["y"].to(device)
    t0 = time.perf_counter()
    est = precision.estimate(model, x, y)
    search["smoothed"] = precision.smooth(search.get("smoothed"), est)
    widths = precision.choose(search["smoothed"], search["counts"], search["budget"])
    counts, rec = search["counts"], search["record"]
    bits = precision.weight_bits(counts, widths)
    log(f"precision: epoch {epoch + 1} estimator on {len(y)} held-out images (loss increase / accuracy drop with only "
        f"that layer at a width, BatchNorm statistics re-estimated; all at {precision.WIDEST} bits: loss {est['loss']:.4f}, accuracy {est['accuracy']:.4f}):")
    for line in precision.describe_estimate(est, search["names"]):
        log(line)
    log(f"precision: choice {'-'.join(f'w{b}' for b in widths)} (from the estimates averaged over the epochs so far): "
        f"{bits:,} weight bits, "
        f"{100 * precision.shares(counts, widths):.1f} % of {rec['widest_weight_bits']:,} at {precision.WIDEST} bits "
        f"({search['budget'].text()}; {time.perf_counter() - t0:.1f} s)")
    rec["history"].append({"epoch": epoch + 1, "loss": est["loss"], "accuracy": est["accuracy"],
                           "estimator": [{str(b): list(v) for b, v in row.items()} for row in est["layers"]],
                           "smoothed": [{str(b): list(v) for b, v in row.items()}
                                        for row in search["smoothed"]["layers"]],
                           "choice": widths, "weight_bits": bits})
    if epoch + 1 == search["epochs"]:
        precision.apply_widths(model, widths)
        loss, acc = precision.recalibrated(model, x, y)
        rec.update(widths=widths, weight_bits=bits, spec=model.arch["spec"], applied_after_epoch=epoch + 1,
                   holdout_accuracy_at_choice=acc)
        log(f"precision: the layers train at {model.arch['spec']} from here (held-out loss {loss:.4f}, "
            f"accuracy {acc:.4f} with the chosen widths before fine-tuning, BatchNorm statistics re-estimated)")


#: training images the layer-wise fine-tuning judges each epoch on (the authors use the training set)
FINETUNE_CHECK_IMAGES = 5000


def finetune_layers(model: BitSNN, x_train, y_train, *, epochs: int, batch_size: int, gen, lr: float = 1e-3,
                    log=print) -> list[dict]:
    """Fast-SNN's layer-wise fine-tuning of a converted network (the authors' ``snn_ft.py``): each
    hidden layer after the first, in order, learns to give the quantised ANN's activations from the
    converted network's input. Per batch, the layer's ANN form runs on the previous layer's spike
    counts / T (differentiable); its output takes the converted layer's own value (its net spike
    counts / T, straight through) and the MSE to the ANN's activations (a copy of the trained ANN,
    fixed) trains the layer's weights, BatchNorm and bias (not its clip), by SGD with momentum 0.9
    and weight decay 5e-4. An epoch is kept only when it raises the converted network's accuracy
    on the first :data:`FINETUNE_CHECK_IMAGES` training images; otherwise the layer goes back."""
    import copy

    teacher = copy.deepcopy(model).eval()
    T = model.timesteps
    x_check, y_check = x_train[:FINETUNE_CHECK_IMAGES], y_train[:FINETUNE_CHECK_IMAGES]
    best = evaluate(model, x_check.cpu(), y_check.cpu(), path="exact")["accuracy"]
    log(f"fine-tuning layer by layer: the converted network's accuracy on {len(x_check)} training images {best:.4f}")
    report = []
    n = len(x_train)
    for l in range(1, len(model.hidden)):
        layer = model.hidden[l]
        params = [p for name, p in layer.named_parameters() if name != "act.alpha"]
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
        for epoch in range(epochs):
            kept = copy.deepcopy(layer.state_dict())
            loss_sum = 0.0
            perm = torch.randperm(n, generator=gen).to(x_train.device)
            for lo in range(0, n - 1, batch_size):
                xb = x_train[perm[lo:lo + batch_size]]
                with torch.no_grad():
                    h_q = teacher.encode(xb)
                    for j in range(l + 1):
                        h_q = teacher.hidden[j].forward_float(h_q, 1, True)
                    h, static = model.encode(xb), model.static_input
                    for j in range(l):
                        _, h = model.hidden[j].forward_exact(h, T, static)
                        static = False
                    _, out = layer.forward_exact(h, T, False)
                    u_in = h.reshape(T, -1, *h.shape[1:]).sum(0) / T
                    u_out = out.reshape(T, -1, *out.shape[1:]).sum(0) / T
                pred = layer.forward_float(u_in, 1, True)
                pred = pred + (u_out.to(pred.dtype) - pred).detach()  # the converted layer's value, the ANN's gradient
                loss = F.mse_loss(pred, h_q)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach()) * len(xb)
            acc = evaluate(model, x_check.cpu(), y_check.cpu(), path="exact")["accuracy"]
            keep = acc > best
            if keep:
                best = acc
            else:
                layer.load_state_dict(kept)
            rec = {"layer": l, "epoch": epoch + 1, "mse": loss_sum / n, "accuracy": acc, "kept": keep}
            report.append(rec)
            log(f"fine-tune layer {l}, epoch {epoch + 1}/{epochs}: MSE to the ANN {rec['mse']:.5f}, converted network "
                f"{acc:.4f} on {len(x_check)} training images, " + ("kept" if keep else "not better: undone"))
    return report


@torch.no_grad()
def conversion_check(model: BitSNN, images, labels, *, batch_size: int = 1000, device=None) -> dict:
    """Fast-SNN's conversion on a set: the quantised ANN's accuracy (the float path, one pass), the
    converted signed-IF network's (the integer path over T steps), and per hidden layer the share
    of neurons whose net spike count over the steps equals the ANN's activation level (u * T)."""
    device = device or next(model.parameters()).device
    T = model.timesteps
    x_all, y_all = torch.as_tensor(np.asarray(images)), torch.as_tensor(np.asarray(labels)).long()
    q_ok = s_ok = 0
    same = None
    for lo in range(0, len(x_all), batch_size):
        x = x_all[lo : lo + batch_size].to(device)
        y = y_all[lo : lo + batch_size]
        q, e = model.run(x, "float"), model.run(x, "exact")
        q_ok += int((q.logits.argmax(1).cpu() == y).sum())
        s_ok += int((e.classes.cpu() == y).sum())
        # the integer path's spikes: (B, n) at one step, (B, T, n) over several
        eq = [float((torch.round(qs * T).cpu() == (es if T == 1 else es.sum(1)).cpu()).float().sum())
              for qs, es in zip(q.spikes, e.spikes)]
        same = eq if same is None else [a + b for a, b in zip(same, eq)]
    n = len(x_all)
    return {"qann_accuracy": q_ok / n, "snn_accuracy": s_ok / n,
            "level_agreement": [v / (n * s.shape[-1]) for v, s in zip(same or [], q.spikes)]}


#: the time and precision options at their defaults, left out of a checkpoint's config (a
#: one-step model's config stays what it was before there were time steps)
_TIME_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)
                  if f.name in ("timesteps", "coding", "rate_seed", "neuron", "leak", "reset", "act_bits",
                                "finetune_epochs", "float64", "precision", "max_loss", "max_weight_bits",
                                "search_epochs", "holdout", "bwo_epochs")}


def checkpoint_config(cfg: TrainConfig, model: BitSNN) -> dict:
    d = {k: v for k, v in asdict(cfg).items() if not (k in _TIME_DEFAULTS and v == _TIME_DEFAULTS[k])}
    d["arch"] = dict(model.arch)
    d["bitsnn_version"] = __version__
    return d


def save_checkpoint(path, model: BitSNN, cfg: TrainConfig | dict, metrics: dict | None = None) -> Path:
    """Write {"config", "state_dict", "metrics"} atomically; tensors moved to the CPU."""
    config = checkpoint_config(cfg, model) if isinstance(cfg, TrainConfig) else dict(cfg, arch=dict(model.arch))
    json.dumps(config)  # must be JSON-able
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    obj = {"config": config, "state_dict": state, "metrics": json.loads(json.dumps(metrics or {}))}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def _state_dict_problem(e: Exception) -> str:
    """The first specific line of torch's load_state_dict error (its first line says only
    "Error(s) in loading state_dict for BitSNN:")."""
    lines = [l.strip() for l in str(e).splitlines() if l.strip()] or [type(e).__name__]
    text = lines[1] if len(lines) > 1 else lines[0]
    return text[:200] + ("..." if len(text) > 200 else "")


def load_checkpoint(path) -> tuple[BitSNN, dict, dict]:
    """(model in eval mode on the CPU, config, metrics) from a checkpoint written by save_checkpoint."""
    path = Path(path)
    if path.is_dir():
        raise BitsnnError(f"checkpoint {path} is a directory; give the checkpoint file")
    if not path.is_file():
        raise BitsnnError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise BitsnnError(f"cannot read checkpoint {path}: not a torch.save archive (bitsnn train writes one)")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are not the user's business
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise BitsnnError(f"cannot read checkpoint {path}: it holds objects other than tensors and plain data, "
                          "which bitsnn does not load (a bitsnn checkpoint holds only those)") from None
    except Exception as e:  # torch raises many types for a bad file
        first = (str(e).strip().splitlines() or [e.__class__.__name__])[0]
        raise BitsnnError(f"cannot read checkpoint {path}: a damaged torch.save archive ({first[:100]})") from None
    if not isinstance(obj, dict) or not {"config", "state_dict"} <= obj.keys() or not isinstance(obj["config"], dict) \
            or "arch" not in obj["config"]:
        raise BitsnnError(f"{path} is not a bitsnn checkpoint (needs config with arch, and state_dict)")
    arch, state = obj["config"]["arch"], obj["state_dict"]
    if not isinstance(arch, dict):
        raise BitsnnError(f"{path}: the checkpoint's config.arch must be a table of settings, got {type(arch).__name__}")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BitsnnError(f"{path}: the checkpoint's state_dict must map names to tensors")
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = "NaN" if bool(torch.isnan(t).any()) else "inf"
            raise BitsnnError(f"{path}: the checkpoint's {name} holds {bad}; it cannot give integer thresholds")
    try:
        model = build_model(arch)
    except (ValueError, TypeError, KeyError) as e:
        raise BitsnnError(f"{path}: the checkpoint's config.arch is not an architecture bitsnn builds: "
                          f"{(str(e).splitlines() or [type(e).__name__])[0]}") from None
    try:
        model.load_state_dict(state)
    except (ValueError, RuntimeError, KeyError) as e:
        raise BitsnnError(f"{path}: checkpoint does not match its architecture ({arch.get('spec', '?')}): "
                          f"{_state_dict_problem(e)}") from None
    model.eval()
    return model, obj["config"], obj.get("metrics") or {}


def train_checkpoint(cfg: TrainConfig, output, data_dir=None, *, force: bool = False, log=print) -> dict:
    """Train ``cfg`` on the data set in ``data_dir`` and write the checkpoint ``output``; the
    output path is checked before any data is loaded (it may not be one of the data files, nor an
    existing file other than a checkpoint unless ``force``), and nothing is written when training
    fails. Returns the metrics."""
    from bitsnn.data import data_inputs, load_dataset

    group = distributed.start(pick_device(cfg.device))
    try:
        problem = None
        try:
            check_output_file(output, kind=CHECKPOINT, inputs=data_inputs(data_dir), force=force)
            ds = load_dataset(data_dir)
        except BitsnnError as e:
            problem = str(e)
        distributed.agree(group, problem)  # every process stops here when one cannot start
        if group is not None and group.rank:
            log = _quiet
        return _train_checkpoint(cfg, output, ds, group, log)
    finally:
        distributed.stop()


def _quiet(*_args) -> None:
    """The log of a process other than rank 0: rank 0's log is the run's."""


def _train_checkpoint(cfg: TrainConfig, output, ds, group, log) -> dict:
    log(f"[train] {ds.summary()}")
    crop = f", central {cfg.crop}x{cfg.crop} window" if cfg.crop else ""
    dev = group.device if group else pick_device(cfg.device)
    log(f"[train] {cfg.spec} ({cfg.input_encoding} input{crop}, {cfg.surrogate} surrogate), {cfg.epochs} epochs, "
        f"batch {cfg.batch_size}, lr {cfg.lr:g}, sparsity {cfg.sparsity:g}, seed {cfg.seed}, "
        f"device {dev}" + (f", {cfg.threads} CPU thread(s)" if dev.type == "cpu" else "")
        + (f" per process, {group.world} processes ({group.backend}), batch {cfg.batch_size // group.world}"
           f"{'+' if cfg.batch_size % group.world else ''} per process" if group else "")
        + time_text(cfg.timesteps, cfg.coding or CODINGS_OF[cfg.input_encoding][0],
                    [(cfg.neuron, cfg.leak_m, cfg.reset)], cfg.timesteps == 1 and not cfg.coding))
    model, metrics = train_model(cfg, ds, log=lambda m: log(f"[train] {m}"),
                                 progress=False if group is not None and group.rank else None)
    if group is not None:
        metrics["processes"] = group.world
        if group.rank:
            return metrics
    path = save_checkpoint(output, model, cfg, metrics)
    log(f"[train] test accuracy {metrics['test_accuracy']:.4f}, firing rates "
        + "/".join(f"{r:.3f}" for r in metrics["test_firing_rates"])
        + f"; {metrics['train_seconds']:.1f} s; wrote {path}")
    return metrics


def train_main(args) -> int:
    """``bitsnn train``."""
    cfg = resolve_config(
        args.preset,
        spec=getattr(args, "spec", None),
        epochs=args.epochs,
        seed=args.seed,
        batch_size=args.batch_size,
        lr=args.lr,
        sparsity=args.sparsity,
        surrogate=args.surrogate,
        input_encoding=args.input_encoding,
        input_threshold=getattr(args, "input_threshold", None),
        device=args.device,
        limit_train=args.limit_train,
        crop=getattr(args, "crop", None),
        threads=getattr(args, "threads", None),
        timesteps=getattr(args, "steps", None),
        coding=getattr(args, "coding", None),
        rate_seed=getattr(args, "rate_seed", None),
        neuron=getattr(args, "neuron", None),
        leak=getattr(args, "leak", None),
        reset=getattr(args, "reset", None),
        act_bits=getattr(args, "act_bits", None),
        finetune_epochs=getattr(args, "finetune_epochs", None),
        float64=getattr(args, "float64", None) or None,
        precision=getattr(args, "precision", None),
        max_loss=getattr(args, "max_loss", None),
        max_weight_bits=getattr(args, "max_weight_bits", None),
        search_epochs=getattr(args, "search_epochs", None),
        holdout=getattr(args, "holdout", None),
        bwo_epochs=getattr(args, "bwo_epochs", None),
    )
    nproc = getattr(args, "nproc", None) or 1
    if nproc > 1:
        if cfg.precision == "auto":
            raise BitsnnError("--precision auto trains in one process: leave out --nproc")
        if distributed.under_torchrun():
            raise BitsnnError("--nproc: this process is one of torchrun's already; give --nproc to one or the other")
        if cfg.batch_size < nproc:
            raise BitsnnError(f"--nproc {nproc}: the batch of {cfg.batch_size} gives each process less than a row")
        from bitsnn.data import data_inputs, load_dataset

        # every check before the processes start; the data set is found (downloaded, verified) once
        check_output_file(args.output, kind=CHECKPOINT, inputs=data_inputs(args.data_dir),
                          force=getattr(args, "force", False))
        pick_device(cfg.device)
        load_dataset(args.data_dir)
        distributed.launch(nproc, _without_nproc(args.argv))
        return 0
    train_checkpoint(cfg, args.output, args.data_dir, force=getattr(args, "force", False),
                     log=lambda m: print(m, flush=True))
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out

