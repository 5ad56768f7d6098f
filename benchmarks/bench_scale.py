"""Scale: how many epoch reports a second the driver records, how a study of 10,000 trials
reads back, and a study of many concurrent trials end to end on a local Ray.

``--part writes`` (target: >= 1,000 reports/s on SQLite and on PostgreSQL). ``--trials``
running trials report ``--epochs`` epochs each, round-robin, through the driver's recording
path: an EpochReport per epoch handed to the EpochWriter (what Recorder.on_trial_result does),
timed until the last one is committed. The reference, measured in the same run on a share of
the reports, is the path it replaced (dm-search 0.x's record_epoch and Optuna's
intermediate value: a commit per attribute, the whole history rewritten at each epoch).

``--part big`` (targets: a suggestion <= 0.2 s, status <= 2 s, list <= 1 s, report <= 30 s,
the dashboard's study page <= 5 s in a browser). A study of ``--big-trials`` trials x
``--big-epochs`` epochs is written straight into the database in the shape the recording path
gives it (a real trial's attributes, cloned), then read the ways a user reads it: the sampler's
suggestion in a driver (the first, which loads every trial, and the next ones), and
`dm-search status`, `list`, `report` and `dashboard` (its study page in headless Chromium) as
commands. Optuna's own loading of the same trials is timed beside ours.

``--part memory`` (target: the driver's memory does not grow with the study). The Recorder
is fed ``--memory-trials`` trials of 50 epochs, 200 running at a time, as Tune would call it
(figures and dashboard refreshes left out); Python's traced memory is read as it goes.

``--part ray`` (targets: every epoch recorded, the driver's lag behind the newest report
< 1 s; its CPU per report stated). A study of ``--ray-trials`` concurrent trials of a loop of
one's own that sleeps ``--ray-sleep`` s per epoch (0.5 s: 2 epochs/s) for ``--ray-epochs``
epochs, on a local Ray with this machine's CPUs (each trial asks for 0.01 CPU, so that all
of them run at once).

    python benchmarks/bench_scale.py --part writes --db sqlite postgres
    python benchmarks/bench_scale.py --part big --db sqlite postgres
    python benchmarks/bench_scale.py --part memory
    python benchmarks/bench_scale.py --part ray --ray-trials 200
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.storages._rdb import models as om

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dm_search import storage as st  # noqa: E402
from dm_search.study.space import make_sampler, make_space  # noqa: E402
from dm_search.study.spec import StudySpec  # noqa: E402
from tests.pgserver import free_port, postgres_server  # noqa: E402

CLI = str(Path(sys.executable).parent / "dm-search")
SPEC = {"name": "scale", "base": {"data": {"name": "mnist1d"}, "optim": {"epochs": 100}},
        "space": {"families": {"dm": {}, "gce": {}}}, "n_trials": 10_000,
        "sampler": {"name": "tpe", "seed": 0}, "race": {"enabled": False}}
METRICS = {"epoch": 1.0, "train_loss": 0.9, "dm_loss": 0.5, "val_acc": 0.8, "test_acc": 0.79,
           "intact_acc": 0.9, "memorised": 0.1, "p_clean": 0.7, "p_noisy": 0.2,
           "noisy_weight_share": 0.1, "weight_var": 0.01, "mode": 0.3, "spread": 8.0,
           "lr": 0.05, "epoch_s": 1.2, "samples_per_s": 9000.0}


@contextlib.contextmanager
def _database(kind: str, folder: Path) -> Iterator[str]:
    if kind == "postgres":
        with postgres_server("bench") as port:
            yield f"postgresql+psycopg://dm@127.0.0.1:{port}/bench"
    else:
        db = folder / f"{kind}-{time.time_ns()}.db"
        yield f"sqlite:///{db}"


def _new_study(url: str, name: str = "scale", **fields: Any) -> tuple[Any, optuna.Study, Any]:
    spec = StudySpec.model_validate({**SPEC, "name": name, **fields})
    storage = st.open_storage(url)
    return spec, st.open_study(storage, spec, resume=False).study, storage


def _running_trials(study: optuna.Study, spec: Any, n: int) -> list[int]:
    space = make_space(spec)
    out = []
    for _ in range(n):
        trial = study.ask()
        st.record_trial_config(trial, space(trial)["trial_config"])
        out.append(trial._trial_id)
    return out


def _metrics(epoch: int) -> dict[str, float]:
    return {**METRICS, "epoch": float(epoch), "val_acc": 0.5 + 0.3 * random.random()}


# ------------------------------------------------------------------ writes
def _old_record_epoch(storage: Any, tid: int, epoch: int, total: int,
                      hist: list[dict[str, float]], node: dict[str, Any] | None) -> None:
    """The recording path this replaced, as the driver called it: an Optuna API call (one
    commit) per attribute, and the whole history rewritten as one value at every epoch."""
    put = storage.set_trial_user_attr
    if node is not None:
        storage.set_trial_system_attr(tid, "dm_search:node", node)
        put(tid, "node", node["ip"])
        put(tid, "total_epochs", total)
        put(tid, "stop_reason", "early-stopped")
    put(tid, "epochs_completed", epoch)
    for key in ("val_acc", "test_acc", "memorised"):
        put(tid, key, round(hist[-1][key], 4))
    storage.set_trial_system_attr(tid, "dm_search:history", hist)
    storage.set_trial_intermediate_value(tid, epoch, hist[-1]["val_acc"])


def part_writes(kind: str, folder: Path, trials: int, epochs: int) -> dict[str, Any]:
    node = {"ip": "10.0.0.7", "id": "f" * 56, "cpu": "bench", "cores": 16}
    with _database(kind, folder) as url:
        spec, study, storage = _new_study(url)
        ids = _running_trials(study, spec, trials)
        writer = st.EpochWriter(storage)
        loop_s = 0.0
        t0 = time.perf_counter()
        for e in range(1, epochs + 1):
            for tid in ids:
                p0 = time.perf_counter()
                writer.put(st.EpochReport(tid, study._study_id, e, epochs, _metrics(e),
                                          value=0.5, node=node if e == 1 else None,
                                          reported_at=time.time()))
                loop_s += time.perf_counter() - p0
        writer.close(timeout=600)
        new_s = time.perf_counter() - t0
        n = trials * epochs
        rows = st.histories(study, study.get_trials(deepcopy=False))
        assert sum(len(h) for h in rows.values()) == n, "not every epoch was recorded"
        stats = writer.stats

        # The reference: a share of the reports through the old path, in the same database.
        old_trials, old_epochs = min(trials, 20), min(epochs, 50)
        old_ids = _running_trials(study, spec, old_trials)
        hists: dict[int, list[dict[str, float]]] = {t: [] for t in old_ids}
        t1 = time.perf_counter()
        for e in range(1, old_epochs + 1):
            for tid in old_ids:
                hists[tid].append(_metrics(e))
                _old_record_epoch(storage, tid, e, old_epochs, hists[tid],
                                  node if e == 1 else None)
        old_s = time.perf_counter() - t1
        old_n = old_trials * old_epochs
    return {"db": kind, "reports": n, "per_s": n / new_s, "loop_us": 1e6 * loop_s / n,
            "batches": stats.batches, "largest": stats.largest_batch,
            "old_reports": old_n, "old_per_s": old_n / old_s,
            "ratio": (n / new_s) / (old_n / old_s)}


# ------------------------------------------------------------------ a big study
def _template(study: optuna.Study, spec: Any, epochs: int) -> Any:
    """One trial through the real recording path, read back as rows to clone."""
    (tid,) = _running_trials(study, spec, 1)
    writer = st.EpochWriter(study._storage)
    for e in range(1, epochs + 1):
        writer.put(st.EpochReport(tid, study._study_id, e, epochs, _metrics(e), value=0.8,
                                  node={"ip": "10.0.0.7", "id": "f" * 56, "cores": 16}
                                  if e == 1 else None))
    writer.close()
    study.tell(study.trials[-1].number, 0.8)
    return tid


def _draw(rng: random.Random, value: float, distribution: str) -> float:
    """A parameter's value for a copy of the template: a float anywhere in its range (so that
    what reads the study, fANOVA in the report among them, sees a spread), others as they are."""
    dist = optuna.distributions.json_to_distribution(distribution)
    if isinstance(dist, optuna.distributions.FloatDistribution):
        return rng.uniform(dist.low, dist.high)
    return value


def generate(url: str, n: int, epochs: int) -> optuna.Study:
    """A finished study of ``n`` trials x ``epochs`` epochs, written in bulk: each trial a
    copy of one real trial with its own parameters, value and curve."""
    spec, study, storage = _new_study(url)
    tid = _template(study, spec, epochs)
    engine = storage.engine
    T = om.TrialModel.__table__
    ua, sa_, par = (om.TrialUserAttributeModel.__table__, om.TrialSystemAttributeModel.__table__,
                    om.TrialParamModel.__table__)
    val, inter = om.TrialValueModel.__table__, om.TrialIntermediateValueModel.__table__
    rng = random.Random(0)
    with engine.begin() as c:
        base = c.execute(sa.select(T).where(T.c.trial_id == tid)).mappings().one()
        users = c.execute(sa.select(ua.c.key, ua.c.value_json).where(ua.c.trial_id == tid)).all()
        systems = c.execute(sa.select(sa_.c.key, sa_.c.value_json)
                            .where(sa_.c.trial_id == tid)).all()
        params = c.execute(sa.select(par.c.param_name, par.c.param_value, par.c.distribution_json)
                           .where(par.c.trial_id == tid)).all()
        first = int(c.execute(sa.select(sa.func.max(T.c.trial_id))).scalar_one()) + 1
        start = base["datetime_start"]
        for lo in range(0, n - 1, 1000):
            chunk = range(lo, min(lo + 1000, n - 1))
            ids = [first + i for i in chunk]
            c.execute(sa.insert(T), [{"trial_id": i, "number": 1 + k, "study_id": study._study_id,
                                      "state": optuna.trial.TrialState.COMPLETE,
                                      "datetime_start": start, "datetime_complete": start}
                                     for k, i in zip(chunk, ids, strict=True)])
            c.execute(sa.insert(ua), [{"trial_id": i, "key": k, "value_json": v}
                                      for i in ids for k, v in users])
            c.execute(sa.insert(sa_), [{"trial_id": i, "key": k, "value_json": v}
                                       for i in ids for k, v in systems])
            c.execute(sa.insert(par), [{"trial_id": i, "param_name": p, "distribution_json": d,
                                        "param_value": _draw(rng, v, d)}
                                       for i in ids for p, v, d in params])
            values = {i: rng.uniform(0.5, 0.9) for i in ids}
            c.execute(sa.insert(val), [{"trial_id": i, "objective": 0, "value": values[i],
                                        "value_type": om.TrialValueModel.TrialValueType.FINITE}
                                       for i in ids])
            c.execute(sa.insert(inter), [{
                "trial_id": i, "step": epochs, "intermediate_value": values[i],
                "intermediate_value_type":
                    om.TrialIntermediateValueModel.TrialIntermediateValueType.FINITE}
                for i in ids])
            rows = []
            for i in ids:
                for e in range(1, epochs + 1):
                    v = values[i] * (0.6 + 0.4 * e / epochs)
                    rows.append({"trial_id": i, "epoch": e, "study_id": study._study_id,
                                 "val_acc": v,
                                 "metrics": json.dumps({**METRICS, "epoch": e, "val_acc": v})})
            c.execute(sa.insert(st.epochs.EPOCHS), rows)
        if engine.dialect.name == "postgresql":  # ids given: the sequence moves past them
            c.execute(sa.text("SELECT setval(pg_get_serial_sequence('trials', 'trial_id'), "
                              "(SELECT max(trial_id) FROM trials))"))
    return optuna.load_study(study_name="scale", storage=st.open_storage(url))


def _timed(cmd: list[str], repeats: int = 3) -> float:
    """Median wall time of a command, as a user runs it (Python start-up included)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {out.stdout[-500:]}{out.stderr[-2000:]}")
    return statistics.median(times)


