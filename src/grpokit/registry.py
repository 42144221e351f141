"""One small registry type used for rewards, losses, advantages, groupers, tools."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown name; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects. `get` fails with the list of valid names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._docs: dict[str, str] = {}

    def register(self, name: str, doc: str | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            self._docs[name] = (doc or (getattr(obj, "__doc__", None) or "")).strip().split("\n")[0]
            return obj

        return deco

    def add(self, name: str, obj: T, doc: str | None = None) -> T:
        return self.register(name, doc)(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise RegistryError(
                f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(sorted(self._items))}"
                + _did_you_mean(name, self._items)
            ) from None

    def resolve(self, spec: str) -> T:
        """A registered name, or `package.module:attr`, or `path/to/file.py:attr`."""
        if ":" in spec and spec not in self._items:
            return load_object(spec)  # type: ignore[return-value]
        return self.get(spec)

    def names(self) -> list[str]:
        return sorted(self._items)

    def doc(self, name: str) -> str:
        return self._docs.get(name, "")

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _did_you_mean(name: str, choices: Any) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_object(spec: str) -> Any:
    """Import `module.path:attr` or `some/file.py:attr` and return the attribute."""
    module_part, _, attr = spec.rpartition(":")
    if not module_part or not attr:
        raise ValueError(f"expected 'module:function' or 'file.py:function', got {spec!r}")
    if module_part.endswith(".py"):
        path = Path(module_part).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{spec!r}: file {str(path)!r} does not exist")
        mod_name = f"_grpokit_user_{abs(hash(str(path.resolve())))}"
        if mod_name not in sys.modules:
            module_spec = importlib.util.spec_from_file_location(mod_name, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_name] = module
            module_spec.loader.exec_module(module)
        module = sys.modules[mod_name]
    else:
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(f"{spec!r}: cannot import module {module_part!r} ({e})") from e
    try:
        return getattr(module, attr)
    except AttributeError:
        public = [n for n in dir(module) if not n.startswith("_")]
        raise AttributeError(
            f"{spec!r}: module {module_part!r} has no attribute {attr!r}" + _did_you_mean(attr, public)
        ) from None
