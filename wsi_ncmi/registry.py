"""One named-factory registry, shared by the loss and aggregator registries.

A registry maps names (as used in YAML configs) to classes or factories. A decorator
fills it; ``build`` instantiates by name and turns unknown names or rejected arguments
into :class:`~wsi_ncmi.errors.ConfigError`. Built-in entries register themselves when
their modules are imported, which the ``wsi_ncmi.losses`` and ``wsi_ncmi.mil`` packages
and ``wsi_ncmi.features.encoders.registry`` do. The module holding a registry imports none
of its entries, so no import runs in a circle.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from wsi_ncmi.errors import ConfigError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def accepted_keywords(factory: Callable[..., Any]) -> set[str] | None:
    """Keyword names a factory accepts, following ``**kwargs`` up a class's bases.

    A subclass whose ``__init__`` passes ``**kwargs`` to its parent accepts the parent's
    names too (``ncmi_mil`` takes every :class:`~wsi_ncmi.losses.NCMILoss` argument).

    Returns:
        The names, or ``None`` when they cannot be known (a plain function with
        ``**kwargs``, or no signature).
    """
    classes = list(factory.__mro__) if isinstance(factory, type) else [factory]
    names: set[str] = set()
    for owner in classes:
        init = owner.__dict__.get("__init__") if isinstance(factory, type) else owner
        if init is None:
            continue
        try:
            parameters = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return None
        names |= {
            p.name
            for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
        }
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names
    return None


class Registry(Generic[T]):
    """Name → factory map for objects of type ``T``.

    Args:
        kind: What is registered (``"loss"``, ``"aggregator"``), for messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
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

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered (built-in entries included)."""
        return name in self._factories

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``.

        Raises:
            ConfigError: If ``name`` is not registered.
        """
        if name not in self._factories:
            raise ConfigError(f"{self.kind} must be one of {self.names()}, got {name!r}")
        return self._factories[name]

    def build(self, name: str, **kwargs: Any) -> T:
        """Instantiate ``name`` with ``kwargs``, once :meth:`check` accepts them.

        A ``TypeError`` raised inside the constructor is a bug and propagates unchanged.

        Raises:
            ConfigError: Unknown name, or arguments that do not fit the signature (the
                factory's own range checks raise ConfigError too).
        """
        self.check(name, **kwargs)
        return self.get(name)(**kwargs)

    def check(self, name: str, **kwargs: Any) -> None:
        """Bind ``kwargs`` to the signature of ``name``, building nothing.

        An unknown or missing argument is the user's error. A factory may list older
        argument names in a ``RENAMED`` class attribute (``{"damping":
        "schedule.damping"}``); such a name is refused with where it went.

        Raises:
            ConfigError: Unknown name, or arguments that do not fit the signature.
        """
        factory = self.get(name)
        accepted = accepted_keywords(factory)
        unknown = sorted(set(kwargs) - accepted) if accepted is not None else []
        renamed: dict[str, str] = getattr(factory, "RENAMED", {})
        moved = [key for key in unknown if key in renamed]
        if moved:  # an older spelling: say where it went, in one line
            raise ConfigError(
                f"invalid arguments for {self.kind} {name!r}: "
                + "; ".join(f"{key!r} was renamed to {renamed[key]!r}" for key in moved)
            )
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(accepted or ()), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(
                f"invalid arguments for {self.kind} {name!r}: unknown "
                f"{', '.join(hints)}; it takes {sorted(accepted or ())}"
            )
        try:
            inspect.signature(factory).bind(**kwargs)
        except TypeError as err:
            raise ConfigError(f"invalid arguments for {self.kind} {name!r}: {err}") from err
        except ValueError:  # no signature to inspect (a builtin): let the call decide
            pass
