"""Jobs by stable name: status.json records "analysis", "debias", ..., never a module path, so a
module can move without orphaning the run folders that name it. A dotted
'package.module:function' still resolves (tests, benchmarks, plug-ins)."""
from __future__ import annotations

import importlib
from typing import Callable

JOBS = {
    "analysis": "core.pipeline.analysis:run_analysis",
    "analysis_on_ray": "core.studies.members:run_analysis_on_ray",  # members as Ray tasks
    "debias": "core.pipeline.debias:run_debias",
    "study": "core.studies.runner:run_study",
}
# What run folders written before the package move (2026-12) recorded as their target.
OLD_TARGETS = {
    "core.analysis:run_analysis": "analysis",
    "core.debias:run_debias": "debias",
    "core.studies.runner:run_study": "study",
    "core.studies.members:run_analysis_on_ray": "analysis_on_ray",
}


def canonical(target: str) -> str:
    """A stored target as it is stored today: an old module path becomes its job name."""
    return OLD_TARGETS.get(target, target)


def resolve(target: str) -> Callable:
    target = canonical(target)
    module_name, _, func_name = JOBS.get(target, target).partition(":")
    if not module_name or not func_name:
        raise ValueError(f"invalid job target {target!r}: expected a job name ({', '.join(JOBS)}) "
                         "or 'package.module:function'")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load job target {target!r}: {exc}") from exc
    if not callable(func):
        raise ValueError(f"job target {target!r} is not callable")
    return func
