"""Name -> object registries: the only way a workload can name code.

A workload may name an entry of a registry, or (only with `trust_custom_code: true`)
an explicit `package.module:function` that is imported on request.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar

from sw.errors import WorkloadError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of plugins of one kind (models, datasets, metrics, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

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
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str, *, file: Any = None, key: str = "", trust_custom_code: bool = False) -> T:
        """Look a name up; on failure raise a WorkloadError naming the file and key."""
        if name in self._entries:
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
