"""Named parts of one kind (classifiers, merge policies, ...): adding a part is one decorated function.

As torchvision's `register_model`/`get_model`: a module defines the part and registers it under the name
params use; the code that needs a part looks it up. Each registry's names equal the `Literal` of its param
in config.py (a test checks), so params validation names the choices before any stage runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from fersynth.errors import ParamsError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, param: str) -> None:
        self.kind = kind  # what a part is, for messages: "classifier"
        self.param = param  # the params key that names one: "train.arch"
        self._parts: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(part: T) -> T:
            if name in self._parts:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._parts[name] = part
            return part

        return add

    def __getitem__(self, name: str) -> T:
        try:
            return self._parts[name]
        except KeyError:
            known = ", ".join(self.names())
            raise ParamsError(f"{self.param}: unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._parts)
