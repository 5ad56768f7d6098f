"""StudySpec -> an Optuna define-by-run function that suggests one trial's settings and returns
its resolved trial config. It only suggests: nothing is trained or written here."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import optuna

from dm_search.edf import EDF
from dm_search.study.families import FamilyCoords, loss_settings
from dm_search.study.sampling import RECENT, BoundedHistory
from dm_search.study.spec import StudySpec
from dm_search.training.config import TrialConfig, set_path

__all__ = ["grid_points", "make_sampler", "make_space", "trial_config_for", "warm_start_points"]


def trial_config_for(spec: StudySpec, edf: EDF, params: dict[str, Any] | None = None,
                     schedule: dict[str, Any] | None = None) -> TrialConfig:
    """The base config with ``edf`` (run with its family's normalisation), an emphasis
    ``schedule`` (``{"edf_end": ..., "ramp": ...}``) if any, and dotted params."""
    cfg = spec.base_config().to_dict()
    normalise, eps = loss_settings(edf.family, spec.space.families.get(edf.family))
    cfg["loss"] = {"edf": edf.to_config(), **(schedule or {}), "normalise": normalise,
                   "eps": eps}
    for path, value in (params or {}).items():
        set_path(cfg, path, value)
    return TrialConfig.from_dict(cfg, source=f"trial config for {edf!r}")


def _suggest(trial: optuna.Trial, name: str, lo: float, hi: float, log: bool = False) -> float:
    if lo == hi:
        return lo
    return trial.suggest_float(name, lo, hi, log=log)


def suggest_edf(trial: optuna.Trial, spec: StudySpec, family: str) -> EDF:
    """The family's coordinates, suggested conditionally on the family: (mode, spread), mapped
    to the parameters (dm: lam = mode / (1 - mode), beta = spread), or (mean, std), mapped to
    the member with those moments (the nearest reachable one where the pair is out of reach)."""
    return spec.coords(family).member(*_suggest_coords(trial, spec.coords(family)))


def _suggest_coords(trial: optuna.Trial, fc: FamilyCoords) -> tuple[float, float | None]:
    (x, y), (r_a, r_b) = fc.names, fc.start
    assert r_a is not None
    a = _suggest(trial, f"{fc.family}.{x}", *r_a)
    b = None if r_b is None else _suggest(trial, f"{fc.family}.{y}", *r_b, log=fc.log(y))
    return a, b


def suggest_schedule(trial: optuna.Trial, spec: StudySpec, family: str,
                     ) -> tuple[EDF, dict[str, Any] | None]:
    """The start EDF and, for a family searched as a schedule, ``{"edf_end", "ramp"}``: where
    it ends (each coordinate without an end range ends where it started), the ramp's shape and
    when it starts and ends. An end equal to the start is a fixed EDF (schedule None)."""
    fc = spec.coords(family)
    a, b = _suggest_coords(trial, fc)
    start = fc.member(a, b)
    if fc.end is None or fc.ramp is None:
        return start, None
    (x, y), (r_a, r_b) = fc.names, fc.end
    a_end = a if r_a is None else _suggest(trial, f"{family}.{x}_end", *r_a)
    b_end = b if r_b is None else _suggest(trial, f"{family}.{y}_end", *r_b, log=fc.log(y))
    if (a_end, b_end) == (a, b):
        return start, None
    shapes, r_start, r_end = fc.ramp
    shape = shapes[0] if len(shapes) == 1 else trial.suggest_categorical(f"{family}.ramp",
                                                                         shapes)
    ramp = {"shape": shape, "start": _suggest(trial, f"{family}.ramp_start", *r_start),
            "end": _suggest(trial, f"{family}.ramp_end", *r_end), "coords": fc.kind}
    return start, {"edf_end": fc.member(a_end, b_end).to_config(), "ramp": ramp}


class SearchSpace:
    """The define-by-run function: family (categorical), then its coordinates (conditional on
    the family, see :func:`suggest_edf`), then any dotted hyperparameters. Returns
    ``{"trial_config": <resolved TrialConfig as a dict>}``.

    A class rather than a closure so that it pickles (Ray saves its searcher's state)."""

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        spec = self.spec
        families = list(spec.space.families)
        extra = spec.space.params
        family = (trial.suggest_categorical("family", families) if len(families) > 1
                  else families[0])
        edf, schedule = suggest_schedule(trial, spec, family)
        params: dict[str, Any] = {}
        for path, rng in extra.items():
            if rng.choices is not None:
                params[path] = trial.suggest_categorical(path, rng.choices)
            elif rng.is_int:
                params[path] = trial.suggest_int(path, int(rng.low or 0), int(rng.high or 0),
                                                 log=rng.log, step=int(rng.step or 1))
            else:
                params[path] = trial.suggest_float(path, float(rng.low or 0.0),
                                                   float(rng.high or 0.0), log=rng.log,
                                                   step=rng.step)
        return {"trial_config": trial_config_for(spec, edf, params, schedule).to_dict()}


def make_space(spec: StudySpec) -> Callable[[optuna.Trial], dict[str, Any]]:
    return SearchSpace(spec)


def _as_params(spec: StudySpec, edf: EDF, extra: dict[str, Any]) -> dict[str, Any]:
    """Optuna parameter values that make :func:`make_space` produce ``edf``; in a family
    searched as a schedule, the fixed ``edf`` (its end is its start)."""
    point: dict[str, Any] = {}
    if len(spec.space.families) > 1:
        point["family"] = edf.family
    point.update(spec.coords(edf.family).as_params(edf))
    point.update(extra)
    return point


def family_dims(spec: StudySpec, family: str) -> int:
    """How many coordinates the family searches (its start, its end and its ramp): at least 1."""
    return spec.coords(family).dims()


def family_due(spec: StudySpec, study: optuna.Study) -> str | None:
    """The family the next searched trial must come from, or None to let the sampler choose.

    With ``space.family_budget: coords`` (the default) each family's share of the searched
    trials follows its number of searched coordinates (dm's two against gce's one: two thirds
    and one third), so that a sampler that finds a good one-parameter region first cannot
    starve a family whose good region is narrower. A family more than one trial short of its
    share is due; queued points (warm start, grid) run first."""
    families = list(spec.space.families)
    if ((spec.space.family_budget or "coords") != "coords" or len(families) < 2
            or spec.sampler.name == "grid"):
        return None
    trials = study.get_trials(deepcopy=False)
    if any(t.state == optuna.trial.TrialState.WAITING for t in trials):
        return None
    counts = dict.fromkeys(families, 0)
    for t in trials:
        fam = t.params.get("family")
        if fam in counts and t.user_attrs.get("stop_reason") != "failed: interrupted":
            counts[fam] += 1
    dims = {f: family_dims(spec, f) for f in families}
    total, n = sum(dims.values()), sum(counts.values()) + 1
    short = {f: dims[f] / total * n - counts[f] for f in families}
    due = max(families, key=lambda f: (short[f], -families.index(f)))
    return due if short[due] >= 1.0 else None


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """space.grid as Optuna parameter dicts (for enqueue_trial)."""
    out = []
    for i, raw in enumerate(spec.space.grid):
        edf = EDF.from_config({k: v for k, v in raw.items() if "." not in k})
        if edf.family not in spec.space.families:
            raise ValueError(f"space.grid[{i}] uses family {edf.family!r}, which is not in "
                             f"space.families ({', '.join(spec.space.families)})")
        out.append(_as_params(spec, edf, {k: v for k, v in raw.items() if "." in k}))
    return out


# The paper's settings evaluated first with warm_start: the hand-picked DM (mode, spread) pairs
# and GCE (plain CE is a baseline, run once as a reference).
_PAPER_POINTS: list[dict[str, Any]] = [
    {"family": "dm", "lam": 0.5, "beta": 8.0},
    {"family": "dm", "lam": 1.0, "beta": 16.0},
    {"family": "dm", "lam": 2.0, "beta": 16.0},
    {"family": "gce", "q": 0.7},
]


def warm_start_points(spec: StudySpec) -> list[dict[str, Any]]:
    """The paper's settings that fall inside the study's space, as Optuna parameter dicts."""
    out = []
    for raw in _PAPER_POINTS:
        edf = EDF.from_config(raw)
        if edf.family in spec.space.families and spec.coords(edf.family).inside(edf):
            out.append(_as_params(spec, edf, {}))
    return out


def make_sampler(spec: StudySpec, *, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler. ``seed_offset`` (the number of trials already in the study when
    resuming) keeps a resumed study from repeating its first suggestions."""
    s = spec.sampler
    seed = s.seed + seed_offset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if s.name == "tpe":
            opts = {"multivariate": True, "group": True, "constant_liar": True, **s.options}
            return BoundedHistory(optuna.samplers.TPESampler(seed=seed, **opts),
                                  recent=s.history or RECENT)
        if s.name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, **s.options)
        if s.name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, **s.options)
        # random, and grid (whose points are enqueued; any trials beyond them are random)
        return optuna.samplers.RandomSampler(seed=seed, **s.options)
