

import datetime as dt
import re
import shutil
from html.parser import HTMLParser

import optuna
import pytest

from dm_search.common.labels import reasons_in_words
from dm_search.edf import EDF
from dm_search.results import dashboard as dash
from dm_search.results import figures, learning, tables
from dm_search.results.curves import family_colour, plot_edf_curves
from dm_search.results.report import write_report
from dm_search.training.exported import read_export

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def study(tmp_path, make_study):
    return make_study(f"sqlite:///{tmp_path}/studies.db")


def test_history_counts_only_full_budget_trials_as_best(study):
    info = figures.history_info(study)
    # the failed trial 6 has no value; the CE reference (trial 2) is a line, not a point
    assert info.number == [0, 1, 3, 4, 5, 7]
    assert info.references == [("cce (reference)", 0.55)]
    assert info.reason[3] == "early-stopped" and info.value[3] == 0.9
    # trial 4's 0.9 (early-stopped after one epoch) never becomes the best
    assert info.best_so_far == [0.80, 0.84, 0.84, 0.84, 0.84, 0.84]


def test_family_info_orders_by_best_and_separates_early_stops(study):
    info = figures.family_info(study)
    assert info.family == ["dm", "gce"]  # the CE reference is a line, not a family
    assert sorted(info.values[0]) == [0.74, 0.79, 0.80, 0.84] and info.early[0] == [0.9]
    assert info.references == [("cce (reference)", 0.55)]
    fig = figures.plot_families(info)
    assert [s.y0 for s in fig.layout.shapes] == [0.55]
    early = [tr for tr in fig.data if tr.type == "scatter"]
    assert len(early) == 1 and early[0].marker.color == "#aaa"


def test_mode_spread_and_edf_curves(study):
    ms = figures.mode_spread_info(study)
    assert ms.family.count("dm") == 5 and "cce" not in ms.family  # cce has no coordinates
    assert ms.mode[ms.number.index(1)] == pytest.approx(0.5)
    assert ms.spread[ms.number.index(1)] == 16.0
    assert ms.finished[ms.number.index(4)] is False
    # the best of each family, labelled with where it puts its emphasis and how it did: the
    # second-best dm trial (a near-duplicate of the best) is not drawn
    curves = learning.best_edf_curves_info(study)
    assert curves.labels == ["dm, trial 1: mode 0.50, spread 16; mean 0.50, std 0.17, "
                             "val 84.0%", "gce, trial 3: mode 0.40; mean 0.45, std 0.23, "
                             "val 77.0%", "CE (cce), reference: val 55.0%"]
    # one colour per family, the same in every figure
    assert curves.colours == [family_colour("dm"), family_colour("gce"), family_colour("cce")]
    assert family_colour("dm") != family_colour("gce") != family_colour("cce")


def test_mean_std_plane_puts_every_family_and_the_reference_on_one_pair_of_axes(study):
    ms = figures.mode_spread_info(study, "moments")
    assert sorted(set(ms.family)) == ["cce", "dm", "gce"]
    ce = ms.family.index("cce")
    assert ms.reference is not None and ms.reference[ce] and sum(ms.reference) == 1
    assert ms.mode[ce] == pytest.approx(1 / 3) and ms.spread[ce] == pytest.approx(18 ** -0.5)
    one = ms.number.index(1)  # dm(lam=1, beta=16)
    assert ms.mode[one] == pytest.approx(0.5) and 0.15 < ms.spread[one] < 0.2
    fig = figures.plot_mode_spread(ms)
    names = [tr.name for tr in fig.data]
    assert "cce (reference)" in names
    assert "mean of the emphasis density" in fig.layout.xaxis.title.text
    for t in study.trials:  # the trials carry both coordinate pairs
        if t.user_attrs.get("edf"):
            assert {"mode", "spread", "mean", "std"} <= set(t.user_attrs)


def test_learning_and_memorisation_curves(study):
    info = learning.curves_info(study, "val_acc", k=2)
    assert info.labels[0].startswith("trial 1:") and info.labels[-1].startswith("trial 2:")
    assert info.series[0] == ([1, 2, 3, 4, 5, 6], [.5, .65, .72, .80, .83, .84])
    mem = learning.curves_info(study, "memorised", k=1)
    assert len(mem.series) == 2  # best trial and the best CE trial


