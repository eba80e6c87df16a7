"""The study file: a small TOML file (Python's tomllib) naming what to vary and what to report.

    title = "D3M: ensemble size"          # optional (default: the file's name)
    seeds = [0, 1, 2]                     # each cell runs once per seed (analysis and method seed)
    methods = ["d3m"]                     # every cell runs each of these registered methods
    control = false                       # also train each removal method's random control
    metrics = ["test_wga", "wall_s"]      # optional: the table's columns (default: all of METRICS)

    [analysis]                            # analysis settings: core.config.analysis_config's names
    data = "../sample_data"               #   (+ data, group_attribute); paths relative to this file
    epochs = 12
    generate = "--classes 10 --bias-values 10 --conflict 0.01"  # optional: make a missing `data`
                                          #   folder with sample_data/make_sample.py and these arguments

    [params.d3m]                          # fixed options of one method
    beta = 1.0

    [grid]                                # every combination of these lists
    "analysis.n_models" = [1, 3, 5]       #   keys: analysis.NAME or METHOD.NAME (a method option)

    [[variants]]                          # and/or a list of variants, each a set of such keys
    label = "val sweep"
    "d3m.k_sweep" = [500, 1000, 1500]

Every value is checked before anything runs (a method option against its domain, each cell's
options resolved by the method); an error names the file, the key and its line.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from core.config import DEFAULT_DATA, DataConfig, ModelConfig, TrainConfig, TrakConfig
from core.methods import DEFAULT_METHOD, get_method

TOP_KEYS = {"title", "seeds", "methods", "control", "metrics", "analysis", "params", "grid", "variants"}
METRICS = ("test_wga", "test_acc", "test_balanced_acc", "test_macro_f1", "val_wga", "n_removed",
           "wall_s", "cpu_s", "peak_mb", "analysis_wall_s", "method_s")


class StudyError(ValueError):
    """A study file problem: one line naming the file, the key and its line."""


@dataclass(frozen=True)
class Study:
    name: str  # the file's stem
    path: str
    title: str
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    control: bool
    metrics: tuple[str, ...]
    analysis: dict  # analysis settings (data root resolved)
    params: dict  # method -> fixed options
    grid: dict  # "analysis.X" | "METHOD.X" -> list of values
    variants: tuple[dict, ...]  # each: optional "label" + keys as in grid, one value each
    generate: str | None = None  # make_sample.py arguments that make a missing `data` folder


def line_of(text: str, key: str) -> int | None:
    """The line (1-based) where `key` is set or opens a table; tomllib does not say."""
    last = key.rsplit(".", 1)[-1]
    for name in (key, last):
        pattern = re.compile(rf'^\s*(\[+\s*)?("{re.escape(name)}"|{re.escape(name)})\s*(=|\]|\.)')
        inline = re.compile(rf'[{{,]\s*("{re.escape(name)}"|{re.escape(name)})\s*=')
        for i, line in enumerate(text.splitlines(), 1):
            if pattern.search(line) or inline.search(line):
                return i
    return None


class _Checker:
    """Raises StudyError with the file, key and line."""

    def __init__(self, path: Path, text: str):
        self.path, self.text = path, text

    def fail(self, key: str, message: str) -> None:
        line = line_of(self.text, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        raise StudyError(f"{where}: {key}: {message}")


def _field_types() -> dict[str, str]:
    """Analysis setting name -> its type annotation ('int', 'float | None', ...)."""
    out = {}
    for cls in (DataConfig, ModelConfig, TrainConfig, TrakConfig):
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, str(f.type))
    return out


def _type_ok(value: Any, annotation: str) -> bool:
    if value is None or isinstance(value, bool):
        return False
    kinds = {"int": int, "float": (int, float), "str": str}
    if annotation.startswith("tuple"):
        return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    return any(isinstance(value, kinds[a.strip()]) for a in annotation.split("|") if a.strip() in kinds)


def check_setting(check: _Checker, key: str, name: str, value: Any) -> None:
    types = _field_types()
    if name not in types or name == "root":
        check.fail(key, f"unknown analysis setting {name!r}; settings: {', '.join(sorted(set(types) - {'root'}))}")
    if not _type_ok(value, types[name]):
        check.fail(key, f"{value!r} is not {types[name]}")


def check_option(check: _Checker, key: str, method: str, name: str, value: Any) -> None:
    """A method option's name, type and domain (core/methods/options.py)."""
    try:
        get_method(method).check(name, value)
    except ValueError as exc:
        check.fail(key, str(exc))


def check_cells(check: _Checker, study: Study) -> None:
    """Each cell's options together, resolved by its method as a run would resolve them; the
    error names the first of the cell's keys for that method."""
    from core.studies.grid import cells  # grid builds on this module

    for cell in cells(study):
        try:
            get_method(cell.method).resolve(cell.params)
        except ValueError as exc:
            keys = [k for k in (*study.grid, *(k for v in study.variants for k in v))
                    if k.partition(".")[0] == cell.method] or list(cell.params)
            check.fail(keys[0] if keys else "methods", f"{exc} (cell {cell.label!r})")


def check_key(check: _Checker, study_methods: tuple[str, ...], key: str, value: Any) -> None:
    """A grid or variant key: analysis.NAME or METHOD.NAME, with one value."""
    scope, _, name = key.partition(".")
    if not name:
        check.fail(key, "expected analysis.NAME or METHOD.NAME")
    if scope == "analysis":
        check_setting(check, key, name, value)
    elif scope in study_methods:
        check_option(check, key, scope, name, value)
    else:
        check.fail(key, f"{scope!r} is neither 'analysis' nor one of the study's methods ({', '.join(study_methods)})")


