"""What every method sees and returns, and the registry that lists them.

A method is one function `fn(ctx, params) -> MethodResult` registered under a name with
the group information it uses (as Table 1 shows it: train/val) and its own options, each with
its default and its domain (core/methods/options.py: `Option(0.7, gt=0, le=1, help=...)`, or a
plain default); `Method.run` hands it the params
checked against those domains and completed, so the body does not check them again. Adding a
method is adding one module to core/methods/ that calls `register`.

A method that cannot handle some datasets (too few classes, a group without training
examples, ...) registers `requires(data) -> reason or None`; `Method.run` refuses such a
dataset with MethodRefused before anything is trained, and the pages can ask `refusal(data)`
first. tests/test_all_methods.py runs every registered method on a binary and a multi-class
dataset.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Callable

import numpy as np
import torch

from core.attribution.factors import open_scores
from core.attribution.scores import Scores
from core.config import AnalysisConfig, TrainConfig
from core.data.dataset import Dataset
from core.methods.options import Option, as_option
from core.train.metrics import group_metrics
from core.progress import Reporter
from core.runs.store import Run
from core.train.training import predict_logits


@dataclass
class MethodContext:
    """The analysis a method builds on: dataset, ERM run, scores, device, progress."""

    data: Dataset
    analysis: Run
    cfg: AnalysisConfig
    device: torch.device
    report: Reporter
    run: Run | None = None  # the debias run, where a method may keep stages (a k sweep's retrains)
    _scores: Scores | None = field(default=None, init=False, repr=False)

    @cached_property
    def train_idx(self) -> np.ndarray:
        return self.data.idx("train")

    @cached_property
    def val_idx(self) -> np.ndarray:
        return self.data.idx("val")

    @cached_property
    def erm_steps(self) -> int:
        """The ERM run's optimizer-step budget, kept for retraining on fewer examples."""
        return int(self.analysis.read_json("metrics")["steps"])

    def recipe(self, params: dict, steps: int | None = None) -> TrainConfig:
        """The analysis's training recipe with the method's seed, the ERM step budget (or
        `steps`) and optional lr / weight_decay overrides from params."""
        base = self.cfg.train
        return replace(base, seed=int(params.get("seed", base.seed)),
                       steps=self.erm_steps if steps is None else steps,
                       lr=float(params.get("lr", base.lr)),
                       weight_decay=float(params.get("weight_decay", base.weight_decay)))

    def scores(self) -> Scores:
        """The analysis's TRAK scores: its factors (or an older analysis's dense scores.npy)."""
        if self._scores is None:
            self._scores = open_scores(self.analysis.path)
        return self._scores

    def erm_val_logits(self) -> np.ndarray:
        return self.analysis.read_array("erm_logits_val")

    def val_wga(self, model: torch.nn.Module, groups: np.ndarray | None = None,
                names: list[str] | None = None) -> float:
        """Validation worst-group accuracy over `groups` (per val example; default: the true
        groups). Methods without group labels pass their pseudo-groups."""
        logits = predict_logits(model, self.data.images, self.val_idx, self.device)
        if groups is None:
            groups, names = self.data.groups[self.val_idx], self.data.group_names
        return group_metrics(logits.argmax(1), self.data.labels[self.val_idx], groups, names)["wga"]

    def val_score(self, model: torch.nn.Module, idx: np.ndarray | None = None) -> tuple[float, float]:
        """(worst-group accuracy, average accuracy) on validation examples `idx` (ids; default
        all of validation): an EpochSelector key whose average accuracy breaks WGA ties."""
        idx = self.val_idx if idx is None else idx
        logits = predict_logits(model, self.data.images, idx, self.device)
        m = group_metrics(logits.argmax(1), self.data.labels[idx], self.data.groups[idx], self.data.group_names)
        return m["wga"], m["acc"]


@dataclass
class MethodResult:
    model: torch.nn.Module
    removed: np.ndarray  # positions in the train split (not example ids) left out of training
    steps: int
    info: dict = field(default_factory=dict)  # what was selected and why (k sweep, epoch, ...)


class MethodRefused(ValueError):
    """The method cannot run on this dataset; the message names what it needs."""


TRAIN_SPLIT = "the training split"
CONTROL = "random"  # the random-removal control a removal run gets (core/methods/random_removal.py)
BASELINE = "erm"  # the analysis's own model, as the runs table names it (core/methods/erm.py)
_RECIPE = TrainConfig()
COMMON_PARAMS = {  # every method's: the seed and the training recipe's overrides (not filled in when not given)
    "seed": Option(_RECIPE.seed, ge=0, help="the method's seed"),
    "lr": Option(_RECIPE.lr, gt=0, help="learning rate of the training recipe"),
    "weight_decay": Option(_RECIPE.weight_decay, ge=0, help="weight decay of the training recipe"),
}
NEEDS_PARAMS = {"seed": (), "k": ("k", "k_sweep"), "flagged": ("ids",), "cells": ("cells",)}


