"""The ``bitsnn`` command line.

Each subcommand's arguments are declared here; its work lives in the stage that owns it and is
imported only when that subcommand runs (so ``bitsnn --help`` never imports torch or amaranth).
A subcommand whose stage is not built yet says so and exits 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import BitsnnError, __version__
from .options import BOARDS, FLOAT32_MAX, MAX_LR, MAX_SEED, SIMULATORS, SURROGATES, OptionError, float_in, int_in
from .hwplan import CONV_ENGINES, DEFAULT_WORD, MODES
from .nirgraph import DEFAULT_DT
from .protocol import MAX_LANES
from .hwmodel import MAX_STEPS
from .kinds import NEURONS, RESETS

#: subcommand -> "module:function" taking the parsed argparse namespace, returning an exit code.
HANDLERS: dict[str, str] = {
    "demo": "bitsnn.flow:demo_main",
    "flow": "bitsnn.flow:flow_main",
    "build": "bitsnn.boards.build:build_main",
    "report": "bitsnn.report:report_main",
    "train": "bitsnn.model.train:train_main",
    "export": "bitsnn.model.export:export_main",
    "import": "bitsnn.nirgraph:import_main",
    "sim": "bitsnn.sim.cosim.cli:sim_main",
    "run": "bitsnn.firmware.cli:run_main",
    "sweep": "bitsnn.sweep:sweep_main",
}

class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``bitsnn train: error: argument --epochs: ...``. A value
    an option refuses (:class:`~bitsnn.options.OptionError`) is bad input like a bad file: exit 1;
    a malformed command line (unknown option, missing argument) is a usage error: exit 2. The
    top-level parser (no subcommand given) still prints its one-line usage first."""

    def error(self, message):
        if self.prog == "bitsnn" and "COMMAND" in message:
            self.print_usage(sys.stderr)
        # argparse calls this while handling the ArgumentError it raised from the type's error
        cause = getattr(sys.exc_info()[1], "__context__", None)
        self.exit(1 if isinstance(cause, OptionError) else 2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


POSITIVE = int_in(1)


#: what --conv-engine chooses (bitsnn.hwplan.CONV_ENGINES)
_ENGINE_HELP = ("window: the sliding-window stage, event: the event-driven one (over time, a bank of accumulators "
                "per input step: cycles follow the spikes, at T times the accumulator memory); auto: window for "
                "spike maps of 2..32 channels, event for pixels and one-channel maps")

def _add_spikes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spikes", metavar="FILE", default=None,
                   help="for a model with given input coding: every step's input spikes, a .npy array or an .npz "
                   "with 'spikes' (and 'labels'), [N, steps, *input_shape] of 0/1 (--images takes the first N)")


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        metavar="D",
        help="directory with the four IDX files (default: $BITSNN_DATA, ../shared/data/mnist, the user cache; "
        "downloads MNIST when none has them)",
    )


def _add_force(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--force", action="store_true",
                   help=f"replace an existing file that is not {what} (an input of the command is never replaced)")


