"""``bitsnn sweep CONFIG``: a multi-objective Optuna study over the flow.

The configuration is a flow configuration (``bitsnn flow``) with one more table, ``[sweep]``::

    run_dir = "runs/sweep"          # the study's folder: trials/, study.db, trials.csv, ...
    skip = ["cosim", "build"]       # optional: judge each trial on the resource estimate

    [train]
    preset = "conv-tiny"
    epochs = 3

    [sweep]
    trials = 20                     # trials in all, over every worker and every resumed run
    seed = 0                        # the sampler's
    # storage = "postgresql://user@host/db"   (default: sqlite in run_dir; or "journal:FILE")

    [sweep.space]                   # a dotted setting of the flow config -> its choices
    "train.weight_bits" = [1, 2, 4]
    "train.timesteps" = [1, 2]
    "train.sparsity" = {low = 0.0, high = 0.01}
    "build.lanes" = [8, 16]

A list is a categorical choice; a table ``{low, high}`` is a range (integers when both are, with
an optional ``step``; ``log = true`` samples it logarithmically).

**A trial is a flow run** in ``run_dir/trials/<key>``, where the key is a hash of the trial's
configuration: a trial whose settings repeat an earlier one's (a retried trial, or the sampler
proposing a point again) finds its steps up to date and skips them.

**Objectives**, from the trial's ``report/report.json``: test accuracy (maximised), logic cells
(the build's, else the estimate's), mean latency and FPGA energy per inference (minimised).
The sampler is Optuna's NSGA-II, seeded.

**Workers and interruptions.** ``--workers N`` runs N processes on this machine; more machines
join by running the same command on an RDB URL (PostgreSQL) the study lives in. The trial
budget counts finished and failed trials and the ones under way. A trial that fails
(``bitsnn flow`` refuses or fails it) is recorded as failed with its one-line reason. A worker
that is killed leaves its trial running in the storage: on an RDB storage its heartbeat stops,
and after the grace period (``[sweep] heartbeat`` seconds x 2) the next worker marks it failed
and runs it again. A journal file keeps no heartbeats: ``--retry-running`` does that for its
running trials (only when no worker of the study runs).

**Output**, when the workers are done: a table of every trial (printed and ``trials.csv``), the
Pareto front (printed and plotted in ``pareto.png``: accuracy against logic cells and against
energy), and ``best.toml``, the flow configuration of the Pareto trial with the highest accuracy
(ties: fewer logic cells, then less energy).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import BitsnnError
from .fileio import atomic_path, atomic_write_text, check_output_dir
from .flow import _SECTIONS, FlowConfig, read_config, run_flow
from .options import OptionError

__all__ = ["SweepSettings", "Dimension", "load_sweep", "sweep_main", "OBJECTIVES"]

#: (name, report.json reader's key, direction), in the study's order
OBJECTIVES = (("accuracy", "maximize"), ("logic_cells", "minimize"), ("latency_us", "minimize"),
              ("energy_uj", "minimize"))
#: what the sweep writes at the top of its run directory (besides trials/)
SWEEP_MARKER = ".bitsnn-sweep"
STUDY_DB = "study.db"


@dataclass(frozen=True)
class Dimension:
    """One setting of the space: a list of choices, or a range."""

    key: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False

    @property
    def is_int(self) -> bool:
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int) \
            and (self.step is None or isinstance(self.step, int))

    def suggest(self, trial):
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.is_int:
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)

    def text(self) -> str:
        if self.choices is not None:
            return f"{self.key} in {list(self.choices)}"
        return f"{self.key} in [{self.low}, {self.high}]" + (f" step {self.step}" if self.step else "") \
            + (" (log)" if self.log else "")


@dataclass
class SweepSettings:
    """The ``[sweep]`` table."""

    trials: int = 20
    seed: int = 0
    study: str = "bitsnn"
    storage: str | None = None
    #: seconds between an RDB trial's heartbeats; a trial silent for twice this is taken as killed
    heartbeat: int = 10


def _setting(cfg: FlowConfig, key: str):
    """(the dataclass holding the dotted ``key``, its field name), or BitsnnError."""
    parts = key.split(".")
    if len(parts) == 1 and parts[0] not in _SECTIONS:
        holder, name = cfg, parts[0]
    elif len(parts) == 2 and parts[0] in _SECTIONS:
        holder, name = getattr(cfg, parts[0]), parts[1]
    else:
        raise BitsnnError(f"[sweep.space] {key!r}: expected a setting such as train.epochs or build.lanes")
    known = {f.name: f for f in fields(holder) if f.name not in _SECTIONS}
    if name not in known or name in ("run_dir", "data_dir", "model"):
        raise BitsnnError(f"[sweep.space] {key!r}: not a setting the sweep can vary (known: "
                          + ", ".join(f"{parts[0]}.{k}" if len(parts) == 2 else k for k in known) + ")")
    return holder, known[name]


def apply(base: FlowConfig, params: dict) -> FlowConfig:
    """``base`` with each dotted setting of ``params`` set (checked as the flow checks it)."""
    cfg = FlowConfig.from_dict(base.to_dict())
    for key, value in params.items():
        holder, f = _setting(cfg, key)
        try:
            setattr(holder, f.name, f.metadata["check"](value))
        except OptionError as e:
            raise BitsnnError(f"[sweep.space] {key} = {value!r}: {e}") from None
    return cfg


def _dimension(key: str, spec) -> Dimension:
    if isinstance(spec, list):
        if not spec:
            raise BitsnnError(f"[sweep.space] {key}: give at least one choice")
        if not all(isinstance(v, (str, int, float, bool)) for v in spec):
            raise BitsnnError(f"[sweep.space] {key}: choices must be strings, numbers or booleans")
        return Dimension(key, choices=tuple(spec))
    if isinstance(spec, dict):
        extra = set(spec) - {"low", "high", "step", "log"}
        if extra or "low" not in spec or "high" not in spec:
            raise BitsnnError(f"[sweep.space] {key}: a range is {{low = ..., high = ...}} with optional step and log")
        low, high, step, log = spec["low"], spec["high"], spec.get("step"), spec.get("log", False)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or low > high:
            raise BitsnnError(f"[sweep.space] {key}: low and high must be numbers with low <= high")
        if step is not None and (not isinstance(step, (int, float)) or step <= 0):
            raise BitsnnError(f"[sweep.space] {key}: step must be a positive number")
        if not isinstance(log, bool) or (log and (low <= 0 or step is not None)):
            raise BitsnnError(f"[sweep.space] {key}: log = true needs low > 0 and no step")
        return Dimension(key, low=low, high=high, step=step, log=log)
    raise BitsnnError(f"[sweep.space] {key}: give a list of choices or a table {{low, high}}")


def load_sweep(path) -> tuple[FlowConfig, SweepSettings, list[Dimension]]:
    """Read a sweep configuration: the base flow configuration, the ``[sweep]`` settings and the
    space; every setting and every choice is checked here, before any work."""
    path = Path(path)
    d = read_config(path)
    if not isinstance(d, dict) or not isinstance(d.get("sweep"), dict):
        raise BitsnnError(f"config {path}: a sweep needs a [sweep] table (and [sweep.space])")
    sweep = dict(d.pop("sweep"))
    space = sweep.pop("space", None)
    base = FlowConfig.from_dict(d, str(path))
    if base.model:
        raise BitsnnError(f"config {path}: a sweep trains its models; leave out model")
    known = {f.name: f for f in fields(SweepSettings)}
    for k, v in sweep.items():
        if k not in known:
            raise BitsnnError(f"config {path}: [sweep] unknown setting {k!r} (known: {', '.join(known)}, space)")
    settings = SweepSettings(**sweep)
    for name in ("trials", "heartbeat"):
        v = getattr(settings, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise BitsnnError(f"config {path}: [sweep] {name} must be a positive integer, got {v!r}")
    if not isinstance(settings.seed, int) or isinstance(settings.seed, bool) or settings.seed < 0:
        raise BitsnnError(f"config {path}: [sweep] seed must be a non-negative integer, got {settings.seed!r}")
    if not isinstance(settings.study, str) or not settings.study.strip():
        raise BitsnnError(f"config {path}: [sweep] study must be a name")
    if settings.storage is not None and (not isinstance(settings.storage, str) or not settings.storage.strip()):
        raise BitsnnError(f"config {path}: [sweep] storage must be a URL or journal:FILE")
    if not isinstance(space, dict) or not space:
        raise BitsnnError(f"config {path}: [sweep.space] must name at least one setting to vary")
    dims = [_dimension(k, v) for k, v in space.items()]
    for dim in dims:  # each choice (each range's ends) must be a value the flow takes
        for value in dim.choices if dim.choices is not None else (dim.low, dim.high):
            apply(base, {dim.key: value})
    return base, settings, dims


# ---- the study ----------------------------------------------------------------------------------
def _storage(settings: SweepSettings, run: Path):
    """The Optuna storage the settings name: SQLite in the run directory by default."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    url = given = settings.storage or f"sqlite:///{(run / STUDY_DB).absolute()}"
    for plain in ("postgresql://", "postgres://"):  # SQLAlchemy 2.1's default driver is psycopg 3; bitsnn has psycopg2
        if url.startswith(plain):
            url = "postgresql+psycopg2://" + url[len(plain):]
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(url[len("journal:"):]))
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        with _quiet_optuna():
            return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=settings.heartbeat,
                              grace_period=2 * settings.heartbeat,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    except Exception as e:  # SQLAlchemy's many errors for a bad URL, a missing driver, a refused login
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "DB access module" in first:
            first += " (bitsnn installs SQLite's and PostgreSQL's: sqlite:///FILE, postgresql://...)"
        raise BitsnnError(f"storage {_safe_url(given)}: {first[:300]}") from None


