"""Racing before crowning: the rules, the race stage driven with a stand-in for Ray, and what
status, the report, the dashboard note and the export say about it."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser

import optuna
import pytest

from dm_search import storage as st
from dm_search.driver import race as race_stage
from dm_search.results.dashboard import study_note
from dm_search.results.export import export_trial
from dm_search.results.report import write_report
from dm_search.study import racing
from dm_search.study.spec import StudySpec
from tests.conftest import STUDY_SPEC

optuna.logging.set_verbosity(optuna.logging.WARNING)


# ------------------------------------------------------------------ the rules
def _cand(trial, *scores):
    return {"trial": trial, "search_score": scores[0],
            "runs": [{"score": s} for s in scores[1:]]}


def test_a_runs_score_is_the_mean_of_its_last_epochs():
    assert racing.run_score([0.1, 0.5, 0.7, 0.9], 2) == pytest.approx(0.8)
    assert racing.run_score([0.1, 0.5], 5) == pytest.approx(0.3)
    assert racing.run_score([0.4, float("nan")], 1) == pytest.approx(0.4)
    assert math.isnan(racing.run_score([], 3))


def test_standings_rank_by_mean_or_by_a_lower_bound():
    steady = _cand(1, 0.80, 0.80, 0.80)
    lucky = _cand(2, 0.95, 0.65, 0.75)  # a higher best run, a lower mean
    assert [r["trial"] for r in racing.standings([lucky, steady], "mean")] == [1, 2]
    noisy = _cand(3, 0.90, 0.74, 0.84)  # mean .8267, wide
    tight = _cand(4, 0.82, 0.82, 0.82)  # mean .82, no spread
    assert racing.leader([noisy, tight], "mean")["trial"] == 3
    assert racing.leader([noisy, tight], "lcb")["trial"] == 4
    row = racing.standings([noisy])[0]
    assert row["n"] == 3 and row["spread"] == pytest.approx(0.16)
    assert racing.leader([_cand(7, 0.8), _cand(5, 0.8)])["trial"] == 5  # ties: earlier trial


def test_a_candidate_that_cannot_catch_the_leader_is_out():
    a, b, c = _cand(1, 0.90, 0.91), _cand(2, 0.89, 0.90), _cand(3, 0.70, 0.71)
    assert [x["trial"] for x in racing.survivors([a, b, c])] == [1, 2]
    # one run each: the prior spread keeps everyone in unless far behind
    assert len(racing.survivors([_cand(1, 0.80), _cand(2, 0.79)])) == 2


def test_seeds_that_disagree_by_more_than_two_points_are_unstable():
    assert racing.spread([0.944, 0.853]) == pytest.approx(9.1)
    assert racing.unstable([0.944, 0.853]) and not racing.unstable([0.955, 0.945])
    assert not racing.unstable([0.9])


# ------------------------------------------------------------------ the race, driven
class _Ref:
    def __init__(self, cfg):
        self.cfg = cfg


class _FakeRay:
    """Runs race_stage's Ray tasks in the calling thread: ``runs(cfg)`` is the run."""

    def __init__(self, runs, fail_after=None):
        self.runs, self.calls, self.fail_after = runs, [], fail_after

    def remote(self, fn):
        class _Task:
            def options(self, **kw):
                return self

            def remote(self, cfg):
                return _Ref(cfg)

        assert fn is race_stage.worker.race_run
        return _Task()

    def wait(self, refs, num_returns=1):
        return refs[:1], refs[1:]

    def get(self, ref):
        if self.fail_after is not None and len(self.calls) == self.fail_after:
            raise KeyboardInterrupt  # Ctrl-C while the race runs
        self.calls.append((ref.cfg["loss"]["edf"].get("lam"), ref.cfg["seed"]))
        return self.runs(ref.cfg)


# What each made-study trial scores on new seeds: trial 1 (best search run) was lucky.
_RERUN = {1.0: [0.60, 0.58], 0.5: [0.73, 0.72], 1.5: [0.72, 0.71]}