def _dashboard_page(url: str, folder: Path) -> float:
    """Seconds from navigating to the study page until its trials' figures are drawn."""
    from tests import browser

    port = free_port()
    proc = subprocess.Popen([CLI, "dashboard", "--storage", url, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/meta", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the dashboard did not come up") from None
                time.sleep(0.3)
        with urllib.request.urlopen(f"{base}/api/studies", timeout=60) as r:
            sid = json.load(r)["study_summaries"][0]["study_id"]
        with browser.Browser(folder / "profile") as b:
            b.call("Page.navigate", url=f"{base}/dashboard/studies/{sid}")
            t0 = time.perf_counter()
            # The history plot holds a point per trial once the trials arrived.
            ready = ("document.querySelectorAll('.js-plotly-plot').length > 0 && "
                     "Array.from(document.querySelectorAll('.js-plotly-plot')).some(p => "
                     "p.data && p.data.some(d => d.x && d.x.length > 1000))")
            while not b.evaluate(f"(() => {{ try {{ return Boolean({ready}); }} "
                                 "catch (e) { return false; } })()"):
                if time.perf_counter() - t0 > 120:
                    raise RuntimeError("the study page did not show the trials in 120 s")
                time.sleep(0.1)
            return time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def part_big(kind: str, folder: Path, n: int, epochs: int, dashboard: bool) -> dict[str, Any]:
    with _database(kind, folder) as url:
        t0 = time.perf_counter()
        study = generate(url, n, epochs)
        made_s = time.perf_counter() - t0
        out: dict[str, Any] = {"db": kind, "trials": n, "epochs": epochs, "made_s": made_s}
        storage = st.open_storage(url, create=False)
        # Loading every trial: ours, then Optuna's own (the ORM), for comparison.
        t0 = time.perf_counter()
        ours = storage.get_all_trials(study._study_id, deepcopy=False)
        out["load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = optuna.storages.RDBStorage._get_trials(storage, study._study_id, None, set(),
                                                        -1)
        out["optuna_load_s"] = time.perf_counter() - t0
        assert ours == theirs
        # The sampler's suggestion in a driver: a fresh study object, as a resumed driver has.
        spec = StudySpec.model_validate(SPEC)
        driven = optuna.load_study(study_name="scale", storage=st.open_storage(url),
                                   sampler=make_sampler(spec, seed_offset=n))
        space = make_space(spec)
        times = []
        for _ in range(6):
            t0 = time.perf_counter()
            trial = driven.ask()
            space(trial)
            times.append(time.perf_counter() - t0)
            driven.tell(trial, state=optuna.trial.TrialState.FAIL)
        out["suggest_first_s"] = times[0]
        out["suggest_s"] = statistics.median(times[1:])
        out["status_s"] = _timed([CLI, "status", "scale", "--storage", url])
        out["list_s"] = _timed([CLI, "list", "--storage", url])
        out["report_s"] = _timed([CLI, "report", "scale", "--storage", url, "-o",
                                  str(folder / f"report-{kind}.html")], repeats=1)
        if dashboard:
            out["dashboard_s"] = _dashboard_page(url, folder)
    return out


# ------------------------------------------------------------------ driver memory
def _traced() -> tuple[float, float, float]:
    """Traced MB: in all, allocated by dm-search's code, and by Optuna's (its trial cache)."""
    import tracemalloc

    stats = tracemalloc.take_snapshot().statistics("filename")
    mb = [0.0, 0.0, 0.0]
    for s in stats:
        name = s.traceback[0].filename
        mb[0] += s.size / 2**20
        mb[1] += s.size / 2**20 if "/dm_search/" in name else 0.0
        mb[2] += s.size / 2**20 if "/optuna/" in name else 0.0
    return mb[0], mb[1], mb[2]


def part_memory(folder: Path, n: int, epochs: int = 50, running: int = 200
                ) -> list[tuple[Any, ...]]:
    import tracemalloc
    from types import SimpleNamespace

    from dm_search.driver import recorder as rec
    from dm_search.driver.progress import Progress

    rec.render_later = lambda *a, **k: None  # figures and dashboard refreshes: not measured
    rec.refresh_later = lambda *a, **k: None
    url = f"sqlite:///{folder}/memory-{time.time_ns()}.db"
    spec, study, storage = _new_study(url)
    study.sampler = optuna.samplers.RandomSampler(seed=0)  # the sampler's time is not asked
    writer = st.EpochWriter(storage)
    r = rec.Recorder(study, Progress(total=n), running, lambda _: None, None, writer=writer)
    space = make_space(spec)
    samples: list[tuple[Any, ...]] = []
    tracemalloc.start()
    done = 0
    live: list[Any] = []
    made = 0
    while done < n:
        while len(live) < running and made < n:
            t = study.ask()
            cfg = space(t)["trial_config"]
            live.append([SimpleNamespace(config={"optuna_trial": t.number, "trial_config": cfg},
                                         trial_id=str(t.number), last_result={}), 0])
            r.on_trial_start(0, [], live[-1][0])
            made += 1
        for item in list(live):
            trial, e = item
            e += 1
            item[1] = e
            result = {**_metrics(e), "epoch": e, "total_epochs": epochs,
                      "val_acc": 0.7, "reported_at": time.time()}
            r.on_trial_result(0, [], trial, result)
            if e == epochs:
                trial.last_result = result
                writer.flush()
                study.tell(trial.config["optuna_trial"], 0.7)
                r.on_trial_complete(0, [], trial)
                live.remove(item)
                done += 1
                if done % 500 == 0:
                    cached = len(study._storage._studies[study._study_id].trials)
                    samples.append((done, *_traced(), len(r.history), cached))
    writer.close()
    tracemalloc.stop()
    return samples


# ------------------------------------------------------------------ end to end on Ray
SLEEPER = '''
import time


def train(trial):
    for epoch in range(1, trial.epochs + 1):
        time.sleep(trial.params["sleep_s"])
        trial.report(epoch=epoch, val_acc=0.5 + 0.4 * epoch / trial.epochs)
'''


def part_ray(folder: Path, trials: int, epochs: int, sleep_s: float) -> dict[str, Any]:
    import resource

    import ray

    from dm_search.api import _as_spec
    from dm_search.driver import runner

    code = folder / f"ray-{time.time_ns()}"  # shipped to the workers: nothing else in it
    code.mkdir()
    (code / "sleeper.py").write_text(SLEEPER)
    spec = _as_spec({
        "name": "ray-scale", "study_dir": str(code / "runs"), "code": str(code),
        "base": {"trainer": "sleeper:train", "optim": {"epochs": epochs},
                 "params": {"sleep_s": sleep_s}},
        "space": {"families": {"dm": {}}}, "scheduler": {"name": "none"},
        "sampler": {"name": "random", "seed": 0}, "baselines": [],
        "n_trials": trials, "max_concurrent": trials, "resources": {"cpu": 0.01},
        "race": {"enabled": False}, "final": {"enabled": False}}, None, None)
    stats: dict[str, Any] = {}
    original = runner.st.EpochWriter

    seen: dict[int, float] = {}
    started: dict[int, float] = {}  # each trial's first report (time.time())
    window = {"first": None, "last": None, "puts": 0, "concurrent": 0}

    class Watched(original):  # type: ignore[misc,valid-type]
        """The driver's writer, watched: the CPU the whole driver process used between the
        first and the last report (start-up and shut-down left out), and how many trials
        reported within the same 2 s."""

        def put(self, report: Any) -> None:
            super().put(report)
            now, cpu = time.monotonic(), time.process_time()
            if window["first"] is None:
                window["first"] = cpu
            window["last"] = cpu
            window["puts"] += 1
            seen[report.trial_id] = now
            started.setdefault(report.trial_id, time.time())
            if window["puts"] % 100 == 0:
                live = sum(1 for t in seen.values() if now - t < 2.0)
                window["concurrent"] = max(window["concurrent"], live)

        def close(self, timeout: float = 60.0) -> None:
            super().close(timeout)
            stats["writer"] = self.stats

    runner.st.EpochWriter = Watched
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    try:
        runner.run_study(spec, say=lambda _: None)
    finally:
        runner.st.EpochWriter = original
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    ray.shutdown()
    study = optuna.load_study(study_name="ray-scale",
                              storage=st.open_storage(f"sqlite:///{code}/runs/studies.db"))
    hist = st.histories(study, study.trials)
    recorded = sum(len(h) for h in hist.values())
    w = stats["writer"]
    # All trials running: from the last one's first report on (on a small machine the workers'
    # start-up, each importing torch, competes with the driver before that).
    steady = sorted(lag for at, lag in w.lags if at >= max(started.values()))
    lags = sorted(lag for _, lag in w.lags)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {"trials": trials, "epochs": epochs, "sleep_s": sleep_s,
            "expected": trials * epochs,
            "recorded": recorded, "wall_s": wall, "reports_per_s": recorded / wall,
            "lag_p50_s": lags[len(lags) // 2], "lag_p99_s": lags[int(len(lags) * 0.99)],
            "lag_max_s": w.max_lag_s,
            "steady_reports": len(steady),
            "steady_lag_p50_s": steady[len(steady) // 2] if steady else None,
            "steady_lag_p99_s": steady[int(len(steady) * 0.99)] if steady else None,
            "steady_lag_max_s": steady[-1] if steady else None,
            "batches": w.batches, "largest": w.largest_batch,
            "most_concurrent": window["concurrent"],
            "driver_cpu_ms_per_report": 1000 * (window["last"] - window["first"])
            / max(1, window["puts"] - 1),
            "driver_cpu_s_whole_run": cpu,
            "driver_max_rss_mb": cpu1.ru_maxrss / 1024}


# ------------------------------------------------------------------ main
def _machine() -> str:
    import sqlalchemy

    return (f"{platform.node()} {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"optuna {optuna.__version__}, sqlalchemy {sqlalchemy.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["writes", "big", "memory", "ray"], required=True)
    ap.add_argument("--db", nargs="+", default=["sqlite", "postgres"],
                    choices=["sqlite", "postgres"])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big-trials", type=int, default=10_000)
    ap.add_argument("--big-epochs", type=int, default=100)
    ap.add_argument("--no-dashboard", action="store_true")
    ap.add_argument("--memory-trials", type=int, default=2000)
    ap.add_argument("--ray-trials", type=int, default=200)
    ap.add_argument("--ray-epochs", type=int, default=120)
    ap.add_argument("--ray-sleep", type=float, default=0.5, help="seconds per epoch")
    ap.add_argument("--out", default="runs/bench_scale")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder = Path(args.out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    print(_machine())
    if args.part == "writes":
        print("| db | reports | reports/s | loop us/report | batches | largest | "
              "old path reports/s | ratio |")
        print("|---|---|---|---|---|---|---|---|")
        for kind in args.db:
            for _ in range(args.repeats):
                r = part_writes(kind, folder, args.trials, args.epochs)
                print(f"| {r['db']} | {r['reports']} | {r['per_s']:.0f} | {r['loop_us']:.1f} | "
                      f"{r['batches']} | {r['largest']} | {r['old_per_s']:.0f} | "
                      f"{r['ratio']:.1f} |", flush=True)
    elif args.part == "big":
        for kind in args.db:
            r = part_big(kind, folder, args.big_trials, args.big_epochs, not args.no_dashboard)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                              for k, v in r.items()}), flush=True)
    elif args.part == "memory":
        print("| trials done | traced MB | allocated in dm_search/ | in optuna/ | "
              "histories held | trials in Optuna's cache |")
        print("|---|---|---|---|---|---|")
        for done, mb, ours, optunas, held, cached in part_memory(folder, args.memory_trials):
            print(f"| {done} | {mb:.1f} | {ours:.2f} | {optunas:.1f} | {held} | {cached} |",
                  flush=True)
    else:
        r = part_ray(folder, args.ray_trials, args.ray_epochs, args.ray_sleep)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                          for k, v in r.items()}))


if __name__ == "__main__":
    main()
