"""A method option: its default, its domain and its help, declared once in the registry.

    register("pgd", ..., options={"q": Option(0.7, gt=0, le=1, help="GCE q of the biased model"),
                                  "norm": Option("l2", choices=("l1", "l2", "linf")),
                                  "gate_init": 3.0})          # a plain default: any value of its type

The type is the default's: int, float, str, or a list of floats (typed as comma-separated text;
the bounds hold for every element, and a list needs at least one). `Method.resolve` refuses a
value outside the domain with one line naming the method, the option, the value and what is
allowed, before anything runs; `d3m methods` prints the domains and the Debias page builds its
widgets from them (`bounds` gives a number input's inclusive limits).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

KINDS = {list: "a comma-separated list of numbers", int: "a whole number", float: "a number", str: "text"}


@dataclass(frozen=True)
class Option:
    default: Any
    choices: tuple = ()  # the only values allowed (a select box on the Debias page)
    ge: float | None = None  # value >= ge
    gt: float | None = None  # value > gt
    le: float | None = None  # value <= le
    lt: float | None = None  # value < lt
    help: str = ""

    def __post_init__(self) -> None:
        if type(self.default) not in KINDS:
            raise TypeError(f"an option's default is an int, float, str or list of floats, not {self.default!r}")
        problem = self.problem(self.default)
        if problem:
            raise ValueError(f"default {self.default!r} is outside its own domain: {problem}")

    @property
    def kind(self) -> type:
        return type(self.default)

    def convert(self, value: Any) -> Any:
        """`value` as the option's type (a comma-separated string to a list of floats); TypeError
        or ValueError when it is not one (a number must be finite)."""
        if self.kind is list:
            parts = value.split(",") if isinstance(value, str) else list(value)
            return [_number(v) for v in parts if str(v).strip()]
        if self.kind is str:
            return str(value)
        number = _number(value)
        if self.kind is int:
            if not number.is_integer():
                raise ValueError(value)
            return int(number)
        return number

    def problem(self, value: Any) -> str | None:
        """What is allowed, when the (converted) value is not; else None."""
        if self.choices:
            return None if value in self.choices else self.allowed()
        if self.kind is str:
            return None
        values = value if self.kind is list else [value]
        return None if values and all(self._in_bounds(v) for v in values) else self.allowed()

    def _in_bounds(self, v: float) -> bool:
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def allowed(self) -> str:
        """'one of l1, l2, linf', 'a whole number >= 1', 'a number in (0, 1]', 'a comma-separated
        list of numbers, each > 0 (at least one)', 'any number', 'any text'."""
        if self.choices:
            return "one of " + ", ".join(map(_g, self.choices))
        bound = self._bound_text()
        if self.kind is list:
            return f"{KINDS[list]}{', each' + bound if bound else ''} (at least one)"
        return KINDS[self.kind] + bound if bound else "any " + KINDS[self.kind].removeprefix("a ")

    def _bound_text(self) -> str:
        """' in (0, 1]', ' >= 1', ' < 5' or ''."""
        low, high = _first(self.ge, self.gt), _first(self.le, self.lt)
        if low is not None and high is not None:
            return (f" in {'[' if self.ge is not None else '('}{_g(low)}, "
                    f"{_g(high)}{']' if self.le is not None else ')'}")
        if low is not None:
            return f" {'>=' if self.ge is not None else '>'} {_g(low)}"
        if high is not None:
            return f" {'<=' if self.le is not None else '<'} {_g(high)}"
        return ""

    def bounds(self) -> tuple[float | None, float | None]:
        """The inclusive (low, high) limits of a number input, in the option's type (a strict
        bound becomes the next whole number, or the next float)."""
        low = high = None
        whole = self.kind is int
        if self.ge is not None:
            low = self.ge
        elif self.gt is not None:
            low = math.floor(self.gt) + 1 if whole else math.nextafter(self.gt, math.inf)
        if self.le is not None:
            high = self.le
        elif self.lt is not None:
            high = math.ceil(self.lt) - 1 if whole else math.nextafter(self.lt, -math.inf)
        cast = int if whole else float
        return (None if low is None else cast(low)), (None if high is None else cast(high))

    def parse(self, method: str, name: str, value: Any) -> Any:
        """`value` converted and checked; ValueError in one line naming the method, the option,
        the value and what is allowed."""
        try:
            converted = self.convert(value)
        except (TypeError, ValueError):
            raise ValueError(f"{method} parameter {name}={value!r} is not {KINDS[self.kind]}") from None
        problem = self.problem(converted)
        if problem:
            shown = ", ".join(map(_g, converted)) if self.kind is list else repr(converted)
            raise ValueError(f"{method} parameter {name}={shown} is not allowed: {problem}")
        return converted


def as_option(spec: Any) -> Option:
    """A declared Option as it is; a plain default as an Option with no domain beyond its type."""
    return spec if isinstance(spec, Option) else Option(spec)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def _g(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)