def _safe_url(url: str) -> str:
    """The URL with any password in it masked (``scheme://user:***@host/...``)."""
    return re.sub(r"(://[^/@:]*):[^/]*@", r"\1:***@", url)


@contextmanager
def _quiet_optuna():
    """Optuna's own log lines (one per trial, a traceback per failed one) stay out of the
    terminal: the sweep prints its own line per trial."""
    import optuna

    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():  # "experimental" notes on the API the sweep uses
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(before)


def _space_json(dims: list[Dimension]) -> str:
    return json.dumps([asdict(d) for d in dims], sort_keys=True)


def open_study(base: FlowConfig, settings: SweepSettings, dims: list[Dimension], *, create: bool, seed=None):
    """The study (created when ``create``); its sampler seeded with ``seed`` (default: the
    settings'): each worker draws its own points."""
    import optuna

    run = Path(base.run_dir)
    storage = _storage(settings, run)
    with _quiet_optuna():
        sampler = optuna.samplers.NSGAIISampler(seed=settings.seed if seed is None else seed)
        if create:
            study = optuna.create_study(study_name=settings.study, storage=storage, sampler=sampler,
                                        directions=[d for _, d in OBJECTIVES], load_if_exists=True)
        else:
            study = optuna.load_study(study_name=settings.study, storage=storage, sampler=sampler)
    space = study.user_attrs.get("space")
    if space is None and create:
        study.set_user_attr("space", _space_json(dims))
        study.set_user_attr("base", base.to_dict())
    elif space != _space_json(dims):
        raise BitsnnError(f"study {settings.study!r} in {_safe_url(settings.storage or str(run / STUDY_DB))} was "
                          "started with another space; give it another [sweep] study name or run_dir")
    return study


