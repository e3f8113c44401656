"""Time steps, measured in one run against #30's targets that need no hardware yet:

- a Norse IAFCell graph over 8 steps, imported: mismatches against Norse's own run (every hidden
  spike of every step, the summed scores, the classes);
- an snnTorch Leaky graph over 25 steps, imported with ``--reset subtract-next``: agreement with
  snnTorch's own run (hidden spikes of every step, classes);
- a multi-step model file (``--model``): MNIST test accuracy, and spikes per inference over all
  steps and layers, input included, from the golden model.

    python benchmarks/bench_time.py [--model lif.bsnn] [--images N]

Each target line prints the measured value, the target and their ratio. With ``--model``, per
board (iCEBreaker, ULX3S) and convolution engine (window, event): the widest design its logic and
block RAM hold (the estimate, as ``bitsnn build`` fits it), and the cycle model's latency, cycles
against the bandwidth bound and FPGA energy at the board's clock over the images.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import MNIST  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a multi-step hardware-model file to measure on the test set")
    ap.add_argument("--images", type=int, default=10000, help="first N MNIST test images (default: all)")
    ap.add_argument("--ecp5-mhz", type=float, default=45.0,
                    help="the ULX3S clock the latency is given at (default 45: where its build met timing)")
    args = ap.parse_args()
    import torch

    from bitsnn.data import load_dataset
    from bitsnn.hwmodel import HardwareModel
    from bitsnn.model.nirlibs import norse_if_reference, snntorch_leaky_reference
    from bitsnn.nirgraph import from_nir
    from bitsnn.sim import golden

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    data = load_dataset(MNIST if MNIST.is_dir() else None)
    imgs, labels = data.test_images[: args.images], data.test_labels[: args.images]
    print(f"{len(imgs)} MNIST test images")
    print("| what | measured | target | ratio |")
    print("|---|---:|---:|---:|")

    t0 = time.perf_counter()
    _net, graph, run = norse_if_reference()
    hw = from_nir(graph, input_encoding="spikes", input_threshold=128, steps=8)
    x = (np.random.default_rng(0).random((len(imgs), 100)) < 0.15).astype(np.float32)
    spikes, total = run(x, 8)
    g = golden.run(hw, (x * 255).astype(np.uint8))
    bad = int(np.any(g.step_spikes[0] != spikes, axis=(1, 2)).sum() + np.any(g.scores != total, axis=1).sum()
              + (g.classes != total.argmax(1)).sum())
    print(f"| Norse IF graph over 8 steps, {len(x)} random inputs: images with any spike, score or class unequal "
          f"| {bad} | 0 | {'ok' if bad == 0 else 'MISSED'} |")

    _net, graph, run = snntorch_leaky_reference(data.train_images[:6000], data.train_labels[:6000])
    hw = from_nir(graph, input_encoding="spikes", input_threshold=128, steps=25, reset="subtract-next")
    spikes, total = run(imgs)
    g = golden.run(hw, imgs)
    s_ok, c_ok = float((g.step_spikes[0] == spikes).mean()), float((g.classes == total.argmax(1)).mean())
    print(f"| snnTorch Leaky graph over 25 steps: hidden spikes equal to snnTorch's run | {100 * s_ok:.2f} % | 99 % "
          f"| {s_ok / 0.99:.4f} |")
    print(f"| the same: classes equal | {100 * c_ok:.2f} % | 99 % | {c_ok / 0.99:.4f} |")
    print(f"(NIR checks: {time.perf_counter() - t0:.1f} s)")

    if args.model:
        hw = HardwareModel.load(args.model)
        g = golden.run(hw, imgs)
        acc = float(np.mean(g.classes == labels))
        print(f"| {hw.describe()}: test accuracy | {100 * acc:.2f} % | 99.2 % | {acc / 0.992:.4f} |")
        hidden = g.spike_counts.sum(axis=1)
        # the input as the hardware takes it: once for an input that is the same at every step
        inputs = g.input_events[:, 0] // (hw.timesteps if hw.static_input else 1)
        per = hidden + inputs
        print(f"| spikes per inference, all steps and layers, input events included (mean) | {per.mean():,.0f} | 1,700 "
              f"| {per.mean() / 1700:.3f} |")
        print(f"| hidden spikes per inference (mean) | {hidden.mean():,.0f} | | |")
        from bitsnn.hwplan import check_supported, membrane_bits, membranes

        total = 0
        for layer in hw.hidden_layers:
            if layer.neuron_model.stateful:
                n, w = membranes(layer), membrane_bits(layer, hw.timesteps)
                total += n * w
                print(f"| {layer.name}: membranes x bits (never saturating; none stored: the stages run each "
                      f"position's steps in lane registers) | {n:,} x {w} = {n * w:,} bits | | |")
        check_supported(hw)
        _hardware_rows(hw, g, args.ecp5_mhz)
    return 0


def _hardware_rows(hw, g, ecp5_mhz: float) -> None:
    """Per board and convolution engine (the window stage that ``auto`` takes, and the event stage
    with a bank of accumulators per step): the widest design its logic and block RAM hold (the
    estimate, INFER left out, as ``bitsnn build`` fits it), the cycle model's latency at the
    board's clock over the images, cycles against the bandwidth bound, the FPGA energy."""
    from bitsnn.boards import board_facts
    from bitsnn.boards.fit import DEFAULT_ACCEL, choose_spram_layers
    from bitsnn.hw.estimate import estimate_resources
    from bitsnn.hwplan import default_lanes
    from bitsnn.report.constants import FPGA_POWER
    from bitsnn.report.energy import fpga_energy
    from bitsnn.sim.cycles import bandwidth_bound, predict_cycles

    for name, mhz in (("icebreaker", None), ("ulx3s-85f", ecp5_mhz)):
        board = board_facts(name)
        clock = (mhz or board.clk_freq / 1e6) * 1e6
        for engine in ("auto", "event"):
            fits, lanes = [], None
            for p in (32, 16, 8, 4, 2, 1):  # the widest design the board's logic and block RAM hold
                accel = dict(DEFAULT_ACCEL, lanes=p, conv_engine=engine)
                try:
                    spram = choose_spram_layers(board, hw, accel)
                    est = estimate_resources(hw, lanes=p, family=board.family, spram_layers=spram, infer=False,
                                             conv_engine=engine)
                except ValueError as e:  # an UnsupportedLayerError too
                    fits.append(f"{p} lanes: {e}")
                    continue
                if est["logic"] <= board.totals.logic and est["bram_blocks"] <= board.totals.bram_blocks:
                    lanes = p
                    break
                fits.append(f"{p} lanes: {est['logic']:,} LC, {est['bram_blocks']} EBR")
            label = f"{name}, conv engine {engine}"
            if lanes is None:
                print(f"| {label}: a design that fits (estimate, INFER left out) | none: {'; '.join(fits)}; "
                      f"{board.totals.logic:,} LC, {board.totals.bram_blocks} EBR | | MISSED |")
                lanes = 8 if name == "icebreaker" else default_lanes(hw)
                what = f"{lanes} lanes, if it fitted"
            else:
                print(f"| {label}: estimate with {lanes} lanes, INFER left out | {est['logic']:,} LC, "
                      f"{est['bram_blocks']} EBR | {board.totals.logic:,} | {est['logic'] / board.totals.logic:.3f} |")
                what = f"{lanes} lanes"
            cyc = predict_cycles(hw, g, mode="event", lanes=lanes, word=32, conv_engine=engine)
            lat = cyc / clock * 1e6
            print(f"| {label} ({what}, {clock / 1e6:.1f} MHz): latency mean, cycle model, {len(cyc)} images "
                  f"| {lat.mean():.1f} us | 600 us | {lat.mean() / 600:.3f} |")
            print(f"| the same: worst | {lat.max():.1f} us | 1,000 us | {lat.max() / 1000:.3f} |")
            bb = bandwidth_bound(hw, g, mode="event", lanes=lanes, word=32)
            print(f"| the same: cycles / bandwidth bound (mean) | {np.mean(cyc / bb):.2f} | 1.5 | "
                  f"{np.mean(cyc / bb) / 1.5:.3f} |")
            power = FPGA_POWER.get(name)
            if power is not None:
                e = fpga_energy(lat.mean() * 1e-6, float(cyc.mean()), None, power)
                if e["total_j"] is not None:
                    print(f"| the same: FPGA energy per inference (report's model, "
                          f"{', '.join(e['unknown_terms']) or 'all'} {'unknown: a lower bound' if e['lower_bound'] else 'known'})"
                          f" | {e['total_j'] * 1e6:.2f} uJ | 2 uJ | {e['total_j'] / 2e-6:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