def _rerun(cfg):
    lam = cfg["loss"]["edf"]["lam"]
    val = _RERUN.get(round(lam, 6), [0.5, 0.5])[cfg["seed"] - 1]
    return {"seed": cfg["seed"], "val_accs": [val] * 6, "test_acc": val - 0.01, "epochs": 6,
            "wall_s": 0.1}


def _spec(**race):
    return StudySpec.model_validate({**STUDY_SPEC, "race": {"candidates": 3, "seeds": 2,
                                                            **race}})


@pytest.fixture
def study(tmp_path, make_study):
    return make_study(f"sqlite:///{tmp_path}/studies.db")


def _race(study, spec, fake, monkeypatch):
    monkeypatch.setattr(race_stage, "ray", fake)
    said: list[str] = []
    race_stage.run_race(spec, study, said.append)
    return said


def test_the_race_crowns_the_candidate_best_over_seeds(study, monkeypatch):
    assert st.best_trial(study).number == 1  # the best single run (last 5 epochs' mean)
    fake = _FakeRay(_rerun)
    said = _race(study, _spec(), fake, monkeypatch)
    assert said[0].startswith("race: trials 1, 0, 7 again with up to 2 new seed(s)")
    assert sorted(fake.calls) == sorted([(1.0, 1), (0.5, 1), (1.5, 1), (1.0, 2), (0.5, 2),
                                         (1.5, 2)])
    record = st.race(study)
    assert record["winner"] == 0 and record["rule"] == "mean" and record["window"] == 5
    by_trial = {c["trial"]: c for c in record["candidates"]}
    assert [r["seed"] for r in by_trial[1]["runs"]] == [1, 2]
    assert by_trial[1]["mean"] == pytest.approx((0.768 + 0.60 + 0.58) / 3, abs=1e-6)
    assert by_trial[1]["unstable"] and not by_trial[0]["unstable"]
    assert st.best_trial(study).number == 0  # what status, report, export and final stage use
    assert st.study_summary(study)["best"]["number"] == 0
    assert "trial 0 wins" in "\n".join(said)
    # races count against the budget: 6 runs of 6 epochs
    assert st.epochs_trained(study) == st.search_epochs(study) + 36
    # nothing new to race: the decision stands, nothing is trained again
    again = _race(study, _spec(), _FakeRay(_rerun), monkeypatch)
    assert again == ["race already decided: trial 0"]


def test_a_candidate_far_behind_is_dropped_after_a_round(study, monkeypatch):
    # trial 1's search run was a fluke; after two more runs it cannot catch the others
    runs = {1.0: 0.20, 0.5: 0.726, 1.5: 0.724}
    fake = _FakeRay(lambda cfg: {**_rerun(cfg), "val_accs": [
        runs[round(cfg["loss"]["edf"]["lam"], 6)]] * 6})
    said = _race(study, _spec(seeds=3), fake, monkeypatch)
    assert "race round 2: trial(s) 1 out" in said
    assert (1.0, 3) not in fake.calls and len(fake.calls) == 8
    out = {c["trial"]: c["out"] for c in st.race(study)["candidates"]}
    assert out == {1: True, 0: False, 7: False}


def test_a_race_stopped_midway_resumes_with_the_runs_it_had(study, monkeypatch):
    with pytest.raises(KeyboardInterrupt):
        _race(study, _spec(), _FakeRay(_rerun, fail_after=4), monkeypatch)
    kept = st.race(study)
    assert kept["winner"] is None
    assert sum(len(c["runs"]) for c in kept["candidates"]) == 4
    fake = _FakeRay(_rerun)
    _race(study, _spec(), fake, monkeypatch)
    assert len(fake.calls) == 2  # only the runs it lacked
    assert st.race(study)["winner"] == 0


