"""Loss registry: one decorator fills it, ``build_loss`` reads it.

The built-in losses register when :mod:`wsi_ncmi.losses` imports their modules, which
happens before this module can be imported (it is inside that package).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from wsi_ncmi.losses.base import ClassificationLoss
from wsi_ncmi.registry import Registry

_F = TypeVar("_F", bound=Callable[..., ClassificationLoss])


LOSSES: Registry[ClassificationLoss] = Registry("loss")


def register_loss(name: str) -> Callable[[_F], _F]:
    """Register a loss class or factory under ``name``.

    Args:
        name: Registry key, as used in YAML configs (``loss: {name: ncmi, ...}``).

    Returns:
        A decorator that registers its argument and returns it unchanged.

    Raises:
        ValueError: If ``name`` is already registered.
    """
    return LOSSES.register(name)


def get_loss_factory(name: str) -> Callable[..., ClassificationLoss]:
    """The registered class or factory for ``name`` (e.g. to inspect its parameters).

    Raises:
        ConfigError: If ``name`` is not registered.
    """
    return LOSSES.get(name)


def build_loss(name: str, **kwargs: Any) -> ClassificationLoss:
    """Instantiate a registered loss.

    Args:
        name: Registry key, see :func:`list_losses`.
        **kwargs: Constructor arguments of that loss.

    Returns:
        The loss module.

    Raises:
        ConfigError: If ``name`` is not registered or the arguments are rejected.
    """
    return LOSSES.build(name, **kwargs)


def list_losses() -> list[str]:
    """Names of all registered losses, sorted.

    Returns:
        The registry keys.
    """
    return LOSSES.names()
