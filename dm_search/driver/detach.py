"""Detached submission: a study sent to a running Ray cluster as a Ray Job, so that it goes on
after the submitting shell closes."""

from __future__ import annotations

import shlex
from typing import Any

from dm_search import storage as st
from dm_search.common import plugins
from dm_search.driver.cluster import ClusterUnavailable, code_environment
from dm_search.study.spec import StudySpec
from dm_search.training.config import ConfigError, dump_yaml
from dm_search.training.helpers import check_code

__all__ = ["ENV_SPEC", "submit_detached"]

ENV_SPEC = "DM_SEARCH_SPEC_YAML"


def submit_detached(spec: StudySpec, *, address: str, storage_url: str | None,
                    resume: st.Resume | bool) -> str:
    """Send ``dm-search submit`` to a running Ray cluster as a Ray Job; returns the job id.

    ``address`` is the cluster's job-submission (dashboard) address, e.g. http://HOST:8265.
    The storage URL travels in the job's environment, not on its command line.
    """
    from ray.job_submission import JobSubmissionClient

    # The user's code is checked here (importable, callable as dm-search calls it); the data
    # is not: it may exist on the cluster only.
    plugins.add_code_paths([spec.code] if spec.code else [])
    try:
        check_code(spec.base_config())
    except ConfigError as err:
        raise ConfigError(f"spec {spec.name!r}, base.{err}") from None

    try:
        client = JobSubmissionClient(address)
    except Exception as err:
        raise ClusterUnavailable(
            f"cannot reach the Ray job server at {address!r}: {str(err).splitlines()[0]}. "
            "Use the dashboard address of a running cluster (http://HOST:8265)."
        ) from None
    # The resolved spec (base config inlined, no storage URL) travels in the job's environment:
    # no file to upload, and no working directory that Ray may clean up under the driver.
    # The code's folder goes as the job's working directory, which every worker of the job
    # shares: the spec names no folder of the submitting machine.
    resolved = spec.model_dump(mode="json", exclude={"storage", "code"})
    env = {ENV_SPEC: dump_yaml(resolved)}
    if storage_url:
        env[st.ENV_STORAGE] = storage_url
    cmd = ["dm-search", "submit", f"env:{ENV_SPEC}", "--address", "auto"]
    if resume in (True, st.Resume.EXISTING):
        cmd.append("--resume")
    elif resume == st.Resume.EITHER:
        cmd.append("--resume-if-exists")
    code = code_environment(spec.code, spec.study_dir) or {}
    runtime_env: dict[str, Any] = {**code, "env_vars": {**env, **code.get("env_vars", {})}}
    return str(client.submit_job(entrypoint=shlex.join(cmd), runtime_env=runtime_env))