def test_memorisation_compares_with_the_longest_ce_trial_when_ce_was_stopped_early(tmp_path,
                                                                                 make_study):
    trials = [({"family": "dm", "dm.mode": 0.5, "dm.spread": 16.0}, [.5, .6, .7, .8, .8, .8],
               "full"),
              ({"family": "cce"}, [.5], "early"),
              ({"family": "cce"}, [.5, .52, .5], "early")]
    study = make_study(f"sqlite:///{tmp_path}/ce.db", trials)
    info = learning.curves_info(study, "memorised", k=1)
    assert [lab.split(":")[0] for lab in info.labels] == ["trial 0", "trial 2"]
    assert info.series[1][0] == [1, 2, 3]


def test_importances_and_final_table(study):
    imp = figures.importance_info(study)
    # gce has one parameter: no importance to rank
    assert set(imp) == {"dm"} and imp["dm"][0] == 4
    assert set(imp["dm"][1]) == {"dm.mode", "dm.spread"}
    assert sum(imp["dm"][1].values()) == pytest.approx(1.0)
    assert [tr.name for tr in figures.plot_importances(imp).data] == ["dm (n=4)"]
    final = tables.final_rows(study)
    assert final[0][1:] == (0.86, 0.0141, pytest.approx(0.06), 2, "3")
    assert final[1].label == "CE (cce)"
    # the learning curves name and colour the two runs as the table and other figures do
    band = learning.final_curves_info(study, "test_acc")
    assert band.labels == [row.label for row in final]
    assert [tr.line.color for tr in learning.plot_bands(band, "t", "y").data if tr.name] == [
        family_colour("dm"), family_colour("cce")]


def test_trial_note_is_readable(study):
    note = dash.trial_note(study.trials[4])
    assert "stop reason: **early-stopped**, epochs 1/6" in note
    assert "emphasis mode: 0.700" in note


