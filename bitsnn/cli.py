"""The ``bitsnn`` command line.

Each subcommand's arguments are declared here; its work lives in the stage that owns it and is
imported only when that subcommand runs (so ``bitsnn --help`` never imports torch or amaranth).
A subcommand whose stage is not built yet says so and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import BitsnnError, __version__

#: subcommand -> "module:function" taking the parsed argparse namespace, returning an exit code.
HANDLERS: dict[str, str] = {
    "demo": "bitsnn.flow:demo_main",
    "build": "bitsnn.boards.build:build_main",
    "report": "bitsnn.report:report_main",
    "train": "bitsnn.model.train:train_main",
    "export": "bitsnn.model.export:export_main",
    "sim": "bitsnn.sim.cosim.cli:sim_main",
    "run": "bitsnn.firmware.cli:run_main",
}

BOARDS = ("icebreaker", "ulx3s-85f")


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        metavar="D",
        help="directory with the four IDX files (default: $BITSNN_DATA, ../shared/data/mnist, the user cache; "
        "downloads MNIST when none has them)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bitsnn",
        description="Binary spiking neural networks to FPGA bitstreams: train, export, simulate, build, report.",
    )
    parser.add_argument("--version", action="version", version=f"bitsnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a BitSNN on MNIST", description="Train a BitSNN and save a checkpoint.")
    p.add_argument("--preset", default="tiny", help="tiny | small | large, or a layer spec such as 784-256-256-10")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same model")
    p.add_argument("--batch-size", type=int, default=None, help="mini-batch size (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    p.add_argument(
        "--sparsity", type=float, default=None, metavar="LAMBDA",
        help="spike-rate regulariser weight: loss += LAMBDA x mean firing rate (default: the preset's)",
    )
    p.add_argument("--surrogate", default=None, choices=("box", "s2nn", "ste"), help="surrogate gradient")
    p.add_argument("--input", dest="input_encoding", default=None, choices=("spikes", "pixels"),
                   help="input encoding: thresholded pixels as spikes, or direct 8-bit pixels")
    p.add_argument("--input-threshold", type=int, default=None, metavar="T",
                   help="spike input: a pixel >= T (1..255) is a spike (default: the preset's)")
    p.add_argument("--crop", type=int, default=None, metavar="C",
                   help="take the central CxC window of each image (the spec's input size is then C*C; "
                   "0: whole images; default: the preset's)")
    p.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default 1: a seed then gives the same model on any core count)")
    p.add_argument("--limit-train", type=int, default=None, metavar="N", help="train on the first N images only")
    _add_data_dir(p)
    p.add_argument("-o", "--output", required=True, metavar="CKPT", help="checkpoint file to write")

    p = sub.add_parser("export", help="export a checkpoint to a hardware-model file",
                       description="Fold a trained checkpoint into the integer hardware-model file (.bsnn), "
                       "after checking the golden model against torch on the whole test set.")
    p.add_argument("checkpoint", metavar="CKPT")
    _add_data_dir(p)
    p.add_argument("-o", "--output", required=True, metavar="MODEL", help="hardware-model file to write (.bsnn)")

    p = sub.add_parser("sim", help="simulate the generated hardware against the golden model",
                       description="Run the generated design in a simulator on test images and compare "
                       "every spike, score and class with the golden model.")
    p.add_argument("--model", required=True, metavar="M", help="hardware-model file (.bsnn)")
    p.add_argument("--images", type=int, default=100, metavar="N", help="number of test images")
    p.add_argument("--simulator", default="icarus", choices=("icarus", "verilator", "amaranth", "golden"))
    p.add_argument("--mode", default="event", choices=("event", "dense"), help="layer-core mode")
    p.add_argument("--lanes", type=int, default=None, metavar="P",
                   help="neurons per cycle per event core (default: what bitsnn build generates)")
    p.add_argument("--wave", metavar="OUT.vcd", help="write a waveform of one image")
    p.add_argument("--image", type=int, default=0, metavar="K", help="the image the waveform shows")
    _add_data_dir(p)

    p = sub.add_parser("build", help="build a bitstream for a board",
                       description="Generate the design, synthesise, place and route it with Yosys and nextpnr.")
    p.add_argument("--board", required=True, choices=BOARDS)
    p.add_argument("--model", required=True, metavar="M", help="hardware-model file (.bsnn)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    p.add_argument("--clock-mhz", type=float, default=None, metavar="F",
                   help="PLL output frequency to build for (default: the board's, 24 MHz iCEBreaker, "
                   "50 MHz ULX3S); the nearest achievable one is used")
    p.add_argument("--lanes", type=int, default=None, metavar="P",
                   help="neurons per cycle per event core (default: 32, or 4 lane groups for a "
                   "129..256-neuron layer)")
    p.add_argument("--seed", type=int, default=1, metavar="S",
                   help="nextpnr seed (default 1); a failed placement is retried with a denser placer, then seed S+1")
    p.add_argument("--spram-layers", default="auto", metavar="auto|none|L,L",
                   help="layers whose weights go to iCE40 UltraPlus SPRAM, written over the UART at run "
                   "time (auto: the largest layers, only when the weights do not fit block RAM)")

    p = sub.add_parser("report", help="spikes, cycles, latency and energy per inference",
                       description="Report spikes, synaptic events, memory reads, cycles, latency and energy.")
    p.add_argument("--model", required=True, metavar="M", help="hardware-model file (.bsnn)")
    p.add_argument("--board", default="icebreaker", choices=BOARDS)
    p.add_argument("--build-dir", metavar="DIR", help="a `bitsnn build` output directory to read Fmax from")
    p.add_argument("-o", "--output", metavar="DIR", help="directory for report.json and plots")
    p.add_argument("--images", type=int, default=None, metavar="N", help="first N test images (default: all)")
    p.add_argument("--mode", default=None, choices=("event", "dense"),
                   help="layer-core mode (default: the build report's, else event)")
    p.add_argument("--lanes", type=int, default=None, metavar="P", help="neurons per cycle per core (default: the build report's, else what bitsnn build generates)")
    p.add_argument("--word", type=int, default=None, metavar="W", help="word width in bits (default 32)")
    p.add_argument("--vcd", metavar="WAVE.vcd", help="a waveform of the design to count signal toggles in")
    p.add_argument("--sweep", nargs="+", metavar="M", default=None,
                   help="more hardware models of the same network (e.g. trained at other --sparsity values): "
                   "adds their accuracy, spikes and energy to the report and plots accuracy vs energy")
    _add_data_dir(p)

    p = sub.add_parser("run", help="run test images on a board over UART",
                       description="Stream test images to a board over UART and report accuracy, latency and spikes.")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB1")
    p.add_argument("--model", required=True, metavar="M", help="hardware-model file (.bsnn)")
    p.add_argument("--images", type=int, default=100, metavar="N")
    p.add_argument("--baud", type=int, default=115200)
    p.add_argument("--mode", default="event", choices=("event", "dense"),
                   help="layer-core mode of the bitstream (for the cycle-model check)")
    p.add_argument("--clock-mhz", type=float, default=None, metavar="F",
                   help="the design's clock, to report device latency in microseconds as well as cycles")
    p.add_argument("--timeout", type=float, default=2.0, metavar="S", help="seconds to wait for each reply")
    p.add_argument("--write-weights", action="store_true",
                   help="write the model's weights into the device first (automatic when the design keeps "
                   "them in SPRAM, which the bitstream does not initialise)")
    _add_data_dir(p)

    p = sub.add_parser("demo", help="the whole flow on MNIST",
                       description="Train, export, co-simulate, build and report on MNIST (what exists so far).")
    p.add_argument("--run-dir", default="runs/demo", metavar="DIR", help="where every step writes its artifacts")
    _add_data_dir(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    target = HANDLERS.get(args.command)
    if target is None:
        print(f"bitsnn {args.command}: not implemented yet", file=sys.stderr)
        return 2
    module, func = target.split(":")
    try:
        return int(getattr(importlib.import_module(module), func)(args) or 0)
    except BitsnnError as e:
        print(f"bitsnn {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"bitsnn {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