def trial_key(cfg: FlowConfig) -> str:
    d = cfg.to_dict()
    d.pop("run_dir")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def objectives(report: dict, estimate_logic=None) -> dict:
    """The four objectives of a trial's report.json: its build's logic cells, else
    ``estimate_logic`` (a callable giving the estimate's)."""
    build = report.get("build") or {}
    logic = (build.get("utilisation") or {}).get("logic", {}).get("used") if build else None
    if logic is None:
        logic = estimate_logic()
    fpga = report["energy"]["fpga"]
    return {"accuracy": float(report["accuracy"]), "logic_cells": int(logic),
            "latency_us": float(report["timing"]["latency_s"]["mean"]) * 1e6,
            "energy_uj": float(fpga["total_j"]) * 1e6 if fpga.get("total_j") is not None else float("inf")}


def _counted(study) -> int:
    """Trials that count against the budget: finished, failed by the flow, under way or waiting
    (a trial failed because its worker was killed does not count: its retry does)."""
    from optuna.trial import TrialState

    n = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.PRUNED):
            n += 1
        elif t.state == TrialState.FAIL and "error" in t.user_attrs:
            n += 1
    return n


@contextmanager
def _file_lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield f
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _budget_lock(run: Path):
    """One worker at a time on this machine counts the budget and takes a trial."""
    return _file_lock(run / ".sweep.lock")