def load_study(path: str | Path) -> Study:
    """Read and check a study file; StudyError names the first problem's key and line."""
    path = Path(path)
    text = path.read_text()
    check = _Checker(path, text)
    raw = _parse(path, text)
    for key in sorted(set(raw) - TOP_KEYS):
        check.fail(key, f"unknown key; expected one of {', '.join(sorted(TOP_KEYS))}")
    methods = _methods(check, raw)
    seeds = tuple(_list(check, raw, "seeds", int, [0]))
    for seed in seeds:  # each task's method seed: the common option's domain
        check_option(check, "seeds", methods[0], "seed", seed)
    metrics = _metrics(check, raw)
    analysis_table = dict(_table(check, raw, "analysis"))
    generate = analysis_table.pop("generate", None)
    if generate is not None:
        _check_generate(check, generate)
    analysis = _analysis(check, path, analysis_table, missing_ok=generate is not None)
    params = _params(check, raw, methods)
    grid = _grid(check, raw, methods)
    variants = _variants(check, raw, methods)
    control = raw.get("control", False)
    if not isinstance(control, bool):
        check.fail("control", f"{control!r} is not true or false")
    title = raw.get("title", path.stem)
    study = Study(path.stem, str(path.resolve()), str(title), seeds, methods, control, metrics, analysis,
                  params, grid, tuple(variants), generate)
    check_cells(check, study)
    return study


def _check_generate(check: _Checker, value: Any) -> None:
    from sample_data.make_sample import parser

    if not isinstance(value, str):
        check.fail("generate", f"{value!r} is not text (make_sample.py arguments)")
    try:
        parser().parse_args(value.split())
    except SystemExit:
        check.fail("generate", f"{value!r} is not a valid make_sample.py command line (see its --help)")


def ensure_data(study: Study) -> None:
    """Make the study's dataset with make_sample.py's `generate` arguments when it is missing
    (fixed seed: the same files every time)."""
    root = Path(study.analysis["data"])
    if study.generate and not root.exists():
        from sample_data.make_sample import generate_from_args

        generate_from_args(root, study.generate.split())


def _parse(path: Path, text: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{path}: not valid TOML: {exc}") from None


def _methods(check: _Checker, raw: dict) -> tuple[str, ...]:
    """The study's methods, each a registered one."""
    methods = tuple(_list(check, raw, "methods", str, [DEFAULT_METHOD]))
    for m in methods:
        try:
            get_method(m)
        except ValueError as exc:
            check.fail("methods", str(exc))
    return methods


def _metrics(check: _Checker, raw: dict) -> tuple[str, ...]:
    """The table's columns: names from METRICS or info.NAME."""
    metrics = tuple(_list(check, raw, "metrics", str, list(METRICS)))
    for m in metrics:
        if m not in METRICS and not m.startswith("info."):
            check.fail("metrics", f"unknown metric {m!r}; metrics: {', '.join(METRICS)}, info.NAME")
    return metrics


def _params(check: _Checker, raw: dict, methods: tuple[str, ...]) -> dict:
    """[params.METHOD] tables: fixed options of the study's methods."""
    params = _table(check, raw, "params")
    for method, options in params.items():
        if method not in methods or not isinstance(options, dict):
            check.fail(f"params.{method}", f"expected a table of options of one of the study's methods {methods}")
        for name, value in options.items():
            check_option(check, name, method, name, value)
    return params


def _grid(check: _Checker, raw: dict, methods: tuple[str, ...]) -> dict:
    """[grid]: each key a non-empty list of values, every value checked."""
    grid = _table(check, raw, "grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            check.fail(key, "a grid key needs a non-empty list of values")
        for value in values:
            check_key(check, methods, key, value)
    return grid


def _variants(check: _Checker, raw: dict, methods: tuple[str, ...]) -> list[dict]:
    """[[variants]]: each an optional text label and keys as in the grid, one value each."""
    variants = raw.get("variants", [])
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        check.fail("variants", "expected [[variants]] tables")
    for variant in variants:
        for key, value in variant.items():
            if key == "label":
                if not isinstance(value, str):
                    check.fail(key, "a label is text")
            else:
                check_key(check, methods, key, value)
    return variants


def _list(check: _Checker, raw: dict, key: str, kind: type, default: list) -> list:
    value = raw.get(key, default)
    if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
        check.fail(key, f"expected a list of {kind.__name__}, got {value!r}")
    if not value:
        check.fail(key, "empty list")
    return value


def _table(check: _Checker, raw: dict, key: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        check.fail(key, "expected a table")
    return value


def _analysis(check: _Checker, path: Path, table: dict, missing_ok: bool = False) -> dict:
    """Analysis settings with `data` resolved against the study file's folder."""
    out = dict(table)
    data = out.pop("data", DEFAULT_DATA)
    group_attribute = out.pop("group_attribute", None)
    for key in ("data", "group_attribute"):
        if key in table and not isinstance(table[key], str):
            check.fail(key, f"{table[key]!r} is not text")
    root = (path.parent / data).resolve()
    if not root.exists() and not missing_ok:
        check.fail("data", f"no such dataset folder or table {root}")
    for name, value in out.items():
        check_setting(check, name, name, value)
    return {"data": str(root), "group_attribute": group_attribute, **out}
