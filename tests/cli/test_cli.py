import re

import pytest

from dm_search import __version__
from dm_search.cli import app


def test_help_explains_the_commands(cli_runner, plain):
    result = cli_runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    out = plain(result.output)
    assert "emphasis density function" in out
    assert "edf" in out


def test_version(cli_runner):
    result = cli_runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"dm-search {__version__}"


def test_edf_describe_prints_mode_params_and_table(cli_runner, plain):
    result = cli_runner.invoke(app, ["edf", "describe", "dm", "--param", "lam=0.5",
                                     "-p", "beta=8"])
    assert result.exit_code == 0, result.output
    out = plain(result.output)
    assert "{'family': 'dm', 'lam': 0.5, 'beta': 8.0}" in out
    assert "emphasis mode: 0.3333" in out
    # w(0.3) = exp(8 * 0.3^0.5 * 0.7) = 21.48
    assert re.search(r"0\.30 .*21\.48", out)


def test_edf_describe_from_mode_and_spread(cli_runner, plain):
    result = cli_runner.invoke(app, ["edf", "describe", "dm", "--mode", "0.5", "--spread", "16"])
    assert result.exit_code == 0, result.output
    assert "'lam': 1.0, 'beta': 16.0" in plain(result.output)


def test_edf_describe_from_mean_and_std_shows_the_reachable_region(cli_runner, plain):
    result = cli_runner.invoke(app, ["edf", "describe", "dm", "--mean", "0.5", "--std", "0.17"])
    assert result.exit_code == 0, result.output
    out = plain(result.output)
    assert "emphasis mode: 0.5000" in out
    assert "mean 0.5000, std 0.1700" in out
    assert "(mean, std) pairs dm reaches" in out
    bad = cli_runner.invoke(app, ["edf", "describe", "dm", "--mean", "0.9", "--std", "0.3"])
    assert bad.exit_code == 2
    out = plain(bad.output)
    assert "cannot reach mean 0.9, std 0.3: at mean 0.9 its std can be" in out
    assert "Traceback" not in out
    one = cli_runner.invoke(app, ["edf", "describe", "gce", "--mean", "0.45"])
    assert one.exit_code == 0 and "std follows from its mean" in plain(one.output)
    both = cli_runner.invoke(app, ["edf", "describe", "dm", "--mode", "0.5", "--mean", "0.5"])
    assert both.exit_code == 2 and "give one of" in plain(both.output)


def test_edf_describe_uniform_has_no_mode(cli_runner, plain):
    result = cli_runner.invoke(app, ["edf", "describe", "uniform"])
    assert result.exit_code == 0
    assert "none (constant weight)" in plain(result.output)


def test_edf_describe_bad_input_exits_2_with_the_reason(cli_runner, plain):
    result = cli_runner.invoke(app, ["edf", "describe", "dmm"])
    assert result.exit_code == 2
    assert "Known families: beta, cce, dm" in plain(result.output)
    result = cli_runner.invoke(app, ["edf", "describe", "dm", "-p", "lam"])
    assert result.exit_code == 2
    assert "expected key=value" in plain(result.output)
    result = cli_runner.invoke(app, ["edf", "describe", "dm", "-p", "lam=1", "--mode", "0.2"])
    assert result.exit_code == 2


def test_edf_list_names_every_family(cli_runner):
    result = cli_runner.invoke(app, ["edf", "list"])
    assert result.exit_code == 0
    for name in ("dm", "normal", "exponential", "beta", "cce", "mae", "mse", "gce", "uniform"):
        assert name in result.output


