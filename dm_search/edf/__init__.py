"""The emphasis core: EDF families, their mean/std coordinates and emphasis schedules.

``base`` holds the EDF class, the family registry and the forward quadrature (an EDF's mean
and std); ``families`` the built-in families; ``moments`` the inverse (the member with a given
mean and std, and the region a family reaches); ``schedule`` an EDF that moves over training.

Imports only torch, numpy, scipy and ``dm_search.common``.
"""

from __future__ import annotations

from dm_search.edf import families, moments  # noqa: F401  (registers the families; sets EDF.from_moments)
from dm_search.edf.base import (
    EDF,
    ParamSpec,
    density_moments,
    from_spec_string,
    get,
    names,
    parse_params,
    register,
)
from dm_search.edf.schedule import EDFSchedule

__all__ = ["EDF", "EDFSchedule", "ParamSpec", "density_moments", "from_spec_string", "get",
           "moments", "names", "parse_params", "register"]
