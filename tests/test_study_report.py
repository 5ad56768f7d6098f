import re
import shutil

import optuna
import pytest

from dm_search import dashboard as dash
from dm_search import figures as r
from dm_search.edf import EDF
from dm_search.export import read_export
from dm_search.report import write_report

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def study(tmp_path, make_study):
    return make_study(f"sqlite:///{tmp_path}/studies.db")


def test_history_counts_only_full_budget_trials_as_best(study):
    info = r.history_info(study)
    # the failed trial 6 has no value; the CE reference (trial 2) is a line, not a point
    assert info.number == [0, 1, 3, 4, 5, 7]
    assert info.references == [("cce (reference)", 0.55)]
    assert info.reason[3] == "early-stopped" and info.value[3] == 0.9
    # trial 4's 0.9 (early-stopped after one epoch) never becomes the best
    assert info.best_so_far == [0.80, 0.84, 0.84, 0.84, 0.84, 0.84]


def test_family_info_orders_by_best_and_separates_early_stops(study):
    info = r.family_info(study)
    assert info.family == ["dm", "gce", "cce (reference)"]
    assert sorted(info.values[0]) == [0.74, 0.79, 0.80, 0.84] and info.early[0] == [0.9]


def test_mode_spread_and_edf_curves(study):
    ms = r.mode_spread_info(study)
    assert ms.family.count("dm") == 5 and "cce" not in ms.family  # cce has no coordinates
    assert ms.mode[ms.number.index(1)] == pytest.approx(0.5)
    assert ms.spread[ms.number.index(1)] == 16.0
    assert ms.finished[ms.number.index(4)] is False
    curves = r.best_edf_curves_info(study, k=2)
    assert curves.labels == ["#1 dm(lam=1, beta=16)", "#2 dm(lam=0.5, beta=8)", "cce (CE)"]


def test_mean_std_plane_puts_every_family_and_the_reference_on_one_pair_of_axes(study):
    ms = r.mode_spread_info(study, "moments")
    assert sorted(set(ms.family)) == ["cce", "dm", "gce"]
    ce = ms.family.index("cce")
    assert ms.reference is not None and ms.reference[ce] and sum(ms.reference) == 1
    assert ms.mode[ce] == pytest.approx(1 / 3) and ms.spread[ce] == pytest.approx(18 ** -0.5)
    one = ms.number.index(1)  # dm(lam=1, beta=16)
    assert ms.mode[one] == pytest.approx(0.5) and 0.15 < ms.spread[one] < 0.2
    fig = r.plot_mode_spread(ms)
    names = [tr.name for tr in fig.data]
    assert "cce (reference)" in names
    assert "mean of the emphasis density" in fig.layout.xaxis.title.text
    for t in study.trials:  # the trials carry both coordinate pairs
        if t.user_attrs.get("edf"):
            assert {"mode", "spread", "mean", "std"} <= set(t.user_attrs)


def test_learning_and_memorisation_curves(study):
    info = r.curves_info(study, "val_acc", k=2)
    assert info.labels[0].startswith("trial 1:") and info.labels[-1].startswith("trial 2:")
    assert info.series[0] == ([1, 2, 3, 4, 5, 6], [.5, .65, .72, .80, .83, .84])
    mem = r.curves_info(study, "memorised", k=1)
    assert len(mem.series) == 2  # best trial and the best CE trial


def test_memorisation_compares_with_the_longest_ce_trial_when_ce_was_stopped_early(tmp_path,
                                                                                 make_study):
    trials = [({"family": "dm", "dm.mode": 0.5, "dm.spread": 16.0}, [.5, .6, .7, .8, .8, .8],
               "full"),
              ({"family": "cce"}, [.5], "early"),
              ({"family": "cce"}, [.5, .52, .5], "early")]
    study = make_study(f"sqlite:///{tmp_path}/ce.db", trials)
    info = r.curves_info(study, "memorised", k=1)
    assert [lab.split(":")[0] for lab in info.labels] == ["trial 0", "trial 2"]
    assert info.series[1][0] == [1, 2, 3]


def test_importances_and_final_table(study):
    imp = r.importance_info(study)
    assert set(imp) == {"dm"} and set(imp["dm"]) == {"dm.mode", "dm.spread"}
    assert sum(imp["dm"].values()) == pytest.approx(1.0)
    final = r.final_info(study)
    assert final.rows[0][1:] == (0.86, 0.0141, 2) and final.gain == 0.25