def test_edf_plot_writes_html(tmp_path, cli_runner):
    out = tmp_path / "curves.html"
    result = cli_runner.invoke(app, ["edf", "plot", "cce", "dm:lam=0.5,beta=8", "-o", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "dm(lam=0.5, beta=8)" in html
    assert "plotly" in html.lower()


def test_edf_plot_writes_png(tmp_path, cli_runner):
    out = tmp_path / "curves.png"
    result = cli_runner.invoke(app, ["edf", "plot", "gce:q=0.7", "normal:psi=0.8,beta=10", "-o",
                                 str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_edf_plot_bad_spec_or_suffix_exits_2(tmp_path, cli_runner, plain):
    result = cli_runner.invoke(app, ["edf", "plot", "dm:lam=-2", "-o", str(tmp_path / "a.html")])
    assert result.exit_code == 2
    assert "outside the allowed range" in plain(result.output)
    result = cli_runner.invoke(app, ["edf", "plot", "cce", "-o", str(tmp_path / "a.txt")])
    assert result.exit_code == 2
    assert ".html" in plain(result.output)


def test_train_runs_a_config_and_writes_json(tmp_path, data_root, cli_runner, plain):
    import json

    cfg = tmp_path / "t.yaml"
    cfg.write_text(
        "data: {name: mnist1d, num_samples: 500, root: " + str(data_root) + ", noise: "
        "{kind: symmetric, rate: 0.4}}\nmodel: {name: mlp, options: {width: 16}}\n"
        "optim: {epochs: 2, batch_size: 64}\nthreads: 1\n"
    )
    out = tmp_path / "r.json"
    result = cli_runner.invoke(app, ["train", str(cfg), "--set", "optim.lr=0.1",
                                     "--json", str(out)])
    assert result.exit_code == 0, result.output
    text = plain(result.output)
    assert "best val acc" in text and "memorised" in text
    data = json.loads(out.read_text())
    assert data["config"]["optim"]["lr"] == 0.1
    assert len(data["history"]) == 2 and data["epochs_completed"] == 2


def test_train_names_the_schedule_and_shows_where_the_emphasis_is(tmp_path, data_root,
                                                                    cli_runner, plain):
    import json

    cfg = tmp_path / "t.yaml"
    cfg.write_text(
        "data: {name: mnist1d, num_samples: 500, root: " + str(data_root) + "}\n"
        "model: {name: mlp, options: {width: 16}}\noptim: {epochs: 2, batch_size: 64}\n"
        "loss: {edf: {family: dm, lam: 0.5, beta: 16.0}, edf_end: {family: dm, lam: 2.0}, "
        "ramp: {shape: cosine, start: 0.2, end: 0.8}}\nthreads: 1\n")
    out = tmp_path / "r.json"
    result = cli_runner.invoke(app, ["train", str(cfg), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert ("loss=dm(lam=0.5, beta=16) -> dm(lam=2, beta=16) (cosine 0.2-0.8)"
            in plain(result.output))
    history = json.loads(out.read_text())["history"]
    # the end's spread, left out, is the start's; the mode moves
    assert [h["spread"] for h in history] == [16.0, 16.0]
    assert history[0]["mode"] == pytest.approx(0.5) and history[1]["mode"] == pytest.approx(2 / 3)


def test_train_bad_config_exits_2_naming_the_field(tmp_path, cli_runner, plain):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("optim: {lr: -0.1}\n")
    result = cli_runner.invoke(app, ["train", str(cfg)])
    assert result.exit_code == 2
    assert "optim.lr: Input should be greater than 0" in plain(result.output)
    result = cli_runner.invoke(app, ["train", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "does not exist" in plain(result.output)


def test_submit_refuses_a_parameterless_family_and_says_to_list_it_as_a_baseline(
        tmp_path, cli_runner, plain):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: x\nstudy_dir: {tmp_path}/runs\nbase: {{optim: {{epochs: 3}}}}\n"
                    "space: {families: {dm: {}, cce: {}}}\n")
    result = cli_runner.invoke(app, ["submit", str(spec)])
    assert result.exit_code == 2
    out = plain(result.output)
    assert "'cce' has no parameters to search; list it under baselines (e.g. baselines: [cce])" \
        in out
    assert "Traceback" not in out and not (tmp_path / "runs").exists()


def test_status_json_is_strict_json_even_with_missing_metrics(tmp_path, cli_runner):
    import json

    import optuna

    from dm_search import storage as st

    url = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(study_name="s", storage=st.open_storage(url))
    trial = study.ask()
    trial.set_user_attr(st.TrialKey.EDF, {"family": "dm", "lam": 1.0, "beta": 16.0})
    st.record_epoch(study._storage, trial._trial_id, epoch=1, total=1,
                    metrics={"epoch": 1, "val_acc": 0.8, "memorised": float("nan")})
    study.tell(trial, 0.8)
    result = cli_runner.invoke(app, ["status", "s", "--storage", url, "--json"])
    assert result.exit_code == 0, result.output

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    doc = json.loads(result.output, parse_constant=refuse)
    assert doc["best"]["memorised"] is None and doc["best"]["value"] == 0.8


def test_submit_checks_the_base_before_spending_anything(tmp_path, cli_runner, plain):
    cases = {
        "data: {name: nodata}": "base.data: Unknown dataset 'nodata'. Known datasets:",
        "data: {name: cifar10, download: false, root: ROOT}":
            "base.data: cifar10 is not in",
        "model: {name: mlp, options: {blocks: 3}}":
            "base.model: model 'mlp' got unknown option(s) blocks; it accepts: width, depth",
        "model: {name: nomodel}": "base.model: Unknown model 'nomodel'",
    }
    for base, expected in cases.items():
        spec = tmp_path / "s.yaml"
        spec.write_text(f"name: x\nstudy_dir: {tmp_path}/runs\nbase: {{optim: {{epochs: 3}}, "
                        f"{base.replace('ROOT', str(tmp_path / 'data'))}}}\n")
        result = cli_runner.invoke(app, ["submit", str(spec)])
        out = plain(result.output)
        assert result.exit_code == 2, out
        assert expected in out and "Traceback" not in out
        assert not (tmp_path / "runs").exists()  # nothing written
