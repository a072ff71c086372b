"""A small declarative schema for YAML configuration: types, defaults, choices, ranges.

Validation returns `Config` objects (attribute access, defaults filled in) and raises
`WorkloadError` naming the file, the dotted key and what was expected. Unknown keys are
errors: a typo must never be silently ignored.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from sw.core.errors import WorkloadError

REQUIRED = object()


class Config(dict):
    """A validated mapping with attribute access (`cfg.search.pop_size`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict:
        def plain(value: Any) -> Any:
            if isinstance(value, Config):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            return value

        return plain(self)


class Spec:
    """Base class: `validate(value, ctx, key)` returns the cleaned value or raises."""

    default: Any = REQUIRED
    doc: str = ""

    def validate(self, value: Any, file: Any, key: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # what is expected, for error messages
        raise NotImplementedError


def _fail(file: Any, key: str, expected: str, got: Any) -> None:
    raise WorkloadError(file, key, expected, got)


@dataclass
class Scalar(Spec):
    """bool, int, float or str, with optional choices, range and nullability.

    Numbers must be finite (YAML's .nan and .inf are refused); `exclusive_min` makes `min`
    itself invalid (a learning rate > 0).
    """

    type: type
    default: Any = REQUIRED
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False
    doc: str = ""
    exclusive_min: bool = False

    def describe(self) -> str:
        names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
        text = names.get(self.type, self.type.__name__)
        if self.choices:
            text = "one of " + ", ".join(map(str, self.choices))
        low = "(" if self.exclusive_min else "["
        if self.min is not None and self.max is not None:
            text += f" in {low}{self.min}, {self.max}]"
        elif self.min is not None:
            text += f" {'>' if self.exclusive_min else '>='} {self.min}"
        elif self.max is not None:
            text += f" <= {self.max}"
        if self.nullable:
            text += " or null"
        return text

    def validate(self, value: Any, file: Any, key: str) -> Any:
        expected = self.describe() + (f" ({self.doc})" if self.doc else "")
        if value is None:
            if self.nullable:
                return None
            _fail(file, key, expected, value)
        ok = isinstance(value, self.type) and not (self.type is not bool and isinstance(value, bool))
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            _fail(file, key, expected, value)
        if self.choices and value not in self.choices:
            _fail(file, key, expected, value)
        if self.type is float and not math.isfinite(value):
            _fail(file, key, expected, value)
        if self.min is not None and (value < self.min or (self.exclusive_min and value == self.min)):
            _fail(file, key, expected, value)
        if self.max is not None and value > self.max:
            _fail(file, key, expected, value)
        return value


@dataclass
class PathSpec(Spec):
    """A filesystem path; `must_exist` checks it at load time (relative to the working directory)."""

    default: Any = REQUIRED
    must_exist: bool = False
    nullable: bool = False
    doc: str = ""

    def describe(self) -> str:
        return ("an existing path" if self.must_exist else "a path") + (" or null" if self.nullable else "")

    def validate(self, value: Any, file: Any, key: str) -> Any:
        if value is None and self.nullable:
            return None
        if not isinstance(value, str) or not value:
            _fail(file, key, self.describe(), value)
        path = Path(value).expanduser()
        if self.must_exist and not path.exists():
            raise WorkloadError(file, key, "an existing path", str(path))
        return str(path)


@dataclass
class ListOf(Spec):
    item: Spec
    default: Any = REQUIRED
    min_len: int = 0
    nullable: bool = False
    doc: str = ""

    def describe(self) -> str:
        return f"a list of {self.item.describe()}" + (f" (at least {self.min_len})" if self.min_len else "")

    def validate(self, value: Any, file: Any, key: str) -> Any:
        if value is None and self.nullable:
            return None
        if not isinstance(value, list) or len(value) < self.min_len:
            _fail(file, key, self.describe(), value)
        return [self.item.validate(v, file, f"{key}[{i}]") for i, v in enumerate(value)]


@dataclass
class AnyOf(Spec):
    """The first alternative that validates wins (e.g. a float or a list of floats)."""

    options: tuple
    default: Any = REQUIRED
    doc: str = ""

    def describe(self) -> str:
        return " or ".join(o.describe() for o in self.options)

    def validate(self, value: Any, file: Any, key: str) -> Any:
        for option in self.options:
            try:
                return option.validate(value, file, key)
            except WorkloadError:
                continue
        _fail(file, key, self.describe(), value)


@dataclass
class Section(Spec):
    """A mapping with a fixed set of keys; unknown keys are errors."""

    fields: Mapping[str, Spec]
    default: Any = REQUIRED
    nullable: bool = False
    check: Callable[[Config, Any, str], None] | None = None
    doc: str = ""

    def describe(self) -> str:
        return "a mapping with keys " + ", ".join(self.fields) + (" or null" if self.nullable else "")

    def validate(self, value: Any, file: Any, key: str) -> Any:
        if value is None and self.nullable:
            return None
        if value is None and self.default is not REQUIRED:
            value = {}
        if not isinstance(value, dict):
            _fail(file, key, self.describe(), value)
        out = Config()
        for name in value:
            if name not in self.fields:
                raise WorkloadError(file, _join(key, str(name)),
                                    f"no such key (allowed here: {', '.join(self.fields)})", show_got=False)
        for name, spec in self.fields.items():
            sub = _join(key, name)
            if name in value:
                out[name] = spec.validate(value[name], file, sub)
            elif spec.default is REQUIRED:
                raise WorkloadError(file, sub, f"this required key ({spec.describe()})", show_got=False)
            elif isinstance(spec, Section) and spec.default is not None:
                out[name] = spec.validate({}, file, sub)
            else:
                out[name] = _copy_default(spec.default)
        if self.check:
            self.check(out, file, key)
        return out


@dataclass
class MapOf(Spec):
    """A mapping from free-form keys (restricted to `keys` when given) to one value spec."""

    value: Spec
    keys: tuple | None = None
    default: Any = REQUIRED
    doc: str = ""

    def describe(self) -> str:
        return "a mapping" + (f" with keys among {', '.join(self.keys)}" if self.keys else "")

    def validate(self, value: Any, file: Any, key: str) -> Any:
        if not isinstance(value, dict):
            _fail(file, key, self.describe(), value)
        out = Config()
        for name, item in value.items():
            if self.keys and name not in self.keys:
                raise WorkloadError(file, _join(key, str(name)),
                                    f"no such key (allowed here: {', '.join(self.keys)})", show_got=False)
            out[name] = self.value.validate(item, file, _join(key, str(name)))
        return out


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _copy_default(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return copy.deepcopy(value)
    return value


@dataclass
class Doc:
    """Collects a schema's documentation as `key: expected (default)` lines."""

    lines: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, spec: Section, prefix: str = "") -> list[str]:
        out = []
        for name, sub in spec.fields.items():
            key = _join(prefix, name)
            if isinstance(sub, Section):
                out.extend(cls.of(sub, key))
                continue
            default = "" if sub.default is REQUIRED else f" (default: {sub.default!r})"
            out.append(f"{key}: {sub.describe()}{default}" + (f" -- {sub.doc}" if sub.doc else ""))
        return out