def test_a_resumed_study_with_new_leaders_races_again_and_keeps_the_old_runs(
        study, monkeypatch, tmp_path):
    _race(study, _spec(seeds=1), _FakeRay(_rerun), monkeypatch)
    first = st.epochs_trained(study)
    # a resumed search finds a better trial: it joins the top 3, trial 7 leaves it
    study.enqueue_trial({"family": "dm", "dm.mode": 0.55, "dm.spread": 10.0})
    trial = study.ask()
    from dm_search.study.space import make_space

    st.record_trial_config(trial, make_space(_spec())(trial)["trial_config"])
    hist = [{"epoch": e + 1, "val_acc": 0.9, "test_acc": 0.9} for e in range(6)]
    for e, h in enumerate(hist, 1):
        st.record_epoch(study._storage, trial._trial_id, epoch=e, total=6, metrics=h)
    study.tell(trial, 0.9)
    fake = _FakeRay(_rerun)
    said = _race(study, _spec(seeds=1), fake, monkeypatch)
    assert said[0].startswith(f"race: trials {trial.number}, 1, 0 again")
    assert len(fake.calls) == 1  # trials 1 and 0 keep their runs
    record = st.race(study)
    assert [c["trial"] for c in record["earlier"]] == [7]
    assert st.epochs_trained(study) == first + 6 + 6  # the new trial and its race run


def test_a_run_that_collapses_scores_nothing(study, monkeypatch):
    def runs(cfg):
        if cfg["loss"]["edf"]["lam"] == 0.5 and cfg["seed"] == 1:
            return {"seed": 1, "val_accs": [0.5, 0.1], "test_acc": None, "epochs": 2,
                    "wall_s": None, "failed": "TrialCollapsed: the network died"}
        return _rerun(cfg)

    said = _race(study, _spec(seeds=1), _FakeRay(runs), monkeypatch)
    assert any("failed (TrialCollapsed: the network died), scores 0" in s for s in said)
    c0 = next(c for c in st.race(study)["candidates"] if c["trial"] == 0)
    assert c0["runs"][0]["score"] == 0.0 and c0["runs"][0]["epochs"] == 2
    assert st.race(study)["winner"] == 7


def test_the_race_keeps_to_the_epoch_budget(study, monkeypatch):
    used = st.epochs_trained(study)
    spec = _spec(seeds=2).model_copy(update={"budget_epochs": used + 20})
    fake = _FakeRay(_rerun)
    said = _race(study, spec, fake, monkeypatch)
    assert len(fake.calls) == 3  # round 1: 18 epochs; round 2 would need 18 more
    assert any("race stopped before round 2" in s for s in said)
    assert st.epochs_trained(study) <= used + 20


def test_a_budget_with_no_room_for_a_race_keeps_the_best_single_run(study, monkeypatch):
    spec = _spec().model_copy(update={"budget_epochs": st.epochs_trained(study) + 5})
    fake = _FakeRay(_rerun)
    said = _race(study, spec, fake, monkeypatch)
    assert fake.calls == [] and st.race(study) is None
    assert said[-1] == "race skipped: no re-evaluation run fits; the best single run stands"
    assert st.best_trial(study).number == 1


def test_search_budget_holds_back_the_reserve():
    base = {**STUDY_SPEC, "final": {"enabled": False}}  # 6-epoch trials, one baseline
    spec = StudySpec.model_validate({**base, "budget_epochs": 60})
    assert spec.search_budget() == 60 - 12  # 20% of the budget
    spec = StudySpec.model_validate({**base, "budget_epochs": 1020})
    assert spec.search_budget() == 1020 - 18  # never more than 3 candidates x 1 seed x 6 epochs
    spec = StudySpec.model_validate({**base, "budget_epochs": 1020, "race": {"seeds": 3}})
    assert spec.search_budget() == 1020 - 54
    # a tight budget keeps its baselines and one trial; the races get what is left
    spec = StudySpec.model_validate({**base, "budget_epochs": 12})
    assert spec.search_budget() == 12
    spec = StudySpec.model_validate({**base, "budget_epochs": 120, "race": {"enabled": False}})
    assert spec.search_budget() == 120
    assert StudySpec.model_validate(base).search_budget() is None
    with pytest.raises(ValueError, match=r"race\.candidates"):
        StudySpec.model_validate({**base, "race": {"candidates": 1}})
    with pytest.raises(ValueError, match=r"race\.rule"):
        StudySpec.model_validate({**base, "race": {"rule": "max"}})


