"""Loss registry: one decorator fills it, ``build_loss`` reads it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.losses.base import ClassificationLoss

_LOSSES: dict[str, Callable[..., ClassificationLoss]] = {}

_F = TypeVar("_F", bound=Callable[..., ClassificationLoss])


def register_loss(name: str) -> Callable[[_F], _F]:
    """Register a loss class or factory under ``name``.

    Args:
        name: Registry key, as used in YAML configs (``loss: {name: ncmi, ...}``).

    Returns:
        A decorator that registers its argument and returns it unchanged.

    Raises:
        ValueError: If ``name`` is already registered.
    """

    def decorator(factory: _F) -> _F:
        if name in _LOSSES:
            raise ValueError(f"loss {name!r} is already registered")
        _LOSSES[name] = factory
        return factory

    return decorator


def _load_builtin() -> None:
    # Importing the implementations registers them (kept out of module import so that
    # importing the registry alone stays cheap and free of cycles).
    import wsi_ncmi.losses.baselines
    import wsi_ncmi.losses.ncmi  # noqa: F401


def get_loss_factory(name: str) -> Callable[..., ClassificationLoss]:
    """The registered class or factory for ``name`` (e.g. to inspect its parameters).

    Raises:
        ConfigError: If ``name`` is not registered.
    """
    _load_builtin()
    if name not in _LOSSES:
        raise ConfigError(f"loss must be one of {list_losses()}, got {name!r}")
    return _LOSSES[name]


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
    factory = get_loss_factory(name)
    try:
        return factory(**kwargs)
    except TypeError as err:
        raise ConfigError(f"invalid arguments for loss {name!r}: {err}") from err


def list_losses() -> list[str]:
    """Names of all registered losses, sorted.

    Returns:
        The registry keys.
    """
    _load_builtin()
    return sorted(_LOSSES)
