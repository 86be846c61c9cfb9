"""Aggregator registry: one decorator fills it, ``build_aggregator`` reads it.

The built-in aggregators register when :mod:`wsi_ncmi.mil` imports their modules, which
happens before this module can be imported (it is inside that package).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.mil.base import Aggregator
from wsi_ncmi.registry import Registry

_A = TypeVar("_A", bound=type[Aggregator])


AGGREGATORS: Registry[Aggregator] = Registry("aggregator")


def register_aggregator(name: str) -> Callable[[_A], _A]:
    """Register an :class:`~wsi_ncmi.mil.base.Aggregator` subclass under ``name``.

    Every aggregator takes ``in_dim`` and ``num_classes`` keyword arguments and maps a bag
    ``(N, in_dim)`` (or ``(B, N, in_dim)``) to a :class:`~wsi_ncmi.mil.base.MILOutput`.

    Args:
        name: Registry key, as used in YAML configs.

    Returns:
        A decorator that registers its argument and returns it unchanged.

    Raises:
        ValueError: If ``name`` is already registered.
    """
    return AGGREGATORS.register(name)


def build_aggregator(name: str, **kwargs: Any) -> Aggregator:
    """Instantiate a registered aggregator.

    Args:
        name: Registry key, see :func:`list_aggregators`.
        **kwargs: Constructor arguments (at least ``in_dim`` and ``num_classes``).

    Returns:
        The aggregator module.

    Raises:
        ConfigError: If ``name`` is unknown or the arguments are rejected.
    """
    return AGGREGATORS.build(name, **kwargs)


def check_aggregator(name: str, **kwargs: Any) -> None:
    """Check that ``build_aggregator(name, **kwargs)`` would accept these arguments.

    Binds them to the constructor's signature without building anything (a typo in a
    config stops it before any work, with the closest valid name).

    Raises:
        ConfigError: If ``name`` is unknown or the arguments do not fit.
    """
    AGGREGATORS.check(name, **kwargs)


def aggregator_embedding_dim(name: str, **kwargs: Any) -> int:
    """Slide-embedding width of ``build_aggregator(name, **kwargs)``, without building it.

    Args:
        name: Registry key, see :func:`list_aggregators`.
        **kwargs: Constructor arguments.

    Returns:
        The :attr:`~wsi_ncmi.mil.base.Aggregator.embedding_dim` the model would have.

    Raises:
        ConfigError: If ``name`` is unknown or the arguments are rejected.
    """
    factory = AGGREGATORS.get(name)
    if not (isinstance(factory, type) and issubclass(factory, Aggregator)):
        raise ConfigError(f"aggregator {name!r} is not an Aggregator subclass")
    return factory.embedding_dim_for(**kwargs)


def list_aggregators() -> list[str]:
    """Names of all registered aggregators, sorted.

    Returns:
        The registry keys.
    """
    return AGGREGATORS.names()
