"""Name -> object registries: the only way a workload can name code.

A workload may name an entry of a registry, or (only with `trust_custom_code: true`)
an explicit `package.module:function` that is imported on request.

A registry may also read a group of package entry points (`[project.entry-points."GROUP"]` in a
package's metadata): a plugin that lives in a package above `sw` (e.g. `energy`) or in a user's
own installed package is then known by name without `sw` importing it; it is imported the first
time it is looked up.
"""

from __future__ import annotations

import importlib
from functools import cached_property
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, Generic, Iterator, TypeVar

from sw.core.errors import WorkloadError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of plugins of one kind (models, datasets, metrics, ...)."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}

    @cached_property
    def _entry_points(self) -> dict[str, EntryPoint]:
        if self.entry_point_group is None:
            return {}
        return {ep.name: ep for ep in entry_points(group=self.entry_point_group)}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: `@MODELS.register("digits_cnn")`."""

        def add(obj: T) -> T:
            key = name or getattr(obj, "__name__")
            if key in self._entries:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[key] = obj
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._entry_points

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def names(self) -> list[str]:
        return sorted({*self._entries, *self._entry_points})

    def get(self, name: str, *, file: Any = None, key: str = "", trust_custom_code: bool = False) -> T:
        """Look a name up; on failure raise a WorkloadError naming the file and key."""
        if name in self._entries:
            return self._entries[name]
        if name in self._entry_points:
            self._entries[name] = self._entry_points[name].load()
            return self._entries[name]
        if isinstance(name, str) and ":" in name:
            if not trust_custom_code:
                raise WorkloadError(
                    file, key,
                    f"a registered {self.kind} ({', '.join(self.names())}); "
                    f"'module:function' names need 'trust_custom_code: true'",
                    name)
            return import_object(name, file=file, key=key)
        raise WorkloadError(file, key, f"one of the registered {self.kind}s: {', '.join(self.names())}", name)


def import_object(spec: str, *, file: Any = None, key: str = "") -> Any:
    """Import `package.module:attribute` (used only for opted-in custom code)."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise WorkloadError(file, key, "an importable 'module:function'", f"{spec} ({exc})") from None