def test_trial_note_is_readable(study):
    note = dash.trial_note(study.trials[4])
    assert "stop reason: **early-stopped**, epochs 1/6" in note
    assert "emphasis mode: 0.700" in note


def test_report_is_one_self_contained_html(study, tmp_path):
    path = write_report(study, tmp_path / "rep.html")
    html = path.read_text()
    for fid in ("history", "families", "edf", "mode-spread", "mean-std", "importances",
                "learning", "memorisation"):
        assert f"id='{fid}'" in html
    assert "EDFs of the best trials against CE" in html
    assert "Reference baselines (run once, full budget)" in html
    assert "<td style='text-align:left'>cce</td><td>0.5500</td>" in html
    assert "Gain over CE: +25.00 points" in html
    assert "id='emphasis'" not in html  # no trial's EDF moved
    # plotly.js is embedded once, and nothing is fetched from the network
    assert html.count("plotly.js v") >= 1
    assert not re.search(r"<script[^>]+src=['\"]https?://", html)


def test_dashboard_figures_and_notes_are_saved(study):
    from optuna_dashboard import get_note

    dash.update_dashboard(study)
    attrs = study._storage.get_study_system_attrs(study._study_id)
    for gid in dash.DASHBOARD_FIGURES:
        assert any(gid in key for key in attrs), gid
    assert "stop reason" in get_note(optuna.trial.Trial(study, study.trials[0]._trial_id))
    assert get_note(study) == dash.study_note(study)


def test_the_study_note_says_what_was_searched_what_won_and_how_to_read_it(study):
    import yaml

    from dm_search import storage as st

    note = dash.study_note(study)
    assert note.startswith("# made\n")
    summary = st.study_summary(study)
    assert f"Trials: {st.reasons_in_words(summary['by_reason'])}" in note
    assert "{" not in note.split("## Spec")[0]  # counts as words, never a Python dict
    assert "mnist1d, symmetric noise at 40%" in note
    best = summary["best"]
    assert f"(trial {best['number']}): clean validation accuracy {100 * best['value']:.2f}%" \
        in note
    assert "dm-search export made -o best_edf.yaml" in note
    assert "| EDF | test accuracy | memorised | seeds |" in note
    assert "| cross-entropy | 61.00 ± " in note and "Gain over CE: +25.00 points" in note
    for name in ("EDFs of the best trials against CE", "Hyperparameter Importance"):
        assert f"**{name}" in note
    spec = yaml.safe_load(note.split("```yaml\n")[1].split("```")[0])
    assert spec == st.study_spec(study)


