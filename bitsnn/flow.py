"""The flow behind ``bitsnn flow CONFIG`` and ``bitsnn demo``: named steps, one direction through
the hardware-model file, each writing into its own folder of the run directory.

    train -> export -> cosim -> build -> report

The configuration is one typed dataclass, :class:`FlowConfig`, with a section per step; its
defaults are the demo (the ``conv-tiny`` preset on MNIST, 100 images on Icarus, the iCEBreaker;
the demo trains :data:`DEMO_EPOCHS` epochs instead of the preset's). It
round-trips through TOML and JSON (:meth:`FlowConfig.load`, :meth:`FlowConfig.dumps`). A config
may name an existing hardware model (``model``) instead of training one; the flow then starts at
cosim.

Each step calls the same library function as its CLI subcommand and records, only after its
checks pass (no golden mismatch, timing met, ...), a ``done.json`` in its folder: the SHA-256 of
every input file it read, its options, and the SHA-256 of every output it wrote. A rerun skips a
step only when all of those still match, so a changed input (a new model, other options, an
edited artifact) reruns that step and, through their inputs, every later step whose input it
changed. A failed step leaves no done-marker and stops the run. ``--start-step`` and
``--stop-step`` choose a range of steps; ``--force`` reruns the chosen steps even when up to date.

The run directory holds ``config.toml`` (the configuration of the last run), ``flow.log`` (a
clean line per step), ``time_per_step.json`` and the marker ``.bitsnn-flow``; the flow never
writes into a non-empty directory without that marker.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from . import BitsnnError
from .fileio import (DuplicateKeyError, FileKind, atomic_write_text, check_output_dir, check_output_file, inside,
                     same_path, unique_keys)
from .hwmodel import MAX_STEPS
from .hwplan import CONV_ENGINES
from .kinds import NEURONS
from .protocol import MAX_LANES
from .options import BOARDS, FLOAT32_MAX, MAX_LR, MAX_SEED, SIMULATORS, SURROGATES, OptionError, float_in, int_in, one_of

__all__ = [
    "STEP_NAMES",
    "TrainSection",
    "CosimSection",
    "BuildSection",
    "ReportSection",
    "FlowConfig",
    "run_flow",
    "flow_main",
    "demo_main",
]

STEP_NAMES = ("train", "export", "cosim", "build", "report")
#: marks a directory as a flow's run directory (the flow writes into no other non-empty one)
RUN_MARKER = ".bitsnn-flow"
DONE = "done.json"


def _opt(default, check, doc: str):
    """A config field: its default, its checker (None stays allowed where the default is None)
    and one line of documentation."""
    return field(default=default, metadata={"check": check, "doc": doc})


#: the steps a configuration may leave out (the report then does without their outputs)
SKIPPABLE = ("cosim", "build")


def _skippable(value) -> tuple:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise OptionError(f"expected a list of step names, got {value!r}")
    bad = [v for v in value if v not in SKIPPABLE]
    if bad:
        raise OptionError(f"{bad[0]!r}: only {' and '.join(SKIPPABLE)} can be left out")
    return tuple(dict.fromkeys(value))


def _text(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise OptionError(f"expected a non-empty string, got {value!r}")
    return value


@dataclass
class TrainSection:
    """``bitsnn train``: what to train. None takes the preset's value."""

    preset: str = _opt("conv-tiny", _text, "tiny | small | large | conv-tiny | conv | lif-tiny | fast-tiny | alb-tiny, or a layer spec "
                       "such as 784-256-10")
    spec: str | None = _opt(None, _text, "another layer spec with the preset's recipe, such as 784-c8w4-c32-10w4")
    weight_bits: int | None = _opt(None, int_in(1, 8), "every layer's weights: 1 (+-1) or 2..8 bits, whatever the spec says")
    timesteps: int | None = _opt(None, int_in(1, MAX_STEPS), "time steps per inference")
    neuron: str | None = _opt(None, one_of(*NEURONS), "the hidden layers' neuron model")
    epochs: int | None = _opt(None, int_in(1), "training epochs")
    seed: int = _opt(0, int_in(0, MAX_SEED), "random seed; the same seed gives the same model")
    batch_size: int | None = _opt(None, int_in(2), "mini-batch size (BatchNorm needs at least 2)")
    lr: float | None = _opt(None, float_in(0, MAX_LR, lo_open=True), "learning rate")
    sparsity: float | None = _opt(None, float_in(0, FLOAT32_MAX), "spike-rate regulariser weight")
    surrogate: str | None = _opt(None, one_of(*SURROGATES), "surrogate gradient")
    input_encoding: str | None = _opt(None, one_of("spikes", "pixels"), "input encoding")
    input_threshold: int | None = _opt(None, int_in(1, 255), "spike input: a pixel >= T is a spike")
    crop: int | None = _opt(None, int_in(0), "central CxC window of each image (0: whole images)")
    threads: int | None = _opt(None, int_in(1, 1024), "torch CPU threads (default 1)")
    limit_train: int | None = _opt(None, int_in(2), "train on the first N images only (at least 2)")
    precision: str | None = _opt(None, one_of("spec", "auto"), "the layers' weight widths: as the spec gives them, or "
                                 "auto: ALBSNN's accuracy-loss estimator picks each from 1, 2, 4, 8 bits")
    max_loss: float | None = _opt(None, float_in(0, 100), "precision auto: at most this many points of estimated "
                                  "accuracy loss (default 0.1 without max_weight_bits)")
    max_weight_bits: str | None = _opt(None, _text, "precision auto: at most N weight bits, or \"P%\" of the network at "
                                       "8 bits")
    search_epochs: int | None = _opt(None, int_in(1), "precision auto: the epochs the estimator runs after (default half)")
    holdout: int | None = _opt(None, int_in(1), "precision auto: training images held out for the estimator")
    bwo_epochs: int | None = _opt(None, int_in(0), "ALBSNN's binary weight optimisation in the last N epochs")