def _trial_lock(trial_dir: Path):
    """One flow at a time in a trial's folder (two trials at the same point share it)."""
    return _file_lock(trial_dir.parent / f"{trial_dir.name}.lock")


def _line(msg: str) -> None:
    print(msg, flush=True)


def worker(config_path: str, overrides: dict, worker_id: int = 0, workers: int = 1) -> int:
    """One worker: take trials until the budget is spent and no trial is under way. A lone
    worker's sampler takes the configured seed (the same sweep again draws the same points);
    each of several workers, or of workers on several machines, its own."""
    import optuna
    from optuna.trial import TrialState

    base, settings, dims = load_sweep(config_path)
    _override(base, settings, overrides)
    run = Path(base.run_dir)
    seed = settings.seed if workers == 1 else int.from_bytes(hashlib.sha256(
        f"{settings.seed}:{worker_id}:{os.uname().nodename}:{os.getpid()}".encode()).digest()[:4], "little")
    study = open_study(base, settings, dims, create=False, seed=seed)
    heartbeat = not settings.storage or not settings.storage.startswith("journal:")
    done = 0

    def objective(trial, release):
        release()
        params = {d.key: d.suggest(trial) for d in dims}
        cfg = apply(base, params)
        cfg.run_dir = str(run / "trials" / trial_key(cfg))
        trial.set_user_attr("run_dir", cfg.run_dir)
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        _line(f"[sweep] trial {trial.number} (worker {worker_id}): {shown}")
        t0 = time.perf_counter()
        try:
            with _trial_lock(Path(cfg.run_dir)):  # a repeated point waits, then finds its steps done
                run_flow(cfg, log=lambda m: None)
            report = json.loads((Path(cfg.run_dir) / "report" / "report.json").read_text())
            values = objectives(report, lambda: _estimate_logic(cfg, report))
        except BitsnnError as e:
            trial.set_user_attr("error", str(e).splitlines()[0][:300])
            _line(f"[sweep] trial {trial.number} failed after {time.perf_counter() - t0:.1f} s: {e}")
            raise
        except Exception as e:  # a bug, recorded as one line, not a traceback
            trial.set_user_attr("error", f"internal error: {type(e).__name__}: {str(e)[:200]}")
            _line(f"[sweep] trial {trial.number} failed after {time.perf_counter() - t0:.1f} s: internal error: "
                  f"{type(e).__name__}: {e}")
            raise
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 1))
        _line(f"[sweep] trial {trial.number} done in {time.perf_counter() - t0:.1f} s: "
              + ", ".join(_fmt(k, values[k]) for k, _ in OBJECTIVES))
        return tuple(values[k] for k, _ in OBJECTIVES)

    while True:
        lock = _budget_lock(run)
        lock.__enter__()
        held = [True]

        def release():
            if held[0]:
                held[0] = False
                lock.__exit__(None, None, None)

        try:
            if heartbeat:
                with _quiet_optuna():
                    optuna.storages.fail_stale_trials(study)
            states = [t.state for t in study.get_trials(deepcopy=False)]
            if _counted(study) >= settings.trials and TrialState.WAITING not in states:  # queued retries run
                release()
                if TrialState.RUNNING not in states:
                    return done
                time.sleep(min(2.0, settings.heartbeat / 2))  # wait for the trials under way (or their retry)
                continue
            with _quiet_optuna():
                study.optimize(lambda t: objective(t, release), n_trials=1, catch=(Exception,))
            done += 1
        finally:
            release()