def test_racing_settings_may_change_between_submissions():
    a = StudySpec.model_validate(STUDY_SPEC)
    b = StudySpec.model_validate({**STUDY_SPEC, "race": {"seeds": 4, "enabled": False}})
    assert a.identity() == b.identity()


# ------------------------------------------------------------------ what users read
def _unstable_final(study):
    final = st.final_stage(study)
    final["best"]["runs"][1]["test_acc"] = 0.80
    final["best"].update(trial=0, spread=5.0, unstable=True)
    final["unstable_points"] = 2.0
    st.record_final_stage(study, final)


@pytest.mark.slow  # three runs of the command line
def test_status_report_note_and_export_show_the_race_and_say_when_seeds_disagree(
        study, monkeypatch, tmp_path, search):
    _race(study, _spec(), _FakeRay(_rerun), monkeypatch)
    _unstable_final(study)
    url = f"sqlite:///{tmp_path}/studies.db"

    out = search.run_cli("status", "made", "--storage", url)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "race (mean of each run's last-5-epoch val_acc): trial 0 wins" in text
    assert "trial 1 dm(lam=1, beta=16): mean 0.6493" in text
    assert "final-stage seeds disagree by 5.0 points" in text
    summary = search.status_json(url, "made")
    assert summary["race"]["winner"] == 0 and summary["best"]["number"] == 0

    note = study_note(study)
    assert "## Race: the top candidates on new seeds" in note
    assert "| 0 | dm(lam=0.5, beta=8) | 0.7260 | 0.7300 | 0.7200 |" in note
    assert "final-stage seeds disagree" in note

    path = write_report(study, tmp_path / "r.html")
    page = path.read_text()
    tables = _tables(page)
    race = tables["race"]
    assert race[0] == ["trial", "EDF", "search run", "seed +1", "seed +2", "mean ± std",
                       "spread (points)", "verdict"]
    assert [r[0] for r in race[1:]] == ["1", "0", "7"]
    assert race[2][-1] == "winner" and race[1][-1] == "out (unstable)"
    assert "seeds disagree by 5.0 points" in page

    doc = export_trial(study)
    r = doc["result"]
    assert doc["provenance"]["trial"] == 0
    assert r["race"]["winner"] and r["race"]["val_scores"] == [0.726, 0.73, 0.72]
    assert r["race"]["spread_points"] == pytest.approx(1.0, abs=0.01)
    assert r["final_test_accs"] == [0.85, 0.80] and r["final_unstable"]
    assert r["final_spread_points"] == pytest.approx(5.0)
    exported = search.run_cli("export", "made", "--storage", url, "-o",
                              str(tmp_path / "best.yaml"))
    assert exported.returncode == 0, exported.stderr
    assert "final-stage seeds disagree by 5.0 points" in " ".join(exported.stderr.split())
    assert json.dumps(doc)  # the record is plain data


def _tables(page: str) -> dict[str, list[list[str]]]:
    class P(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables: dict[str, list[list[str]]] = {}
            self.cur: list[list[str]] | None = None
            self.cell: list[str] | None = None

        def handle_starttag(self, tag, attrs):
            if tag == "table":
                self.cur = self.tables.setdefault(dict(attrs).get("id") or "", [])
            elif tag == "tr" and self.cur is not None:
                self.cur.append([])
            elif tag in ("td", "th") and self.cur is not None:
                self.cell = []

        def handle_endtag(self, tag):
            if tag in ("td", "th") and self.cur is not None and self.cell is not None:
                self.cur[-1].append("".join(self.cell).strip())
                self.cell = None
            elif tag == "table":
                self.cur = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell.append(data)

    p = P()
    p.feed(page)
    return p.tables