@dataclass
class CosimSection:
    """``bitsnn sim``: the co-simulation that must match the golden model."""

    simulator: str = _opt("icarus", one_of(*(s for s in SIMULATORS if s != "golden")), "icarus | verilator | amaranth")
    images: int = _opt(100, int_in(1), "first N test images")
    lanes: int | None = _opt(None, int_in(1, MAX_LANES), "event-core lanes (default: what bitsnn build generates)")
    wave_image: int = _opt(0, int_in(0), "the test image the waveform shows")


@dataclass
class BuildSection:
    """``bitsnn build``: the board and its build options."""

    board: str = _opt("icebreaker", one_of(*BOARDS), "icebreaker | ulx3s-85f")
    clock_mhz: float | None = _opt(None, float_in(0, lo_open=True), "PLL output frequency (default: the board's)")
    lanes: int | None = _opt(None, int_in(1, MAX_LANES), "event-core lanes (default: by layer width)")
    conv_engine: str = _opt("auto", one_of(*CONV_ENGINES), "the convolutions' stages: auto | event | window")
    seed: int = _opt(1, int_in(0, 2**31 - 2), "nextpnr seed")
    spram_layers: str = _opt("auto", _text, "auto | none | layer numbers like 0,1")
    baud: int | None = _opt(None, int_in(300, 12_000_000), "UART bit rate (default: the fastest the board's bridge carries)")


@dataclass
class ReportSection:
    """``bitsnn report``."""

    images: int | None = _opt(None, int_in(1), "first N test images (default: all)")


_SECTIONS = {"train": TrainSection, "cosim": CosimSection, "build": BuildSection, "report": ReportSection}

#: the demo (the default configuration) trains ``conv-tiny`` for 12 epochs (the preset's 20 give
#: 98.93 % at seed 0): with 15 (98.77 %) ``make demo`` took 15 min 52 s on this project's 2-core
#: machine, past its 15 minutes; a config file's [train] without ``epochs`` takes the preset's
DEMO_EPOCHS = 12


