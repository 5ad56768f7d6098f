"""StudySpec -> an Optuna define-by-run function that suggests one trial's settings and returns
its resolved trial config. It only suggests: nothing is trained or written here."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import optuna

from dm_search.config import TrialConfig, set_path
from dm_search.edf import EDF
from dm_search.spec import (
    StudySpec,
    family_coords,
    family_ranges,
    loss_settings,
    moment_ranges,
)

__all__ = ["grid_points", "make_sampler", "make_space", "trial_config_for", "warm_start_points"]


def trial_config_for(spec: StudySpec, edf: EDF, params: dict[str, Any] | None = None,
                     ) -> TrialConfig:
    """The base config with ``edf`` (run with its family's normalisation) and dotted params."""
    cfg = spec.base_config().to_dict()
    normalise, eps = loss_settings(edf.family, spec.space.families.get(edf.family))
    cfg["loss"] = {"edf": edf.to_config(), "normalise": normalise, "eps": eps}
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
    from dm_search import moments

    fs = spec.space.families[family]
    if family_coords(family, fs) == "moments":
        mean_r, std_r = moment_ranges(family, fs)
        mean = _suggest(trial, f"{family}.mean", *mean_r)
        std = None if std_r is None else _suggest(trial, f"{family}.std", *std_r)
        return moments.nearest(family, mean, std)
    mode_r, spread_r = family_ranges(family, fs)
    assert mode_r is not None
    mode = _suggest(trial, f"{family}.mode", *mode_r)
    spread = (None if spread_r is None
              else _suggest(trial, f"{family}.spread", *spread_r, log=fs.log_spread))
    return EDF.from_mode_spread(family, mode=mode, spread=spread)


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
        edf = suggest_edf(trial, spec, family)
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
        return {"trial_config": trial_config_for(spec, edf, params).to_dict()}


def make_space(spec: StudySpec) -> Callable[[optuna.Trial], dict[str, Any]]:
    return SearchSpace(spec)


def _as_params(spec: StudySpec, edf: EDF, extra: dict[str, Any]) -> dict[str, Any]:
    """Optuna parameter values that make :func:`make_space` produce ``edf``."""
    point: dict[str, Any] = {}
    if len(spec.space.families) > 1:
        point["family"] = edf.family
    fs = spec.space.families[edf.family]
    if family_coords(edf.family, fs) == "moments":
        ranges = dict(zip(("mean", "std"), moment_ranges(edf.family, fs), strict=True))
    else:
        ranges = dict(zip(("mode", "spread"), family_ranges(edf.family, fs), strict=True))
    for name, r in ranges.items():
        if r is not None and r[0] != r[1]:
            point[f"{edf.family}.{name}"] = getattr(edf, name)
    point.update(extra)
    return point


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
        fs = spec.space.families.get(edf.family)
        if fs is None:
            continue
        if family_coords(edf.family, fs) == "moments":
            ranges = dict(zip(("mean", "std"), moment_ranges(edf.family, fs), strict=True))
        else:
            ranges = dict(zip(("mode", "spread"), family_ranges(edf.family, fs), strict=True))
        inside = all(r is None or (getattr(edf, k) is not None and
                                   r[0] <= getattr(edf, k) <= r[1]) for k, r in ranges.items())
        if inside:
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
            return optuna.samplers.TPESampler(seed=seed, **opts)
        if s.name == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, **s.options)
        if s.name == "qmc":
            return optuna.samplers.QMCSampler(seed=seed, **s.options)
        # random, and grid (whose points are enqueued; any trials beyond them are random)
        return optuna.samplers.RandomSampler(seed=seed, **s.options)