def _add_flow_options(p: argparse.ArgumentParser, run_dir_default: str) -> None:
    from .flow import STEP_NAMES  # standard library only

    p.add_argument("--run-dir", default=None, metavar="DIR",
                   help=f"where every step writes its folder (default: {run_dir_default})")
    p.add_argument("--start-step", choices=STEP_NAMES, default=None, help="the first step to run")
    p.add_argument("--stop-step", choices=STEP_NAMES, default=None, help="the last step to run")
    p.add_argument("--force", action="store_true", help="rerun the chosen steps even when they are up to date "
                   "(demo --save-config: replace an existing file that is not a flow configuration)")
    _add_data_dir(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bitsnn",
        description="Binary spiking neural networks to FPGA bitstreams: train, export, simulate, build, report.",
    )
    parser.add_argument("--version", action="version", version=f"bitsnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a BitSNN on MNIST", description="Train a BitSNN and save a checkpoint.")
    p.add_argument("--preset", default="tiny", help="tiny | small | large | conv-tiny | conv | lif-tiny | lif | fast-tiny | alb-tiny, or a layer spec such as 784-256-256-10 or 784-c8-c16-10")
    p.add_argument("--spec", default=None, metavar="SPEC",
                   help="another layer spec with the preset's recipe, e.g. --preset conv-tiny --spec 784-c8w4-c32-10w4 "
                   "(a token ending in wB: B-bit weights, 2..8)")
    p.add_argument("--epochs", type=POSITIVE, default=None, help="training epochs (default: the preset's)")
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0,
                   help="random seed; the same seed gives the same model")
    p.add_argument("--batch-size", type=int_in(2), default=None, help="mini-batch size, at least 2 for BatchNorm (default: the preset's)")
    p.add_argument("--lr", type=float_in(0, MAX_LR, lo_open=True), default=None, help="learning rate (default: the preset's)")
    p.add_argument(
        "--sparsity", type=float_in(0, FLOAT32_MAX), default=None, metavar="LAMBDA",
        help="spike-rate regulariser weight: loss += LAMBDA x mean firing rate (default: the preset's)",
    )
    p.add_argument("--surrogate", default=None, choices=SURROGATES, help="surrogate gradient")
    p.add_argument("--input", dest="input_encoding", default=None, choices=("spikes", "pixels"),
                   help="input encoding: thresholded pixels as spikes, or direct 8-bit pixels")
    p.add_argument("--input-threshold", type=int_in(1, 255), default=None, metavar="T",
                   help="spike input: a pixel >= T (1..255) is a spike (default: the preset's)")
    p.add_argument("--crop", type=int_in(0), default=None, metavar="C",
                   help="take the central CxC window of each image (the spec's input size is then C*C; "
                   "0: whole images; default: the preset's)")
    p.add_argument("--steps", type=int_in(1, MAX_STEPS), default=None, metavar="T",
                   help=f"time steps per inference, 1..{MAX_STEPS} (default: the preset's; 1 for the one-step presets)")
    p.add_argument("--coding", default=None, choices=("direct", "threshold", "rate"),
                   help="the input at each step: the same pixels (direct, with --input pixels), the same "
                   "spikes (threshold), or Bernoulli spikes of the pixels (rate, with --rate-seed)")
    p.add_argument("--rate-seed", type=int_in(1, (1 << 32) - 1), default=None, metavar="S",
                   help="rate coding: the seed of its xorshift32 generator (the hardware's too)")
    p.add_argument("--neuron", default=None, choices=tuple(NEURONS),
                   help="the hidden layers' neurons: step (one step, no state), if or lif (a membrane over the steps), "
                   "signed_if (Fast-SNN's, trained as a quantised ANN: see --act-bits)")
    p.add_argument("--leak", type=int_in(1, 16), default=None, metavar="K",
                   help="lif neurons: V <- V - (V >> K) before each step, 1..16 (default 3)")
    p.add_argument("--reset", default=None, choices=RESETS,
                   help="if/lif neurons: after a spike V -= theta (subtract) or V = 0 (zero)")
    p.add_argument("--act-bits", type=int_in(1, 4), default=None, metavar="B",
                   help="Fast-SNN: train a quantised ANN of B-bit activations and convert it to signed_if neurons "
                   "over T = 2^B - 1 steps (default: the preset's)")
    p.add_argument("--finetune-epochs", type=int_in(0, 1000), default=None, metavar="N",
                   help="with --act-bits: fine-tune the converted layers one by one, N epochs each, against the "
                   "quantised ANN (Fast-SNN's layer-wise fine-tuning; default: the preset's)")
    p.add_argument("--precision", default=None, choices=("spec", "auto"),
                   help="the layers' weight widths: as the spec gives them (spec, the default), or auto: ALBSNN's "
                   "accuracy-loss estimator picks each layer's from 1, 2, 4 and 8 bits while training, within "
                   "--max-loss and/or --max-weight-bits")
    p.add_argument("--max-loss", type=float_in(0, 100), default=None, metavar="PT",
                   help="--precision auto: at most PT points of estimated accuracy loss against every layer at 8 bits "
                   "(default 0.1 when no --max-weight-bits is given)")
    p.add_argument("--max-weight-bits", default=None, metavar="N|P%",
                   help="--precision auto: at most N weight bits, or P%% of the network at 8 bits")
    p.add_argument("--search-epochs", type=int_in(1, 100000), default=None, metavar="N",
                   help="--precision auto: the estimator runs after each of the first N epochs, the last choice holds "
                   "for the rest (default: half the epochs)")
    p.add_argument("--bwo-epochs", type=int_in(0, 100000), default=None, metavar="N",
                   help="ALBSNN's binary weight optimisation: the last N epochs flip the +-1 weights directly by "
                   "their averaged gradients instead of training real weights behind a sign (default 0)")
    p.add_argument("--holdout", type=int_in(1), default=None, metavar="N",
                   help="--precision auto: the last N training images are the estimator's, not trained on "
                   "(default: a sixth of them, at most 5,000)")
    p.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:N or auto (default auto: cuda when "
                   "present, else cpu)")
    p.add_argument("--float64", action="store_true",
                   help="train in float64 (slower; float32 rounding differs with the process count, and a sign() "
                   "can turn that into different weights after enough steps)")
    p.add_argument("--nproc", type=int_in(1, 1024), default=None, metavar="N",
                   help="train in N processes on this machine (torch.distributed through torch's elastic launcher, "
                   "what torchrun runs: gloo on the CPU, NCCL on GPUs); N processes with a batch of B/N each train "
                   "the model one process trains with batch B")
    p.add_argument("--threads", type=int_in(1, 1024), default=None, metavar="N",
                   help="torch CPU threads (default 1: a seed then gives the same model on any core count)")
    p.add_argument("--limit-train", type=int_in(2), default=None, metavar="N", help="train on the first N images only (at least 2)")
    _add_data_dir(p)
    p.add_argument("-o", "--output", required=True, metavar="CKPT", help="checkpoint file to write")
    _add_force(p, "a checkpoint")

    p = sub.add_parser("export", help="export a checkpoint to a hardware-model file",
                       description="Fold a trained checkpoint into the integer hardware-model file (.bsnn), "
                       "after checking the golden model against torch on the whole test set.")
    p.add_argument("checkpoint", metavar="CKPT")
    _add_data_dir(p)
    p.add_argument("-o", "--output", required=True, metavar="MODEL", help="hardware-model file to write (.bsnn)")
    p.add_argument("--nir", metavar="GRAPH", help="also write the network as a NIR graph (docs/ecosystem.md)")
    _add_force(p, "a hardware-model file (a NIR graph of bitsnn's for --nir)")

    p = sub.add_parser("import", help="a NIR graph to a hardware-model file",
                       description="Map a NIR graph (+-1 or b-bit integer weights times a scale, IF or LIF neurons at "
                       "one time step or over --steps T, 2 x 2 sum or average pools as ORs) onto the hardware-model "
                       "file; anything else is refused by node name. Over time steps it prints the agreement it "
                       "measured with the graph's float semantics.")
    p.add_argument("graph", metavar="GRAPH", help="NIR file (.nir, HDF5)")
    p.add_argument("--steps", type=int_in(1, MAX_STEPS), default=None, metavar="T",
                   help="take the graph over T time steps with its IF/LIF dynamics (default 1: one step, as thresholds)")
    p.add_argument("--reset", default=None, choices=RESETS,
                   help="with --steps: after a spike v = 0 (zero, NIR's v_reset and Norse's; the default), v -= threshold "
                   "(subtract), or v -= threshold at the next step (subtract-next: snnTorch's Leaky)")
    p.add_argument("--coding", default=None, choices=("given",),
                   help="with --steps: the input is spikes per step (an event sensor's), not the same image each step")
    p.add_argument("--quantize-weights", type=int_in(2, 8), default=None, metavar="B",
                   help="round float weights to B-bit integers times a scale per neuron or channel, and print the "
                   "agreement measured with the graph's float semantics")
    p.add_argument("-o", "--output", required=True, metavar="MODEL", help="hardware-model file to write (.bsnn)")
    p.add_argument("--input", choices=("pixels", "spikes"),
                   help="how images enter the graph, when its metadata and nodes do not say: 8-bit pixels, "
                   "or spikes [pixel >= --input-threshold]")
    p.add_argument("--input-threshold", type=int_in(1, 255), metavar="T", help="pixel value at which an input spikes")
    p.add_argument("--dt", type=float_in(1e-9, 1e3), default=DEFAULT_DT,
                   help="the time step of LIF neurons, seconds (default 1e-4, snnTorch's NIR convention)")
    _add_force(p, "a hardware-model file")

    p = sub.add_parser("sim", help="simulate the generated hardware against the golden model",
                       description="Run the generated design in a simulator on test images and compare "
                       "every spike, score and class with the golden model.")
    p.add_argument("--model", required=True, metavar="M", help="hardware-model file (.bsnn)")
    p.add_argument("--images", type=POSITIVE, default=100, metavar="N", help="number of test images")
    p.add_argument("--simulator", default="icarus", choices=SIMULATORS)
    p.add_argument("--mode", default="event", choices=MODES, help="layer-core mode")
    p.add_argument("--lanes", type=int_in(1, MAX_LANES), default=None, metavar="P",
                   help="neurons per cycle per event core (default: bitsnn.hwplan.default_lanes; a conv "
                   "model's build may use fewer to fit its board)")
    p.add_argument("--conv-engine", default="auto", choices=CONV_ENGINES,
                   help=_ENGINE_HELP)
    p.add_argument("--wave", metavar="OUT.vcd", help="write a waveform of one image")
    p.add_argument("--image", type=int_in(0), default=0, metavar="K", help="the image the waveform shows")
    _add_force(p, "a VCD waveform (for --wave)")
    p.add_argument("--verbose", action="store_true",
                   help="print the simulator's own output (cocotb, VPI) as it runs; otherwise it goes to sim.log "
                   "in the build cache and only progress lines are printed")
    _add_spikes(p)
    _add_data_dir(p)

    p = sub.add_parser("build", help="build a bitstream for a board",
                       description="Generate the design, synthesise, place and route it with Yosys and nextpnr.")
    p.add_argument("--board", required=True, choices=BOARDS)
    p.add_argument("--model", required=True, metavar="M", help="hardware-model file (.bsnn)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    p.add_argument("--clock-mhz", type=float_in(0, lo_open=True), default=None, metavar="F",
                   help="PLL output frequency to build for (default: the board's, 24 MHz iCEBreaker, "
                   "50 MHz ULX3S); the nearest achievable one is used")
    p.add_argument("--lanes", type=int_in(1, MAX_LANES), default=None, metavar="P",
                   help="neurons per cycle per event core (default: 32, or 4 lane groups for a "
                   "129..256-neuron layer; for a model with convolutions or membranes halved until it fits the board)")
    p.add_argument("--conv-engine", default="auto", choices=CONV_ENGINES,
                   help=_ENGINE_HELP)
    p.add_argument("--seed", type=int_in(0, 2**31 - 2), default=1, metavar="S",
                   help="nextpnr seed (default 1); a failed placement is retried with a denser placer, then seed S+1")
    p.add_argument("--spram-layers", default="auto", metavar="auto|none|L,L",
                   help="layers whose weights go to iCE40 UltraPlus SPRAM, written over the UART at run "
                   "time (auto: the largest layers, only when the weights do not fit block RAM)")
    p.add_argument("--baud", type=int_in(300, 12_000_000), default=None, metavar="B",
                   help="UART bit rate (default: the fastest the board's USB bridge carries at the design "
                   "clock: 3,000,000 on the iCEBreaker at 24 MHz, 2,000,000 on the ULX3S at 50 MHz); "
                   "a rate the design's divisor or the bridge cannot meet is refused")
    p.add_argument("--infer", default="auto", choices=("auto", "on", "off"),
                   help="serve INFER, the streaming image command (auto: unless it would take the design past "
                   "94%% of the logic cells, where placement may fail)")

    p = sub.add_parser("report", help="spikes, cycles, latency and energy per inference",
                       description="Report spikes, synaptic events, memory reads, cycles, latency and energy.")
    p.add_argument("--model", required=True, metavar="M", help="hardware-model file (.bsnn)")
    p.add_argument("--board", default="icebreaker", choices=BOARDS)
    p.add_argument("--build-dir", metavar="DIR", help="a `bitsnn build` output directory to read Fmax from")
    p.add_argument("-o", "--output", metavar="DIR", help="directory for report.json and plots")
    p.add_argument("--images", type=POSITIVE, default=None, metavar="N", help="first N test images (default: all)")
    p.add_argument("--mode", default=None, choices=MODES,
                   help="layer-core mode (default: the build report's, else event)")
    p.add_argument("--lanes", type=int_in(1, MAX_LANES), default=None, metavar="P", help="neurons per cycle per core (default: the build report's, else bitsnn.hwplan.default_lanes; a conv model's build may use fewer to fit its board)")
    p.add_argument("--conv-engine", default=None, choices=CONV_ENGINES,
                   help="the convolutions' stages (default: the build report's, else auto; " + _ENGINE_HELP + ")")
    p.add_argument("--word", type=int_in(1, 4096), default=None, metavar="W", help=f"word width in bits (default {DEFAULT_WORD})")
    p.add_argument("--vcd", metavar="WAVE.vcd", help="a waveform of the design to count signal toggles in")
    p.add_argument("--sweep", nargs="+", metavar="M", default=None,
                   help="more hardware models of the same network (e.g. trained at other --sparsity values): "
                   "adds their accuracy, spikes and energy to the report and plots accuracy vs energy")
    p.add_argument("--neurobench", action="store_true",
                   help="add the NeuroBench metrics (footprint, connection and activation sparsity, synaptic "
                   "operations), computed by the neurobench package, beside bitsnn's own counts (needs torch)")
    _add_spikes(p)
    _add_data_dir(p)

    p = sub.add_parser("run", help="run test images on a board over UART",
                       description="Stream test images to a board over UART and report accuracy, latency and spikes.")
    p.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB1")
    p.add_argument("--model", required=True, metavar="M", help="hardware-model file (.bsnn)")
    p.add_argument("--images", type=POSITIVE, default=100, metavar="N")
    p.add_argument("--baud", type=int_in(300, 12_000_000), default=None, metavar="B",
                   help="UART bit rate to try first (default: each board's default rate, then 115200); "
                   "the rate the device reports in INFO is used")
    p.add_argument("--window", type=int_in(1, 4), default=4, metavar="K",
                   help="INFER requests in flight (spike-input designs; default 4, the device's slots)")
    p.add_argument("--mode", default="event", choices=MODES,
                   help="layer-core mode of the bitstream (for the cycle-model check)")
    p.add_argument("--conv-engine", default=None, choices=CONV_ENGINES,
                   help="the convolutions' stages in the bitstream, for the cycle-model check (default: event where "
                        "the device reports event stages, else auto; " + _ENGINE_HELP + ")")
    p.add_argument("--clock-mhz", type=float_in(0, lo_open=True), default=None, metavar="F",
                   help="the design's clock, to report device latency in microseconds as well as cycles")
    p.add_argument("--timeout", type=float_in(0, 3600, lo_open=True), default=2.0, metavar="S", help="seconds to wait for each reply")
    p.add_argument("--write-weights", action="store_true",
                   help="write the model's weights into the device first (automatic when the design keeps "
                   "them in SPRAM, which the bitstream does not initialise)")
    _add_spikes(p)
    _add_data_dir(p)

    p = sub.add_parser("flow", help="run the flow from a configuration file",
                       description="Run train -> export -> cosim -> build -> report as the TOML or JSON "
                       "configuration says (bitsnn demo --save-config FILE writes the demo's as a start). "
                       "A step reruns only when its inputs, options or outputs changed.")
    p.add_argument("config", metavar="CONFIG", help="a .toml or .json flow configuration")
    _add_flow_options(p, run_dir_default="the config's")

    p = sub.add_parser("sweep", help="a multi-objective Optuna study over the flow",
                       description="Run flow trials that an Optuna study (NSGA-II) chooses from the space in the "
                       "configuration's [sweep.space], judged on accuracy, logic cells, latency and energy; print "
                       "the trials and the Pareto front, plot it, and write the best trial's flow configuration. "
                       "A killed sweep resumes where it stopped when started again.")
    p.add_argument("config", metavar="CONFIG", help="a .toml or .json flow configuration with a [sweep] table")
    p.add_argument("--run-dir", default=None, help="the sweep's folder (default: the config's run_dir)")
    p.add_argument("--data-dir", default=None, help="the four IDX files (default: the config's, else the loader's search)")
    p.add_argument("--storage", default=None, metavar="URL",
                   help="where the study lives: an Optuna RDB URL (postgresql://..., sqlite:///...) or journal:FILE; "
                   "workers on other machines join with the same URL (default: the config's, else "
                   "sqlite in the run directory)")
    p.add_argument("--workers", type=int_in(1, 256), default=1, metavar="N", help="worker processes on this machine")
    p.add_argument("--trials", type=int_in(1, 100_000), default=None, metavar="N",
                   help="trials in all (default: the config's [sweep] trials)")
    p.add_argument("--retry-running", action="store_true",
                   help="queue again the trials a journal-file study shows running (its killed workers'; only when "
                   "no worker of the study runs)")

    p = sub.add_parser("demo", help="the whole flow on MNIST",
                       description="Train, export, co-simulate, build and report on MNIST: the flow with "
                       "its default configuration (the tiny preset on the iCEBreaker).")
    _add_flow_options(p, run_dir_default="runs/demo")
    p.add_argument("--save-config", metavar="FILE",
                   help="write the demo's configuration to FILE (.toml or .json) and stop")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a refused option (its line is printed already)
        return e.code if isinstance(e.code, int) else 2
    args.argv = list(sys.argv[1:] if argv is None else argv)
    target = HANDLERS.get(args.command)
    if target is None:
        print(f"bitsnn {args.command}: not implemented yet", file=sys.stderr)
        return 2
    module, func = target.split(":")
    try:
        return int(getattr(importlib.import_module(module), func)(args) or 0)
    except BitsnnError as e:
        _quiet_amaranth()
        print(f"bitsnn {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _quiet_amaranth()
        print(f"bitsnn {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a file or device the command could not use
        _quiet_amaranth()
        where = f": {e.filename}" if e.filename else ""
        print(f"bitsnn {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except Exception as e:
        # A bug, not bad input: still one line, and the traceback on request.
        if os.environ.get("BITSNN_DEBUG"):
            raise
        _quiet_amaranth()
        print(f"bitsnn {args.command}: internal error: {e.__class__.__name__}: {_one_line(e)} "
              "(set BITSNN_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 3


def _quiet_amaranth() -> None:
    """A command that stops early leaves designs it built but never elaborated; Amaranth would warn
    about each one at exit (it stays quiet only when an exception reaches the interpreter, which
    bitsnn's one-line errors never let happen). Those warnings say nothing to the user."""
    unused = sys.modules.get("amaranth._unused")
    if unused is not None:
        unused.MustUse._MustUse__silence = True


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else e.__class__.__name__


if __name__ == "__main__":
    sys.exit(main())
