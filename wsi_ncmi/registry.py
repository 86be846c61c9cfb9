"""One named-factory registry, shared by the loss and aggregator registries.

A registry maps names (as used in YAML configs) to classes or factories. A decorator
fills it; ``build`` instantiates by name and turns unknown names or rejected arguments
into :class:`~wsi_ncmi.errors.ConfigError`. Built-in entries register themselves when
their modules are imported; ``load_builtin`` imports them on first lookup, so importing a
registry alone stays cheap and free of import cycles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from wsi_ncmi.errors import ConfigError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Name → factory map for objects of type ``T``.

    Args:
        kind: What is registered (``"loss"``, ``"aggregator"``), for messages.
        load_builtin: Imports the modules whose decorators fill the registry.
    """

    def __init__(self, kind: str, load_builtin: Callable[[], None]) -> None:
        self.kind = kind
        self._load_builtin = load_builtin
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator registering a class or factory under ``name``.

        Raises:
            ValueError: If ``name`` is already registered.
        """

        def decorator(factory: F) -> F:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load_builtin()
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``.

        Raises:
            ConfigError: If ``name`` is not registered.
        """
        self._load_builtin()
        if name not in self._factories:
            raise ConfigError(f"{self.kind} must be one of {self.names()}, got {name!r}")
        return self._factories[name]

    def build(self, name: str, **kwargs: Any) -> T:
        """Instantiate ``name`` with ``kwargs``.

        Raises:
            ConfigError: Unknown name, or arguments the factory rejects.
        """
        factory = self.get(name)
        try:
            return factory(**kwargs)
        except TypeError as err:
            raise ConfigError(f"invalid arguments for {self.kind} {name!r}: {err}") from err