def test_cli_report_and_export(study, tmp_path, cli_runner, plain):
    url = f"sqlite:///{tmp_path}/studies.db"
    out = cli_runner.invoke(r_app(), ["report", "made", "--storage", url, "-o",
                                  str(tmp_path / "x.html")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "x.html").stat().st_size > 100_000
    out = cli_runner.invoke(r_app(), ["export", "made", "--storage", url, "-o",
                                  str(tmp_path / "e.json")])
    assert out.exit_code == 0, out.output
    assert read_export(tmp_path / "e.json")["provenance"]["study"] == "made"
    out = cli_runner.invoke(r_app(), ["export", "made", "--storage", url, "--trial", "4"])
    assert out.exit_code == 2 and "early-stopped" in plain(out.output)
    out = cli_runner.invoke(r_app(), ["export", "nope", "--storage", url])
    assert out.exit_code == 2 and "no study named 'nope'" in plain(out.output)
    out = cli_runner.invoke(r_app(), ["status", "made", "--storage", url])
    assert out.exit_code == 0 and "best trial 1" in plain(out.output)


def r_app():
    from dm_search.cli import app

    return app


def test_status_tells_a_gone_driver_and_how_to_resume(study, tmp_path, cli_runner, plain):
    from dm_search import storage as st

    url = f"sqlite:///{tmp_path}/studies.db"
    st.record_driver(study, "running", "dm-search submit made.yaml --resume")
    out = cli_runner.invoke(r_app(), ["status", "made", "--storage", url])
    assert "running: driver pid" in plain(out.output)
    doc = study._storage.get_study_system_attrs(study._study_id)[st.DRIVER]
    old = st.dt.datetime.now(st.dt.UTC) - st.dt.timedelta(minutes=5)
    study._storage.set_study_system_attr(study._study_id, st.DRIVER,
                                         {**doc, "beat": old.isoformat()})
    out = cli_runner.invoke(r_app(), ["status", "made", "--storage", url])
    text = plain(out.output)
    assert out.exit_code == 0 and "driver gone" in text and "last reported 5 min ago" in text
    assert "Resume it with: dm-search submit made.yaml --resume" in text


def test_dashboard_finds_each_studys_artifacts_from_the_database(study, tmp_path, capsys):
    from dm_search import cli
    from dm_search import storage as st
    from dm_search.dashboard import ArtifactDirs

    url = f"sqlite:///{tmp_path}/studies.db"
    elsewhere = tmp_path / "moved" / "artifacts"
    elsewhere.mkdir(parents=True)
    (elsewhere / "abc").write_bytes(b"<svg/>")
    st.record_locations(study, elsewhere, tmp_path / "moved" / "ray")
    store = st.open_storage(url, create=False)
    dirs = cli._artifact_dirs(store, url)
    assert dirs == [elsewhere.resolve()]
    with ArtifactDirs(dirs).open_reader("abc") as f:
        assert f.read() == b"<svg/>"
    shutil.rmtree(tmp_path / "moved")
    assert cli._artifact_dirs(store, url) == []
    err = capsys.readouterr().err
    assert "study made's trial images were in" in err and "which is missing" in err


def test_dashboard_refuses_a_bad_port_before_saying_it_listens(tmp_path, cli_runner, plain):
    import socket

    url = f"sqlite:///{tmp_path}/studies.db"
    out = cli_runner.invoke(r_app(), ["dashboard", "--storage", url, "--port", "70000"])
    assert out.exit_code == 2 and "--port must be between 1 and 65535" in plain(out.output)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        out = cli_runner.invoke(r_app(), ["dashboard", "--storage", url, "--port", str(port)])
    text = plain(out.output)
    assert out.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in text
    assert "optuna-dashboard for" not in text and "Traceback" not in text


SENSITIVITY = [
    {"factor": 0.5, "lr_best": 0.025, "lr_ce": 0.025, "best": 0.80, "ce": 0.62, "seeds": 1},
    {"factor": 1.0, "lr_best": 0.05, "lr_ce": 0.05, "best": 0.86, "ce": 0.61, "seeds": 2},
    {"factor": 2.0, "lr_best": 0.1, "lr_ce": 0.1, "best": 0.55, "ce": 0.58, "seeds": 1},
]


def test_lr_sensitivity_reaches_status_the_report_and_the_export(study, tmp_path, cli_runner,
                                                                  plain):
    from dm_search import storage as st
    from dm_search.export import export_trial

    st.record_final_stage(study, {**st.final_stage(study), "lr_sensitivity": SENSITIVITY})
    url = f"sqlite:///{tmp_path}/studies.db"
    out = plain(cli_runner.invoke(r_app(), ["status", "made", "--storage", url]).output)
    assert "x0.5 80.0% vs 62.0%, x1 86.0% vs 61.0%, x2 55.0% vs 58.0%" in out
    assert "it beats CE for lr 0.025 to 0.05" in out
    result = export_trial(study)["result"]
    assert result["beats_ce_for_lr"] == [0.025, 0.05]
    assert [r["lr"] for r in result["lr_sensitivity"]] == [0.025, 0.05, 0.1]
    page = write_report(study, tmp_path / "r.html").read_text()
    assert "Learning-rate sensitivity" in page and "beats CE for lr 0.025 to 0.05" in page


def test_lr_range_is_the_unbroken_run_of_wins_around_the_main_lr():
    from dm_search.labels import lr_range

    def rows(wins):
        return {"lr_sensitivity": [{"factor": f, "lr_best": f, "best": 0.6 if w else 0.4,
                                    "ce": 0.5} for f, w in zip((0.25, 0.5, 1.0, 2.0, 4.0), wins,
                                                               strict=True)]}

    assert lr_range(rows([True, False, True, True, False])) == (1.0, 2.0)
    assert lr_range(rows([True, True, True, True, True])) == (0.25, 4.0)
    assert lr_range(rows([True, True, False, True, True])) is None
    assert lr_range({}) is None


@pytest.fixture
def scheduled(tmp_path, make_study):
    space = {"families": {"dm": {"mode": [0.0, 0.75], "spread": [4.0, 24.0],
                                 "mode_end": [0.0, 0.75], "ramp": ["linear", "step"]},
                          "gce": {}}}
    return make_study(f"sqlite:///{tmp_path}/studies.db", space=space, trials=[
        ({"family": "cce"}, [.55, .6, .62, .61, .58, .55], "full"),
        ({"family": "dm", "dm.mode": 0.2, "dm.spread": 16.0, "dm.mode_end": 0.6,
          "dm.ramp": "linear"}, [.5, .6, .7, .8, .85, .86], "full"),
        ({"family": "dm", "dm.mode": 0.5, "dm.spread": 8.0, "dm.mode_end": 0.5},
         [.5, .6, .7, .8, .8, .8], "full"),  # ends where it starts: a fixed EDF
        ({"family": "gce", "gce.mode": 0.4}, [.5, .6, .7, .74, .76, .77], "full"),
    ])


def test_schedules_show_their_path_on_the_plane_and_their_start_and_end_curves(scheduled):
    ms = r.mode_spread_info(scheduled)
    moving, fixed = ms.number.index(1), ms.number.index(2)
    assert ms.mode[moving] == pytest.approx(0.2)  # the marker is where the schedule starts
    path = ms.paths[moving]
    assert len(path) == 11 and path[0] == pytest.approx((0.2, 16.0))
    assert path[-1] == pytest.approx((0.6, 16.0)) and path[5][0] == pytest.approx(0.4)
    assert ms.paths[fixed] == []
    t = scheduled.trials[1]
    assert t.user_attrs["mode_end"] == pytest.approx(0.6) and t.user_attrs["spread_end"] == 16.0
    end = EDF("dm", lam=1.5, beta=16.0)
    assert t.user_attrs["mean_end"] == round(end.mean, 6)
    assert t.user_attrs["std_end"] == round(end.std, 6)
    assert t.user_attrs["ramp"] == "linear 0-1"
    fig = r.plot_mode_spread(ms)
    lines = [tr for tr in fig.data if tr.mode == "lines+markers"]
    assert len(lines) == 1 and lines[0].x[-1] == pytest.approx(0.6)
    moments = r.mode_spread_info(scheduled, "moments")
    assert len(moments.paths[moments.number.index(1)]) == 11

    curves = r.best_edf_curves_info(scheduled, k=2)
    assert curves.labels == ["#1 start dm(lam=0.25, beta=16)",
                             "#1 end dm(lam=1.5, beta=16) (linear 0-1)",
                             "#2 dm(lam=1, beta=8)", "cce (CE)"]
    assert curves.dash == ["dot", "solid", "solid", "solid"]
    drawn = r.plot_edf_curves(curves)
    colours = [tr.line.color for tr in drawn.data if tr.mode == "lines"]
    assert colours[0] == colours[1] != colours[2]  # one colour per trial


def test_a_scheduled_best_reads_as_a_schedule_in_status_report_and_export(
        scheduled, tmp_path, cli_runner, plain):
    url = f"sqlite:///{tmp_path}/studies.db"
    out = cli_runner.invoke(r_app(), ["status", "made", "--storage", url])
    text = plain(out.output)
    assert out.exit_code == 0
    assert ("best trial 1: EDF('dm', lam=0.25, beta=16.0) -> EDF('dm', lam=1.5, beta=16.0) "
            "(linear ramp 0-1 of the budget)") in text
    out = cli_runner.invoke(r_app(), ["export", "made", "--storage", url, "-o",
                                      str(tmp_path / "e.yaml")])
    assert out.exit_code == 0 and "set_step(step, total_steps)" in plain(out.output)
    html = write_report(scheduled, tmp_path / "rep.html").read_text()
    assert "dm(lam=0.25, beta=16) -&gt; dm(lam=1.5, beta=16) (linear 0-1)" in html
    assert "id='emphasis'" in html and "Emphasis mode over epochs" in html


def test_a_scheduled_trials_note_says_where_its_emphasis_goes(scheduled):
    note = dash.trial_note(scheduled.trials[1])
    assert ("- emphasis schedule: moves to **dm(lam=1.5, beta=16)** (mode 0.600, spread 16), "
            "linear from 0% to 100% of the budget, in mode_spread coordinates") in note
    assert "emphasis schedule" not in dash.trial_note(scheduled.trials[2])