@dataclass
class FlowConfig:
    """One run of the flow. Relative paths are relative to the working directory."""

    run_dir: str = _opt("runs/demo", _text, "where every step writes its folder")
    data_dir: str | None = _opt(None, _text, "the four IDX files (default: the loader's search order)")
    model: str | None = _opt(None, _text, "an existing hardware-model file: skip train and export")
    skip: tuple = _opt((), lambda v: _skippable(v),
                       "steps left out: [\"cosim\", \"build\"] reports on the resource estimate, without a build")
    train: TrainSection = field(default_factory=lambda: TrainSection(epochs=DEMO_EPOCHS))
    cosim: CosimSection = field(default_factory=CosimSection)
    build: BuildSection = field(default_factory=BuildSection)
    report: ReportSection = field(default_factory=ReportSection)

    # ---- round trip ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d, source: str = "config") -> "FlowConfig":
        """A config from a dict (a parsed TOML or JSON file): every key known, every value of
        its type and range; a missing key takes its default. BitsnnError names the first
        problem."""
        if not isinstance(d, dict):
            raise BitsnnError(f"{source}: expected a table of settings, got {type(d).__name__}")
        kw = _checked(cls, {k: v for k, v in d.items() if k not in _SECTIONS}, source)
        for name, section in _SECTIONS.items():
            sub = d.get(name, {})
            if not isinstance(sub, dict):
                raise BitsnnError(f"{source}: [{name}] must be a table, got {type(sub).__name__}")
            kw[name] = section(**_checked(section, sub, f"{source}: [{name}]"))
        return cls(**kw)

    def dumps(self, fmt: str = "toml") -> str:
        """The config as TOML (settings left at None are omitted: TOML has no null) or JSON."""
        if fmt == "json":
            return json.dumps(self.to_dict(), indent=2) + "\n"
        if fmt != "toml":
            raise ValueError(f"format must be toml or json, not {fmt!r}")
        lines = ["# bitsnn flow configuration (bitsnn flow CONFIG); unset settings take their defaults"]
        top = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _SECTIONS}
        lines += _toml_table(type(self), top)
        for name in _SECTIONS:
            doc = (_SECTIONS[name].__doc__ or "").strip().splitlines()[0]
            lines += ["", f"[{name}]", f"# {doc}"] + _toml_table(_SECTIONS[name], asdict(getattr(self, name)))
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, path) -> "FlowConfig":
        """Read a ``.toml`` or ``.json`` config file."""
        return cls.from_dict(read_config(path), str(path))

    def save(self, path, *, force: bool = False) -> Path:
        """Write the config to ``path`` (.toml or .json, which :meth:`load` reads back); an existing
        file is replaced only when it is a flow configuration, or with ``force``."""
        if path is not None and str(path).strip() and Path(path).suffix not in (".toml", ".json"):
            raise BitsnnError(f"--save-config {path}: give a .toml or .json file name (bitsnn flow reads only those)")
        path = check_output_file(path, "--save-config", kind=CONFIG_FILE, force=force)
        atomic_write_text(path, self.dumps("json" if path.suffix == ".json" else "toml"))
        return path