@dataclass(frozen=True)
class Report:
    """A method's own table on the Compare page: one row per finished run of it, from the
    run's config and its metrics' `info`."""

    title: str
    caption: str
    row: Callable[[dict, dict], dict]
    percent: tuple[str, ...] = ()  # columns shown as percentages (besides "sparsity" and "... acc ...")


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    group_info: str  # "train/val" group labels used, as in Table 1: "no/no", "no/yes", "yes/yes"
    fn: Callable[[MethodContext, dict], MethodResult]
    removes: bool = True  # a removal method: its random control removes as many examples
    needs: str = "seed"  # what a user chooses besides the seed: seed | k | flagged | cells
    options: dict[str, Option] = field(default_factory=dict)  # the method's own settings: default, domain, help
    requires: Callable[[Dataset], str | None] | None = None  # why a dataset cannot be handled, or None
    alignment: str = "alignment"  # needs == "k": the analysis array whose A_i < 0 count is the default k
    report: Report | None = None  # the method's own Compare-page table, if it has one
    trains_on: str = TRAIN_SPLIT  # the data the method fits on (the Debias page and `d3m methods` say it)

    @property
    def control(self) -> bool:
        return self.name == CONTROL

    @property
    def defaults(self) -> dict:
        return {name: option.default for name, option in self.options.items()}

    def option(self, name: str) -> Option:
        """The declared option `name` (its own, else a common one); an unknown name is an error
        listing the parameters this method takes."""
        spec = self.options.get(name) or COMMON_PARAMS.get(name)
        if spec is None:
            raise ValueError(f"{self.name} has no parameter {name!r}; its parameters: {', '.join(self.parameters())}")
        return spec

    def parameters(self) -> list[str]:
        return sorted(set(COMMON_PARAMS) | set(NEEDS_PARAMS[self.needs]) | set(self.options))

    def check(self, name: str, value):
        """One parameter's value converted to its option's type and checked against its domain
        (k, k_sweep, ids and cells pass as they are: core/pipeline/preflight.py checks them)."""
        if name in NEEDS_PARAMS[self.needs] or value is None:
            return value
        return self.option(name).parse(self.name, name, value)

    def resolve(self, params: dict) -> dict:
        """`params` checked and completed: an unknown name is an error naming it; each option is
        converted to its type (a comma-separated string to a list of floats) and refused outside
        its domain, in one line naming the method, the option, the value and what is allowed;
        options not given take their defaults."""
        unknown = sorted(set(params) - set(self.parameters()))
        if unknown:
            raise ValueError(f"{self.name} has no parameter {', '.join(map(repr, unknown))}; "
                             f"its parameters: {', '.join(self.parameters())}")
        return {**self.defaults, **{k: self.check(k, v) for k, v in params.items()}}

    def refusal(self, data: Dataset) -> str | None:
        """Why this method cannot run on `data` (one line naming what it needs), or None."""
        reason = self.requires(data) if self.requires is not None else None
        return f"{self.title} cannot run on this dataset: {reason}" if reason else None

    def run(self, ctx: MethodContext, params: dict) -> MethodResult:
        """The method on the analysis; params are checked and the dataset is refused (with
        MethodRefused) before anything is trained."""
        params = self.resolve(params)
        reason = self.refusal(ctx.data)
        if reason:
            raise MethodRefused(reason)
        return self.fn(ctx, params)


METHODS: dict[str, Method] = {}


def register(name: str, title: str, group_info: str, removes: bool = True, needs: str = "seed",
             options: dict | None = None, requires: Callable[[Dataset], str | None] | None = None,
             alignment: str = "alignment", report: Report | None = None, trains_on: str = TRAIN_SPLIT):
    """Register `fn` as a method; `options` maps each option's name to an Option (default,
    domain, help) or a plain default (any value of its type)."""
    def wrap(fn: Callable[[MethodContext, dict], MethodResult]):
        declared = {key: as_option(spec) for key, spec in (options or {}).items()}
        METHODS[name] = Method(name, title, group_info, fn, removes, needs, declared, requires,
                               alignment, report, trains_on)
        return fn
    return wrap


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose one of {', '.join(sorted(METHODS))}")
    return METHODS[name]
