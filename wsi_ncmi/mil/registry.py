"""Aggregator registry: one decorator fills it, ``build_aggregator`` reads it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from wsi_ncmi.registry import Registry

_F = TypeVar("_F", bound=Callable[..., nn.Module])


def _load_builtin() -> None:
    import wsi_ncmi.mil.abmil
    import wsi_ncmi.mil.clam_sb
    import wsi_ncmi.mil.dsmil
    import wsi_ncmi.mil.pooling
    import wsi_ncmi.mil.transmil  # noqa: F401


AGGREGATORS: Registry[nn.Module] = Registry("aggregator", _load_builtin)


def register_aggregator(name: str) -> Callable[[_F], _F]:
    """Register an aggregator class or factory under ``name``.

    Every aggregator takes ``in_dim`` and ``num_classes`` keyword arguments and maps a bag
    ``(N, in_dim)`` (or ``(B, N, in_dim)``) to a :class:`~wsi_ncmi.mil.abmil.MILOutput`.

    Args:
        name: Registry key, as used in YAML configs.

    Returns:
        A decorator that registers its argument and returns it unchanged.

    Raises:
        ValueError: If ``name`` is already registered.
    """
    return AGGREGATORS.register(name)


def build_aggregator(name: str, **kwargs: Any) -> nn.Module:
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


def list_aggregators() -> list[str]:
    """Names of all registered aggregators, sorted.

    Returns:
        The registry keys.
    """
    return AGGREGATORS.names()