def read_config(path) -> dict:
    """The table of settings in a ``.toml`` or ``.json`` file (one line for what is wrong with it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BitsnnError(f"cannot read config {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        if path.suffix == ".json":
            return json.loads(text, object_pairs_hook=unique_keys)
        if path.suffix == ".toml":
            return tomllib.loads(text)
        raise BitsnnError(f"config {path}: expected a .toml or .json file")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise BitsnnError(f"config {path}: {str(e).splitlines()[0]}") from None
    except DuplicateKeyError as e:  # TOML refuses a repeated key by itself
        raise BitsnnError(f"config {path}: the key {e.args[0]!r} is given twice") from None


def _is_config(path: Path) -> bool:
    try:
        FlowConfig.load(path)
    except BitsnnError:
        return False
    return True


#: what ``--save-config`` writes: an existing flow configuration may be replaced
CONFIG_FILE = FileKind("a bitsnn flow configuration", _is_config)


def _checked(cls, d: dict, source: str) -> dict:
    known = {f.name: f for f in fields(cls) if f.name not in _SECTIONS}
    out = {}
    for key, value in d.items():
        f = known.get(key)
        if f is None:
            raise BitsnnError(f"{source}: unknown setting {key!r} (known: {', '.join(known)})")
        if value is None and f.default is None:
            out[key] = None
            continue
        if isinstance(value, str) and "str" not in str(f.type):  # a file gives numbers as numbers
            raise BitsnnError(f"{source}: {key}: expected a number, got the string {value!r}")
        try:
            out[key] = f.metadata["check"](value)
        except OptionError as e:
            raise BitsnnError(f"{source}: {key}: {e}") from None
    return out


def _toml_table(cls, values: dict) -> list[str]:
    lines = []
    for f in fields(cls):
        if f.name in _SECTIONS:
            continue
        v = values[f.name]
        doc = f"  # {f.metadata['doc']}" if "doc" in f.metadata else ""
        if v is None:
            lines.append(f"# {f.name} = ...{doc}")
        else:
            lines.append(f"{f.name} = {json.dumps(v)}{doc}")  # a JSON scalar is a TOML scalar
    return lines


# ---- steps -----------------------------------------------------------------------------------
def _model_path(cfg: FlowConfig, run: Path) -> Path:
    return Path(cfg.model) if cfg.model else run / "export" / "model.bsnn"


def _build_folder(cfg: FlowConfig) -> str:
    return f"build-{cfg.build.board}"


def _wave(cfg: FlowConfig, run: Path) -> Path:
    return run / "cosim" / f"image{cfg.cosim.wave_image}.vcd"


def _train(cfg: FlowConfig, run: Path, log) -> None:
    from bitsnn.model.train import train_checkpoint

    train_checkpoint(_train_config(cfg), run / "train" / "model.ckpt", cfg.data_dir, log=log)


def _train_config(cfg: FlowConfig):
    from bitsnn.model.train import resolve_config

    t = asdict(cfg.train)
    bits = t.pop("weight_bits")
    if bits is not None:  # every layer at these bits: the spec given, else the preset's
        from bitsnn.model.network import PRESETS, with_weight_bits

        spec = t["spec"] or PRESETS.get(t["preset"], {}).get("spec", t["preset"])
        try:
            t["spec"] = with_weight_bits(spec, bits)
        except ValueError as e:
            raise BitsnnError(f"[train] weight_bits: {e}") from None
    return resolve_config(t.pop("preset"), **t)


def _export(cfg: FlowConfig, run: Path, log) -> None:
    from bitsnn.model.export import export_checkpoint

    export_checkpoint(run / "train" / "model.ckpt", run / "export" / "model.bsnn", cfg.data_dir, log=log)


class _Lines:
    """A text stream that passes each line to ``log``."""

    def __init__(self, log):
        self.log, self.buf = log, ""

    def write(self, text: str) -> int:
        self.buf += text
        *done, self.buf = self.buf.split("\n")
        for line in done:
            self.log(line)
        return len(text)

    def flush(self) -> None:
        pass


def _cosim(cfg: FlowConfig, run: Path, log) -> None:
    from bitsnn.sim.cosim.cli import sim_check

    c = cfg.cosim
    lanes = c.lanes or cfg.build.lanes
    if lanes is None:  # what the build stage will generate, so that both run the same design
        from bitsnn.boards.fit import board_lanes
        from bitsnn.hwmodel import HardwareModel

        lanes = board_lanes(cfg.build.board, HardwareModel.load(_model_path(cfg, run)), cfg.build.conv_engine)
    rc = sim_check(_model_path(cfg, run), images=c.images, simulator=c.simulator, lanes=lanes,
                   conv_engine=cfg.build.conv_engine,
                   wave=_wave(cfg, run), image=c.wave_image, data_dir=cfg.data_dir, out=_Lines(log))
    if rc:
        raise BitsnnError("co-simulation does not match the golden model")


def _cosim_options(cfg: FlowConfig) -> dict:
    """What the co-simulation depends on: its section, and the build's choices it simulates (the
    board and lanes that fix its lanes when it has none, the convolution stages)."""
    b = cfg.build
    return {**asdict(cfg.cosim), "board": b.board, "build_lanes": b.lanes, "conv_engine": b.conv_engine}


def _build(cfg: FlowConfig, run: Path, log) -> None:
    from bitsnn.boards.build import build_board, format_report, parse_spram_layers
    from bitsnn.hwmodel import HardwareModel

    b = cfg.build
    model = HardwareModel.load(_model_path(cfg, run))
    out = run / _build_folder(cfg)
    report = build_board(b.board, model, out, seed=b.seed, clock_mhz=b.clock_mhz, baud=b.baud, log=log,
                         accel={"lanes": b.lanes, "spram_layers": parse_spram_layers(b.spram_layers, model),
                                "conv_engine": b.conv_engine})
    for line in format_report(report).splitlines():
        log(line)
    if not report["timing_met"]:
        raise BitsnnError(f"the {b.board} build did not meet timing (see {out / 'report.json'})")


def _report(cfg: FlowConfig, run: Path, log) -> None:
    from bitsnn.report import make_report

    make_report(_model_path(cfg, run), board=cfg.build.board,
                build_dir=None if "build" in cfg.skip else run / _build_folder(cfg), output=run / "report",
                images=cfg.report.images, vcd=None if "cosim" in cfg.skip else _wave(cfg, run),
                data_dir=cfg.data_dir, say=log,
                lanes=(cfg.build.lanes or cfg.cosim.lanes) if "build" in cfg.skip else None,
                conv_engine=cfg.build.conv_engine if "build" in cfg.skip else None)


def _report_inputs(cfg: FlowConfig, run: Path) -> dict:
    """What the report reads: the model, the data, and the build's report and the waveform unless
    their steps are left out."""
    inputs = {"model": _model_path(cfg, run), "data": None}
    if "build" not in cfg.skip:
        inputs["build"] = run / _build_folder(cfg) / "report.json"
    if "cosim" not in cfg.skip:
        inputs["wave"] = _wave(cfg, run)
    return inputs


@dataclass(frozen=True)
class Step:
    """One named step: its folder, what it runs, the files it reads and writes, and the part
    of the configuration it depends on."""

    name: str
    folder: Callable[[FlowConfig], str]
    run: Callable[[FlowConfig, Path, Callable], None]
    inputs: Callable[[FlowConfig, Path], dict]  # name -> Path, or "data" -> the data set
    outputs: Callable[[FlowConfig, Path], list]
    options: Callable[[FlowConfig], dict]


STEPS = {
    "train": Step("train", lambda c: "train", _train, lambda c, r: {"data": None},
                  lambda c, r: [r / "train" / "model.ckpt"], lambda c: asdict(c.train)),
    "export": Step("export", lambda c: "export", _export,
                   lambda c, r: {"checkpoint": r / "train" / "model.ckpt", "data": None},
                   lambda c, r: [r / "export" / "model.bsnn"], lambda c: {}),
    "cosim": Step("cosim", lambda c: "cosim", _cosim, lambda c, r: {"model": _model_path(c, r), "data": None},
                  lambda c, r: [_wave(c, r)], lambda c: _cosim_options(c)),
    "build": Step("build", _build_folder, _build, lambda c, r: {"model": _model_path(c, r)},
                  lambda c, r: [r / _build_folder(c) / "report.json"], lambda c: asdict(c.build)),
    "report": Step("report", lambda c: "report", _report, _report_inputs,
                   lambda c, r: [r / "report" / "report.json"],
                   lambda c: {**asdict(c.report), "board": c.build.board,
                              **({"skip": list(c.skip), "lanes": c.build.lanes or c.cosim.lanes,
                                  "conv_engine": c.build.conv_engine} if c.skip else {})}),
}
assert tuple(STEPS) == STEP_NAMES


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class _Hashes:
    """File hashes for one flow run, each file read once (the data set's four files too)."""

    def __init__(self, cfg: FlowConfig):
        self.cfg, self.memo = cfg, {}

    def file(self, path: Path) -> str | None:
        """SHA-256 of a file (None when it does not exist), cached by path, size and mtime."""
        path = Path(path)
        if not path.is_file():
            return None
        st = path.stat()
        key = (str(path.absolute()), st.st_size, st.st_mtime_ns)
        if key not in self.memo:
            self.memo[key] = _sha256(path)
        return self.memo[key]

    def data(self) -> str | None:
        """One hash of the data set's four IDX files (None when they are not found yet)."""
        from bitsnn.data import dataset_files

        files = dataset_files(self.cfg.data_dir)
        if files is None:
            return None
        return hashlib.sha256("".join(self.file(p) for p in files).encode()).hexdigest()

    def inputs(self, step: Step, run: Path) -> dict:
        return {k: (self.data() if k == "data" else self.file(p)) for k, p in step.inputs(self.cfg, run).items()}


def _stale(step: Step, cfg: FlowConfig, run: Path, hashes: _Hashes) -> str | None:
    """Why ``step`` must run (None: it is up to date)."""
    done = run / step.folder(cfg) / DONE
    try:
        rec = json.loads(done.read_text())
    except (OSError, ValueError):
        return "not done yet"
    if not isinstance(rec, dict) or rec.get("options") != json.loads(json.dumps(step.options(cfg))):
        return "its options changed"
    now = hashes.inputs(step, run)
    for k, v in now.items():
        if v is None or (rec.get("inputs") or {}).get(k) != v:
            return f"its input {k} changed"
    for p in step.outputs(cfg, run):
        if hashes.file(p) is None or (rec.get("outputs") or {}).get(p.name) != hashes.file(p):
            return f"its output {p.name} is missing or changed"
    return None


def _mark_done(step: Step, cfg: FlowConfig, run: Path, hashes: _Hashes, seconds: float) -> None:
    outputs = {}
    for p in step.outputs(cfg, run):
        h = hashes.file(p)
        if h is None:
            raise BitsnnError(f"step {step.name} finished without writing {p}")
        outputs[p.name] = h
    rec = {"step": step.name, "options": step.options(cfg), "inputs": hashes.inputs(step, run),
           "outputs": outputs, "seconds": round(seconds, 1)}
    atomic_write_text(run / step.folder(cfg) / DONE, json.dumps(rec, indent=2) + "\n")


def _check_run_dir(run: Path) -> None:
    check_output_dir(run, "--run-dir")
    if run.is_dir() and any(run.iterdir()) and not (run / RUN_MARKER).is_file():
        raise BitsnnError(f"--run-dir {run}: the directory exists and is not a bitsnn flow's run directory "
                          f"(it has no {RUN_MARKER}); give a new or empty directory")


#: the files the flow itself writes at the top of its run directory
RUN_FILES = ("config.toml", "flow.log", "time_per_step.json", RUN_MARKER)


def _check_inputs_outside(cfg: FlowConfig, run: Path, names: list[str], config_path=None) -> None:
    """The flow's own inputs (the model it names, the data set) may not lie where a selected step
    writes, nor be one of the run directory's own files; the config file may be the run
    directory's config.toml (the flow then leaves it as it is)."""
    if not run.exists():
        return
    folders = [run / STEPS[n].folder(cfg) for n in names]
    checks = [("model", cfg.model), ("data_dir", cfg.data_dir)]
    for what, p in checks:
        if p is None:
            continue
        if any(inside(p, f) for f in folders) or any(same_path(p, run / name) for name in RUN_FILES):
            raise BitsnnError(f"{what} {p}: lies where this flow writes in {run}; move it out of the run directory")
    if config_path is not None and any(same_path(config_path, f) for f in folders + [run / n for n in RUN_FILES[1:]]):
        raise BitsnnError(f"config {config_path}: lies where this flow writes in {run}; move it out of the run directory")


def _select(cfg: FlowConfig, start: str | None, stop: str | None) -> list[str]:
    for what, name in (("--start-step", start), ("--stop-step", stop)):
        if name is not None and name not in STEP_NAMES:
            raise BitsnnError(f"{what} {name!r}: the steps are {', '.join(STEP_NAMES)}")
    names = list(STEP_NAMES[STEP_NAMES.index(start or STEP_NAMES[0]): STEP_NAMES.index(stop or STEP_NAMES[-1]) + 1])
    if not names:
        raise BitsnnError(f"--start-step {start} comes after --stop-step {stop}")
    names = [n for n in names if n not in cfg.skip]
    if not names:
        raise BitsnnError(f"the config leaves out {', '.join(cfg.skip)}; choose other steps")
    if cfg.model:  # an existing hardware model: nothing to train or export
        names = [n for n in names if n not in ("train", "export")]
        if not names:
            raise BitsnnError("the config names a model, so train and export do not run; choose later steps")
    return names


def _preflight(cfg: FlowConfig, run: Path, names: list[str], config_path=None) -> None:
    """Every check that needs no long work, before the first step runs."""
    _check_run_dir(run)
    _check_inputs_outside(cfg, run, names, config_path)
    from bitsnn.hwmodel import HardwareModel

    model = HardwareModel.load(cfg.model) if cfg.model else None
    if "train" in names:
        _train_config(cfg)
    if "cosim" in names:
        from bitsnn.sim.cosim.cli import _check_simulator

        _check_simulator(cfg.cosim.simulator)
    if "build" in names:
        from bitsnn.boards.build import parse_spram_layers, spram_layers_syntax
        from bitsnn.boards.common import check_build_dir

        check_build_dir(run / _build_folder(cfg), inputs=[cfg.model])
        try:  # the layers themselves when the model is known already, else the syntax
            if model is not None:
                parse_spram_layers(cfg.build.spram_layers, model)
            else:
                spram_layers_syntax(cfg.build.spram_layers)
        except BitsnnError as e:
            raise BitsnnError(f"[build] spram_layers: {e}") from None
    if cfg.data_dir is not None and any("data" in STEPS[n].inputs(cfg, run) for n in names):
        from bitsnn.data import find_data_dir

        find_data_dir(cfg.data_dir)  # a data_dir that is not there fails now, not at the step that reads it
    # inputs that no selected step makes must be there already
    made = set()
    for name in names:
        step = STEPS[name]
        for k, p in step.inputs(cfg, run).items():
            if p is not None and str(p) not in made and not Path(p).is_file():
                maker = next((s for s in STEP_NAMES if any(str(o) == str(p) for o in STEPS[s].outputs(cfg, run))), None)
                hint = f", which step {maker} makes: start from {maker} or earlier" if maker else ""
                raise BitsnnError(f"step {name} needs {p}{hint}")
        made.update(str(o) for o in step.outputs(cfg, run))


def run_flow(cfg: FlowConfig, *, start: str | None = None, stop: str | None = None, force: bool = False,
             log=None, config_path=None) -> dict:
    """Run the steps ``start``..``stop`` of ``cfg`` (default: all) that are not up to date (all of
    them with ``force``); returns {step: seconds} of the steps that ran. A failing step raises
    BitsnnError after logging it; its done-marker is not written."""
    run = Path(cfg.run_dir)
    names = _select(cfg, start, stop)
    _preflight(cfg, run, names, config_path)
    run.mkdir(parents=True, exist_ok=True)
    (run / RUN_MARKER).write_text(json.dumps({"written_by": "bitsnn flow"}) + "\n")
    if config_path is None or not same_path(config_path, run / "config.toml"):  # never rewrite the input
        atomic_write_text(run / "config.toml", cfg.dumps("toml"))
    logfile = open(run / "flow.log", "a", encoding="utf-8")

    def say(msg: str = "") -> None:
        (log or print)(msg)
        logfile.write(msg + "\n")
        logfile.flush()

    times_path = run / "time_per_step.json"
    try:
        times = json.loads(times_path.read_text())
    except (OSError, ValueError):
        times = {}
    ran = {}
    hashes = _Hashes(cfg)
    t_all = time.perf_counter()
    try:
        say(f"==> flow {', '.join(names)} in {run}")
        for name in names:
            step = STEPS[name]
            why = "--force" if force else _stale(step, cfg, run, hashes)
            if why is None:
                say(f"==> {name}: up to date (inputs, options and outputs unchanged)")
                continue
            say(f"==> {name}: running ({why})")
            (run / step.folder(cfg) / DONE).unlink(missing_ok=True)
            t0 = time.perf_counter()
            try:
                step.run(cfg, run, say)
            except BitsnnError as e:
                say(f"==> {name}: FAILED after {time.perf_counter() - t0:.1f} s: {e}")
                raise
            except KeyboardInterrupt:
                say(f"==> {name}: INTERRUPTED after {time.perf_counter() - t0:.1f} s (not marked done; "
                    "the next run starts it again)")
                raise
            seconds = time.perf_counter() - t0
            _mark_done(step, cfg, run, hashes, seconds)
            ran[name] = times[name] = round(seconds, 1)
            atomic_write_text(times_path, json.dumps(times, indent=2) + "\n")
            say(f"==> {name}: done in {seconds:.1f} s")
        say(f"==> flow finished in {time.perf_counter() - t_all:.1f} s; artifacts in {run}")
    finally:
        logfile.close()
    return ran


def _flow_args(args, cfg: FlowConfig) -> FlowConfig:
    if getattr(args, "run_dir", None) is not None:
        cfg.run_dir = args.run_dir
    if getattr(args, "data_dir", None) is not None:
        cfg.data_dir = args.data_dir
    return cfg


def _run(args, cfg: FlowConfig, config_path=None) -> int:
    run_flow(cfg, start=args.start_step, stop=args.stop_step, force=args.force,
             log=lambda m: print(m, flush=True), config_path=config_path)
    return 0


def flow_main(args) -> int:
    """``bitsnn flow CONFIG``."""
    return _run(args, _flow_args(args, FlowConfig.load(args.config)), config_path=args.config)


def demo_main(args) -> int:
    """``bitsnn demo``: the flow with the default configuration (``--save-config`` writes it out)."""
    cfg = _flow_args(args, FlowConfig())
    if getattr(args, "save_config", None):
        path = cfg.save(args.save_config, force=args.force)
        print(f"wrote {path}; run it with: bitsnn flow {path}", file=sys.stdout)
        return 0
    return _run(args, cfg)
