"""Values outside each registered option's declared domain, generated from the registry (so a
method or option added later is covered): the CLI, study and page tests refuse every one.

The values are derived from the declaration's fields (the choices, a bound itself when it is
strict, one past it when it is not), not from Option.problem, the check under test.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.methods import METHODS
from core.methods.base import COMMON_PARAMS
from core.methods.options import Option


@dataclass(frozen=True)
class Case:
    method: str
    name: str
    value: Any  # as a user gives it: a number, text, or a list of numbers

    @property
    def id(self) -> str:
        return f"{self.method}.{self.name}={self.text}"

    @property
    def text(self) -> str:
        """The value as typed after --param NAME=."""
        return ",".join(map(str, self.value)) if isinstance(self.value, list) else str(self.value)

    @property
    def toml(self) -> str:
        if isinstance(self.value, str):
            return f'"{self.value}"'
        return "[" + ", ".join(map(repr, self.value)) + "]" if isinstance(self.value, list) else repr(self.value)


def has_domain(option: Option) -> bool:
    return bool(option.choices) or any(b is not None for b in (option.ge, option.gt, option.le, option.lt))


def outside(option: Option) -> list[Any]:
    """Values outside the option's declared domain: not a choice; below / above each bound."""
    if option.choices:
        if option.kind is str:
            return [option.choices[0] + "x", option.choices[-1].upper()]
        return [min(option.choices) / 2, max(option.choices) + 1]
    step = 1 if option.kind is int else 0.5
    bad = ([option.ge - step] if option.ge is not None else []) + ([option.gt] if option.gt is not None else []) \
        + ([option.le + step] if option.le is not None else []) + ([option.lt] if option.lt is not None else [])
    bad = [option.kind(v) if option.kind is not list else v for v in bad]
    if option.kind is list:
        return [[option.default[0], v] for v in bad] + [[]]
    return bad


def options_of(method: str) -> dict[str, Option]:
    """A method's own options and the common ones (its own win: BA-LoRA's lr)."""
    return {**COMMON_PARAMS, **METHODS[method].options}


def cases() -> list[Case]:
    out = [Case(m, name, v) for m in METHODS for name, option in options_of(m).items() if has_domain(option)
           for v in outside(option)]
    assert {c.method for c in out} == set(METHODS)  # the common options give every method a case
    return out


def own_cases() -> list[Case]:
    """The cases of the methods' own options (not the common seed / lr / weight_decay)."""
    return [c for c in cases() if c.name in METHODS[c.method].options]