class _Page(HTMLParser):
    """The parts of a report a reader relies on: headings, tables with their captions and
    cells, and each figure's caption."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.tables: dict[str, dict] = {}
        self.figures: dict[str, str] = {}
        self.setup: dict[str, str] = {}
        self._stack: list[tuple[str, dict]] = []
        self._text: list[str] = []
        self._table: dict | None = None
        self._figure: str | None = None
        self._dt = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._stack.append((tag, a))
        if tag in ("h1", "h2", "h3", "caption", "th", "td", "p", "dt", "dd"):
            self._text = []
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id", f"t{len(self.tables)}"),
                                                 {"caption": "", "headers": [], "rows": []})
        if tag == "tr" and self._table is not None:
            self._table["rows"].append([])
        if tag == "div" and a.get("class") == "fig":
            self._figure = a["id"]
            self.figures[self._figure] = ""

    def handle_data(self, data):
        self._text.append(data)

    def handle_endtag(self, tag):
        _, attrs = self._stack.pop() if self._stack else (tag, {})
        text = "".join(self._text).strip()
        if tag in ("h1", "h2", "h3"):
            self.headings.append(text)
        elif tag == "caption" and self._table is not None:
            self._table["caption"] = text
        elif tag == "th" and self._table is not None:
            self._table["headers"].append(text)
        elif tag == "td" and self._table is not None:
            self._table["rows"][-1].append(text)
        elif tag == "table":
            if self._table is not None:
                self._table["rows"] = [r for r in self._table["rows"] if r]
            self._table = None
        elif tag == "p" and attrs.get("class") == "caption" and self._figure:
            self.figures[self._figure] = text
        elif tag == "dt":
            self._dt = text
        elif tag == "dd":
            self.setup[self._dt] = text


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def test_report_reads_as_sections_of_captioned_tables_and_figures(study, tmp_path):
    from importlib.metadata import version

    html = write_report(study, tmp_path / "rep.html").read_text()
    page = _parse(html)
    assert page.headings[:3] == ["Study made", "Set-up", "Result"]
    assert {"Search", "Every trial", "Spec"} <= set(page.headings)
    # every figure has its one-line caption saying what to read from it
    assert {"history", "families", "edf", "mode-spread", "mean-std", "importances",
            "learning", "memorisation", "parallel-dm"} <= set(page.figures)
    assert "emphasis" not in page.figures  # no trial's EDF moved
    assert all(len(c) > 40 for c in page.figures.values()), page.figures
    # learning curves and memorisation come from the final stage's full runs
    assert page.figures["learning"].startswith("Figure 1 (learning.svg). Test accuracy over "
                                               "epochs, best EDF against CE")
    assert "final stage" in page.figures["learning"]
    # the header: counts in words, units, nominal and measured noise, provenance
    assert "{" not in html.split("<h2 id='spec'>")[0].split("<body>")[1].split("<script")[0]
    assert page.setup["data"].startswith("mnist1d, symmetric noise at 40% (nominal), 40.0% "
                                         "measured on the training split")
    assert page.setup["budget"] == "6 epochs per trial, 20 searched trials, 2 at a time"
    assert f"torch {version('torch')}" in page.setup["software"]
    assert f"optuna {version('optuna')}" in page.setup["software"]
    assert "git commit" in page.setup and page.setup["trials ran on"].startswith("127.0.0.1")
    assert re.match(r"[\d.]+ (s|min|h) for the study; a full-budget trial [\d.]+ s, an "
                    r"early-stopped one [\d.]+ s \(medians\)", page.setup["wall time"])
    assert page.setup["recipe"] == "sgd lr 0.05, momentum 0.9, weight decay 0.0001, batch 128, " \
        "cosine lr schedule, weight normalisation: batch"
    assert "20% of the training set held out" in page.setup["data"]
    assert "(7 of 20 searched trials ran, and 1 reference baseline)" in html
    # the tables, captioned, with their units
    final = page.tables["final"]
    assert final["caption"] and "memorised" in final["headers"][2]
    assert final["rows"][0][:3] == ["best: dm(lam=1, beta=16) (trial 1)", "86.00 ± 1.41", "6.0%"]
    assert final["rows"][1][:3] == ["CE (cce)", "61.00 ± 1.41", "55.0%"]
    # tables and figures numbered in reading order, as a paper cites them
    captions = [t["caption"] for t in page.tables.values()]
    assert [c.split(".")[0] for c in captions] == [f"Table {i}" for i in
                                                   range(1, len(captions) + 1)]
    assert [c.split(" (")[0] for c in page.figures.values()] == [
        f"Figure {i}" for i in range(1, len(page.figures) + 1)]
    fams = page.tables["families-table"]
    assert [r[0] for r in fams["rows"]] == ["dm", "gce"]
    assert fams["rows"][0][1:6] == ["6", "4", "1", "1", "84.00%"]
    trials = page.tables["trials-table"]
    assert {"memorised", "epochs", "stop reason", "wall time"} <= set(trials["headers"])
    assert [r[0] for r in trials["rows"]] == ["1", "0", "7", "3", "5", "2 (ref)", "4", "6"]
    assert trials["rows"][0][2:8] == ["dm(lam=1, beta=16)",
                                      "mode 0.50, spread 16; mean 0.50, std 0.17", "84.00%",
                                      "83.00%", "50.0%", "6/6"]
    assert trials["rows"][-2][8] == "early-stopped" and trials["rows"][-2][7] == "1/6"
    refs = page.tables["references"]
    assert refs["rows"] == [["cce", "55.00%", "54.00%", "50.0%"]]
    assert "Gain over CE: <b>+25.00 points</b>" in html
    # plotly.js is embedded once, and nothing is fetched from the network
    assert html.count("plotly.js v") >= 1
    assert not re.search(r"<script[^>]+src=['\"]https?://", html)


def test_without_final_curves_the_report_says_its_curves_are_the_searchs(study, tmp_path):
    from dm_search import storage as st

    final = st.final_stage(study)
    for key in ("best", "ce"):
        for run in final[key]["runs"]:
            del run["history"]  # as a final stage recorded before the runs kept their curves
    st.record_final_stage(study, final)
    page = _parse(write_report(study, tmp_path / "rep.html").read_text())
    assert "the search's own runs" in page.figures["learning"]
    assert "the search's own runs" in page.figures["memorisation"]


@pytest.mark.slow  # renders every figure to PNG through kaleido: seconds
def test_static_export_writes_every_figure_as_svg_and_png(study, tmp_path, cli_runner, plain):
    url = f"sqlite:///{tmp_path}/studies.db"
    out = cli_runner.invoke(r_app(), ["report", "made", "--storage", url, "-o",
                                      str(tmp_path / "x.html"), "--static",
                                      str(tmp_path / "figs")])
    assert out.exit_code == 0, out.output
    page = _parse((tmp_path / "x.html").read_text())
    for fid in page.figures:
        svg = (tmp_path / "figs" / f"{fid}.svg").read_text()
        assert svg.startswith("<svg") and 'width="900"' in svg, fid
        png = (tmp_path / "figs" / f"{fid}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(png[16:20], "big") == 1800  # 900 px at twice the resolution
    (tmp_path / "afile").write_text("")
    out = cli_runner.invoke(r_app(), ["report", "made", "--storage", url, "-o",
                                      str(tmp_path / "y.html"), "--static",
                                      str(tmp_path / "afile")])
    assert out.exit_code == 2 and "--static" in plain(out.output)
    assert "is a file" in plain(out.output) and not (tmp_path / "y.html").exists()
    # a folder that cannot be made is named as the mistake before any work is done
    out = cli_runner.invoke(r_app(), ["report", "made", "--storage", url, "-o",
                                      str(tmp_path / "z.html"), "--static", "/proc/no/such"])
    assert out.exit_code == 2 and "--static /proc/no/such: cannot make this folder" in \
        plain(out.output) and not (tmp_path / "z.html").exists()


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
    assert f"Trials: {reasons_in_words(summary['by_reason'])}" in note
    assert "{" not in note.split("## Spec")[0]  # counts as words, never a Python dict
    assert "mnist1d, symmetric noise at 40%" in note
    best = summary["best"]
    assert f"(trial {best['number']}): clean validation accuracy {100 * best['value']:.2f}%" \
        in note
    assert "dm-search export made -o best_edf.yaml" in note
    assert "| EDF | test accuracy | memorised | seeds |" in note
    assert "| CE (cce) | 61.00 ± " in note and "Gain over CE: +25.00 points" in note
    for name in ("EDFs, the best of each family against CE", "Hyperparameter Importance"):
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
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    study._storage.set_study_system_attr(study._study_id, st.DRIVER,
                                         {**doc, "beat": old.isoformat()})
    out = cli_runner.invoke(r_app(), ["status", "made", "--storage", url])
    text = plain(out.output)
    assert out.exit_code == 0 and "driver gone" in text and "last reported 5 min ago" in text
    assert "Resume it with: dm-search submit made.yaml --resume" in text


def test_dashboard_finds_each_studys_artifacts_from_the_database(study, tmp_path, capsys):
    from dm_search import storage as st
    from dm_search.cli import result_commands as cli
    from dm_search.results.dashboard import ArtifactDirs

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
    from dm_search.results.export import export_trial

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
    from dm_search.common.labels import lr_range

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
    ms = figures.mode_spread_info(scheduled)
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
    fig = figures.plot_mode_spread(ms)
    lines = [tr for tr in fig.data if tr.mode == "lines+markers"]
    assert len(lines) == 1 and lines[0].x[-1] == pytest.approx(0.6)
    moments = figures.mode_spread_info(scheduled, "moments")
    assert len(moments.paths[moments.number.index(1)]) == 11

    curves = learning.best_edf_curves_info(scheduled)
    labels = curves.labels
    assert labels[0].startswith("dm, trial 1, start: mode 0.20, spread 16; mean ")
    assert labels[1].startswith("dm, trial 1, end: mode 0.60, spread 16; mean ")
    assert labels[1].endswith(", val 86.0%") and "val" not in labels[0]
    assert labels[2:] == ["gce, trial 3: mode 0.40; mean 0.45, std 0.23, val 77.0%",
                          "CE (cce), reference: val 55.0%"]
    assert curves.dash == ["dot", "solid", "solid", "solid"]
    drawn = plot_edf_curves(curves)
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