def _estimate_logic(cfg: FlowConfig, report: dict) -> int:
    """Logic cells of the design the trial's report describes (its lanes and convolution
    stages), from the estimate: the trial has no build."""
    from .boards import board_facts
    from .boards.fit import DEFAULT_ACCEL, estimate_on
    from .hwmodel import HardwareModel

    model = HardwareModel.load(Path(cfg.run_dir) / "export" / "model.bsnn")
    hw = report["hardware"]
    accel = dict(DEFAULT_ACCEL, lanes=hw["lanes"], conv_engine=hw["conv_engine"])
    return int(estimate_on(board_facts(cfg.build.board), model, accel)["logic"])


def _fmt(key: str, v) -> str:
    if key == "accuracy":
        return f"accuracy {100 * v:.2f} %"
    if key == "logic_cells":
        return f"{int(v):,} LC"
    return f"{v:,.1f} us" if key == "latency_us" else f"{v:.3f} uJ"


def _override(base: FlowConfig, settings: SweepSettings, o: dict) -> None:
    if o.get("run_dir"):
        base.run_dir = o["run_dir"]
    if o.get("data_dir"):
        base.data_dir = o["data_dir"]
    if o.get("storage"):
        settings.storage = o["storage"]
    if o.get("trials"):
        settings.trials = o["trials"]


def _child(config_path, overrides, worker_id, workers, parent):
    """A worker process. It leads its own process group, and it takes that group (itself, and
    the tools its flow runs: Yosys, nextpnr, simulators) down when its parent, the sweep, dies
    (PR_SET_PDEATHSIG) or stops it: a killed sweep leaves no worker and no tool behind."""
    import ctypes
    import signal

    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
    try:
        armed = ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM) == 0  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        armed = False
    if not armed:  # a thread watches for the sweep's death instead
        import threading

        def watch():
            while os.getppid() == parent:
                time.sleep(0.5)
            os.killpg(0, signal.SIGKILL)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the sweep died before the lines above
        os.killpg(0, signal.SIGKILL)
    try:
        worker(config_path, overrides, worker_id, workers)
        sys.exit(0)
    except BitsnnError as e:
        print(f"bitsnn sweep: error: worker {worker_id}: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


# ---- output -------------------------------------------------------------------------------------
def _rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"trial": t.number, "state": t.state.name.lower(), **{k: v for k, v in t.params.items()}}
        if t.values:
            row.update({k: v for (k, _), v in zip(OBJECTIVES, t.values)})
        row["seconds"] = t.user_attrs.get("seconds")
        row["error"] = t.user_attrs.get("error") or ("its worker stopped (retried)" if t.state.name == "FAIL" else "")
        row["run_dir"] = t.user_attrs.get("run_dir", "")
        rows.append(row)
    return rows


def _table(rows: list[dict], keys: list[str]) -> list[str]:
    def cell(k, v):
        if v is None or v == "":
            return ""
        if k in ("accuracy", "logic_cells", "latency_us", "energy_uj"):
            return _fmt(k, v).split(" ", 1)[-1] if k == "accuracy" else _fmt(k, v)
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(k, r.get(k)) for k in keys) + " |" for r in rows]
    return lines


def best_trial(front):
    """The Pareto trial with the highest accuracy (ties: fewer logic cells, then less energy)."""
    return min(front, key=lambda t: (-t.values[0], t.values[1], t.values[3], t.number)) if front else None


