"""``bitsnn sweep``: a multi-objective Optuna study over the flow, with two workers on SQLite and
on a real PostgreSQL server, and a sweep killed with SIGKILL that resumes."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bitsnn.cli import main
from bitsnn.flow import FlowConfig

SPACE = '''
[sweep.space]
"train.weight_bits" = [1, 2, 4]
"train.sparsity" = {low = 0.0, high = 0.01}
'''


def _config(tmp_path, data, *, trials=4, epochs=1, storage=None, name="sweep.toml", space=SPACE) -> Path:
    path = tmp_path / name
    path.write_text(f'''run_dir = "{tmp_path / 'run'}"
data_dir = "{data}"
skip = ["cosim", "build"]

[train]
preset = "784-32-10"
epochs = {epochs}

[report]
images = 100

[sweep]
trials = {trials}
heartbeat = 1
''' + (f'storage = "{storage}"\n' if storage else "") + space)
    return path


def _study(run: Path, storage=None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name="bitsnn", storage=storage or f"sqlite:///{run / 'study.db'}")


def _check_finished(run: Path, out: str, trials: int, storage=None) -> list:
    """Every trial counted is complete, once: its number done once in the output, its own report,
    the table, the Pareto plot and the best configuration written."""
    from optuna.trial import TrialState

    study = _study(run, storage)
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(done) == trials
    assert len({t.number for t in done}) == trials
    for t in done:
        assert out.count(f"[sweep] trial {t.number} done") == 1, t.number
        report = json.loads((Path(t.user_attrs["run_dir"]) / "report" / "report.json").read_text())
        assert report["build"] is None  # skip = ["cosim", "build"]: the estimate's logic cells
        assert not (Path(t.user_attrs["run_dir"]) / "build-icebreaker").exists()
        acc, lc, lat, energy = t.values
        assert 0 <= acc <= 1 and lc > 0 and lat > 0 and energy > 0
    assert not [t for t in study.get_trials() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    csv = (run / "trials.csv").read_text().splitlines()
    assert len(csv) == 1 + len(study.get_trials())
    assert (run / "pareto.png").stat().st_size > 1000
    best = FlowConfig.load(run / "best.toml")
    assert best.skip == ("cosim", "build")
    assert "Pareto front" in out
    return done


@pytest.mark.slow
def test_two_workers_share_a_sqlite_study(tmp_path, mnist_digits, capfd):
    cfg = _config(tmp_path, mnist_digits)
    assert main(["sweep", str(cfg), "--workers", "2"]) == 0
    out = capfd.readouterr().out
    done = _check_finished(tmp_path / "run", out, 4)
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both workers took trials
    # a second run finds the budget spent and only summarises
    assert main(["sweep", str(cfg)]) == 0
    assert "done" not in capfd.readouterr().out.replace("[sweep] trial", "")


@pytest.fixture
def postgres():
    """A PostgreSQL server of Debian's package, started in a temporary directory on a local
    socket (as the postgres user when the tests run as root), with a database for the study."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    assert bins, "PostgreSQL is not installed (make test installs Debian's postgresql)"
    bindir = Path(bins[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="bitsnn-pg-"))
    user = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        user = ["runuser", "-u", "postgres", "--"]
    data, sock = root / "data", root
    run = lambda *cmd: subprocess.run(user + [str(bindir / cmd[0]), *cmd[1:]], check=True, capture_output=True)  # noqa: E731
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        run("pg_ctl", "-D", str(data), "-w", "-l", str(root / "log"), "-o",
            f"-k {sock} -c listen_addresses='' -c max_connections=50", "start")
        run("createdb", "-h", str(sock), "-U", "postgres", "bitsnn")
        yield f"postgresql://postgres@/bitsnn?host={sock}"
    finally:
        subprocess.run(user + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_a_postgresql_study(tmp_path, mnist_digits, postgres, capfd):
    cfg = _config(tmp_path, mnist_digits, storage=postgres)
    assert main(["sweep", str(cfg), "--workers", "2"]) == 0
    out = capfd.readouterr().out
    assert "postgresql://postgres@/bitsnn" in out
    done = _check_finished(tmp_path / "run", out, 4, storage=postgres.replace("postgresql:", "postgresql+psycopg2:"))
    assert len({t.user_attrs["worker"] for t in done}) == 2
    assert not (tmp_path / "run" / "study.db").exists()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.slow
def test_a_killed_sweep_resumes_where_it_stopped(tmp_path, mnist_digits):
    """SIGKILL while both workers run a trial: the workers die with the sweep; started again, it
    waits out their heartbeats' grace period, fails and queues those trials again, and ends with
    the budget of complete trials, the killed ones recorded as failed."""
    from optuna.trial import TrialState

    cfg = _config(tmp_path, mnist_digits, trials=3, epochs=3)
    cmd = [sys.executable, "-m", "bitsnn", "sweep", str(cfg), "--workers", "2"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    deadline = time.time() + 120
    while seen.count("[sweep] trial ") < 2 and time.time() < deadline:  # both workers on a trial
        seen += p.stdout.readline()
    time.sleep(1.0)
    p.send_signal(signal.SIGKILL)
    p.wait()
    p.stdout.close()
    time.sleep(1.0)
    running = [t for t in _study(tmp_path / "run").get_trials() if t.state == TrialState.RUNNING]
    assert running, seen
    for t in running:  # the workers died with the sweep
        pid = int(t.user_attrs["worker"].rsplit(":", 1)[1])
        assert not _alive(pid), f"worker {pid} outlived the sweep"
    running = [t.number for t in running]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    _check_finished(tmp_path / "run", again.stdout, 3)
    study = _study(tmp_path / "run")
    failed = [t for t in study.get_trials() if t.state == TrialState.FAIL]
    assert {t.number for t in failed} == set(running)
    assert "Traceback" not in again.stdout + again.stderr
    assert "its worker stopped (retried)" in again.stdout


def test_sweep_configs_are_checked_before_any_work(tmp_path, capsys):
    data = tmp_path / "nodata"
    bad = {
        "no [sweep]": ("", "needs a [sweep] table"),
        "unknown setting": ('[sweep]\n[sweep.space]\n"train.colour" = [1]\n', "not a setting the sweep can vary"),
        "bad choice": ('[sweep]\n[sweep.space]\n"train.weight_bits" = [1, 9]\n', "weight_bits = 9"),
        "bad range": ('[sweep]\n[sweep.space]\n"train.lr" = {low = 1, high = 0}\n', "low <= high"),
        "no space": ("[sweep]\ntrials = 3\n", "at least one setting"),
        "bad trials": ('[sweep]\ntrials = 0\n[sweep.space]\n"train.epochs" = [1]\n', "trials must be a positive"),
        "bad skip": ('skip = ["train"]\n[sweep]\n[sweep.space]\n"train.epochs" = [1]\n', "only cosim and build"),
        "unknown sweep key": ('[sweep]\nworkerz = 2\n[sweep.space]\n"train.epochs" = [1]\n', "unknown setting 'workerz'"),
    }
    for what, (text, msg) in bad.items():
        path = tmp_path / "c.toml"
        path.write_text(f'run_dir = "{tmp_path / "run"}"\ndata_dir = "{data}"\n' + text)
        assert main(["sweep", str(path)]) == 1, what
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1, (what, err)
        assert not (tmp_path / "run").exists(), what
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    path = tmp_path / "c.toml"
    path.write_text(f'run_dir = "{user}"\n[sweep]\n[sweep.space]\n"train.epochs" = [1]\n')
    assert main(["sweep", str(path)]) == 1
    assert "not a bitsnn sweep's run directory" in capsys.readouterr().err
    assert sorted(p.name for p in user.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_a_journal_file_study(tmp_path, mnist_digits, capfd):
    """The study in a journal file (no database): one worker, and --retry-running queues again a
    trial left running (a journal keeps no heartbeats)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    journal = tmp_path / "study.log"
    cfg = _config(tmp_path, mnist_digits, trials=2, storage=f"journal:{journal}")
    assert main(["sweep", str(cfg)]) == 0
    storage = JournalStorage(JournalFileBackend(str(journal)))
    _check_finished(tmp_path / "run", capfd.readouterr().out, 2, storage=storage)
    # a trial a killed worker left running: queued again, and run
    study = optuna.load_study(study_name="bitsnn", storage=storage)
    t = study.ask({"train.weight_bits": optuna.distributions.CategoricalDistribution([1, 2, 4]),
                   "train.sparsity": optuna.distributions.FloatDistribution(0.0, 0.01)})
    assert main(["sweep", str(cfg), "--trials", "3", "--retry-running"]) == 0
    out = capfd.readouterr().out
    assert f"trial {t.number} was running when its worker stopped: queued again" in out
    states = [x.state for x in optuna.load_study(study_name="bitsnn", storage=storage).get_trials()]
    assert states.count(TrialState.COMPLETE) == 3 and states.count(TrialState.FAIL) == 1