def summarise(base: FlowConfig, settings: SweepSettings, dims: list[Dimension], study, say=_line) -> dict:
    from optuna.trial import TrialState

    run = Path(base.run_dir)
    rows = _rows(study)
    keys = ["trial", "state"] + [d.key for d in dims] + [k for k, _ in OBJECTIVES] + ["seconds", "error"]
    with atomic_path(run / "trials.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=keys + ["run_dir"], extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    states = {s: sum(r["state"] == s for r in rows) for s in ("complete", "fail", "running", "waiting")}
    say(f"[sweep] {len(rows)} trials: {states['complete']} complete, {states['fail']} failed"
        + (f", {states['running']} running" if states["running"] else ""))
    for line in _table(rows, keys):
        say(line)
    front = [t for t in study.best_trials if t.state == TrialState.COMPLETE]
    front.sort(key=lambda t: (-t.values[0], t.values[1]))
    say(f"[sweep] Pareto front ({len(front)} trials): accuracy up, logic cells, latency and energy down")
    by_number = {r["trial"]: r for r in rows}
    for line in _table([by_number[t.number] for t in front], keys[:-2]):
        say(line)
    best = best_trial(front)
    out = {"trials": len(rows), **states, "pareto": [t.number for t in front], "best": None}
    if best is not None:
        cfg = FlowConfig.load(Path(best.user_attrs["run_dir"]) / "config.toml")
        atomic_write_text(run / "best.toml", cfg.dumps("toml"))
        out["best"] = best.number
        say(f"[sweep] best (highest accuracy on the front): trial {best.number}; wrote {run / 'best.toml'} "
            f"(bitsnn flow {run / 'best.toml'})")
    if front:
        _plot(run / "pareto.png", study, front)
        say(f"[sweep] wrote {run / 'trials.csv'} and {run / 'pareto.png'}")
    atomic_write_text(run / "sweep.json", json.dumps(out, indent=2) + "\n")
    return out


def _plot(path: Path, study, front) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, j, label in ((axes[0], 1, "logic cells"), (axes[1], 3, "FPGA energy per inference (uJ)")):
        ax.scatter([t.values[j] for t in done], [100 * t.values[0] for t in done], c="0.7", label="trials")
        pts = sorted((t.values[j], 100 * t.values[0], t.number) for t in front)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", c="C3", label="Pareto front")
        for x, y, n in pts:
            ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    fig.suptitle(f"bitsnn sweep: {len(done)} trials")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# ---- the command --------------------------------------------------------------------------------
def _check_run_dir(run: Path) -> None:
    check_output_dir(run, "--run-dir")
    if run.is_dir() and any(run.iterdir()) and not (run / SWEEP_MARKER).is_file():
        raise BitsnnError(f"--run-dir {run}: the directory exists and is not a bitsnn sweep's run directory "
                          f"(it has no {SWEEP_MARKER}); give a new or empty directory")


def sweep_main(args) -> int:
    """``bitsnn sweep CONFIG``."""
    import multiprocessing as mp

    overrides = {"run_dir": args.run_dir, "data_dir": args.data_dir, "storage": args.storage, "trials": args.trials}
    base, settings, dims = load_sweep(args.config)
    _override(base, settings, overrides)
    run = Path(base.run_dir)
    _check_run_dir(run)
    if base.data_dir is not None:
        from .data import find_data_dir

        find_data_dir(base.data_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / SWEEP_MARKER).write_text(json.dumps({"written_by": "bitsnn sweep"}) + "\n")
    study = open_study(base, settings, dims, create=True)
    if args.retry_running:
        _retry_running(study)
    where = _safe_url(settings.storage) if settings.storage else str(run / STUDY_DB)
    _line(f"[sweep] study {settings.study!r} in {where}: {settings.trials} trials over "
          + "; ".join(d.text() for d in dims) + f"; {args.workers} worker(s)")
    overrides["run_dir"], overrides["storage"] = str(run), settings.storage
    # the workers are processes of their own even when there is one, so that killing the sweep
    # takes down the tools they run (see _child)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_child, args=(args.config, overrides, i, args.workers, os.getpid()), daemon=False)
             for i in range(args.workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
        raise
    bad = [i for i, p in enumerate(procs) if p.exitcode]
    if bad:
        raise BitsnnError(f"worker(s) {', '.join(map(str, bad))} stopped with an error (above)")
    summarise(base, settings, dims, open_study(base, settings, dims, create=False))
    return 0


def _retry_running(study) -> None:
    """Fail the study's running trials and queue them again (for a journal file, which keeps no
    heartbeats; only when no worker of the study runs)."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        with _quiet_optuna():
            study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(t.params, skip_if_exists=False)
        _line(f"[sweep] trial {t.number} was running when its worker stopped: queued again")
