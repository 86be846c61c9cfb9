"""The option groups of the centroid-based losses: schedule, NCMI form, anchors.

Each group is one frozen dataclass that checks its own values (:class:`ConfigError`), so
the losses take a handful of parameters and share one copy of each block:

* :class:`CentroidSchedule`: how and when the Q-step moves the centroids, and when a
  collapse is reported (``ncmi``, ``ncmi_mil``, ``cmic``);
* :class:`NCMIForm`: which NCMI the loss computes (separation direction, normaliser,
  reduction, pairwise-KL kernel);
* :class:`AnchorSpec`: the fixed reference distributions the centroids start from.

In a config a group is a mapping of the fields to change (``schedule: {damping: 0.5}``);
the loss applies it to its own defaults with :func:`override`, so ``ncmi_mil``'s
alternating schedule stays alternating when only the damping is given.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.losses.divergence import Direction, KLMethod, Normalization, Reduction

CentroidMode = Literal["fixed", "alternating", "ema"]
AnchorKind = Literal["auto", "smoothed_onehot", "reference"]

_G = TypeVar("_G")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {list(allowed)}, got {value!r}")


@dataclass(frozen=True)
class CentroidSchedule:
    """How and when the Q-step moves the centroids (see :mod:`wsi_ncmi.losses.centroids`).

    Attributes:
        mode: ``"fixed"`` (the anchors forever), ``"alternating"`` (a closed-form Q-step
            after each epoch) or ``"ema"`` (class means folded in after every step).
        warmup_epochs: Epochs trained with the anchors before the first alternating Q-step.
        warmup_steps: Optimiser steps that must also have been taken before it.
        damping: ``α`` in ``(0, 1]`` of the alternating Q-step.
        damping_steps: A Q-step after fewer optimiser steps than this moves the centroids
            proportionally less; ``0`` disables it.
        ema_momentum: ``m`` in ``(0, 1]`` of the EMA update.
        collapse_distance_ratio: Report a collapse when the two closest centroids are
            nearer than this fraction of the anchors' smallest distance.
        collapse_class_ratio: Report a collapse when the predictions cover fewer effective
            classes than this fraction of the labels'.
    """

    mode: CentroidMode = "fixed"
    warmup_epochs: int = 2
    warmup_steps: int = 50
    damping: float = 0.1
    damping_steps: int = 50
    ema_momentum: float = 0.01
    collapse_distance_ratio: float = 0.1
    collapse_class_ratio: float = 0.5

    def __post_init__(self) -> None:
        _choice("schedule.mode", self.mode, ("fixed", "alternating", "ema"))
        if self.warmup_epochs < 0:
            raise ConfigError(f"schedule.warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if self.warmup_steps < 0 or self.damping_steps < 0:
            raise ConfigError(
                "schedule.warmup_steps and schedule.damping_steps must be >= 0, got "
                f"{self.warmup_steps!r} and {self.damping_steps!r}"
            )
        for name in ("damping", "ema_momentum"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"schedule.{name} must be in (0, 1], got {value!r}")
        for name in ("collapse_distance_ratio", "collapse_class_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"schedule.{name} must be in [0, 1], got {value!r}")


@dataclass(frozen=True)
class NCMIForm:
    """Which NCMI a loss computes (see :func:`wsi_ncmi.losses.functional.ncmi_loss`).

    Attributes:
        direction: ``"centroid_to_output"`` (``KL(Q_c ‖ P)``, the authors') or
            ``"output_to_centroid"`` (``KL(P ‖ Q_c)``, bounded).
        normalization: ``"num_classes"`` (the authors') or ``"num_classes_minus_one"``.
        reduction: ``"mean_of_ratios"`` (the authors') or ``"ratio_of_means"`` (the
            definition).
        kl_method: Pairwise-KL kernel, see :func:`wsi_ncmi.losses.functional.pairwise_kl`.
    """

    direction: Direction = "centroid_to_output"
    normalization: Normalization = "num_classes"
    reduction: Reduction = "mean_of_ratios"
    kl_method: KLMethod = "auto"

    def __post_init__(self) -> None:
        _choice("form.direction", self.direction, ("centroid_to_output", "output_to_centroid"))
        _choice("form.normalization", self.normalization, ("num_classes", "num_classes_minus_one"))
        _choice("form.reduction", self.reduction, ("mean_of_ratios", "ratio_of_means"))
        _choice("form.kl_method", self.kl_method, ("auto", "elementwise", "matmul", "matmul64"))


@dataclass(frozen=True)
class AnchorSpec:
    """The anchors: fixed reference distributions, one per class.

    Attributes:
        kind: ``"smoothed_onehot"`` (``(1 − ε) e_c + ε/C``, class heads only),
            ``"reference"`` (``sigmax(scale · e_c)``), or ``"auto"``: reference for the
            feature head, smoothed one-hot otherwise.
        smoothing: ``ε`` in ``(0, 1]`` of the smoothed one-hot anchors.
        scale: Score of the class coordinate of the reference anchors.
    """

    kind: AnchorKind = "auto"
    smoothing: float = 0.1
    scale: float = 10.0

    def __post_init__(self) -> None:
        _choice("anchors.kind", self.kind, ("auto", "smoothed_onehot", "reference"))
        if not 0.0 < self.smoothing <= 1.0:
            raise ConfigError(f"anchors.smoothing must be in (0, 1], got {self.smoothing!r}")
        if not self.scale > 0:
            raise ConfigError(f"anchors.scale must be > 0, got {self.scale!r}")


#: The flat arguments the centroid losses took before the option groups, and where each
#: went (a loss's ``RENAMED``; :meth:`wsi_ncmi.registry.Registry.build` names them).
RENAMED_TO_GROUPS: dict[str, str] = {
    "centroids": "schedule.mode",
    **{
        name: f"schedule.{name}"
        for name in (
            "warmup_epochs",
            "warmup_steps",
            "damping",
            "damping_steps",
            "ema_momentum",
            "collapse_distance_ratio",
            "collapse_class_ratio",
        )
    },
    **{name: f"form.{name}" for name in ("direction", "normalization", "reduction", "kl_method")},
    "anchor_smoothing": "anchors.smoothing",
    "anchor_scale": "anchors.scale",
}


def override(default: _G, changes: _G | Mapping[str, Any] | None, name: str) -> _G:
    """``default`` with ``changes`` applied: a whole group, a mapping of fields, or nothing.

    Args:
        default: The loss's own defaults for the group (a frozen dataclass instance).
        changes: A group of the same type (used as is), a ``{field: value}`` mapping from
            a config (applied to ``default``), or ``None`` (``default``).
        name: The parameter's name, for messages (``"schedule"``).

    Returns:
        The group.

    Raises:
        ConfigError: An unknown field (naming the closest valid one), a value the group
            refuses, or a value of the wrong type.
    """
    if changes is None:
        return default
    if isinstance(changes, type(default)):
        return changes
    if not isinstance(changes, Mapping):
        raise ConfigError(
            f"{name} must be a mapping of {type(default).__name__} fields, got {changes!r}"
        )
    fields = [f.name for f in dataclasses.fields(default)]  # type: ignore[arg-type]
    for key in changes:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{name} has no field {key!r}{hint}; it takes {fields}")
    return dataclasses.replace(default, **changes)  # type: ignore[type-var]


__all__ = [
    "RENAMED_TO_GROUPS",
    "AnchorKind",
    "AnchorSpec",
    "CentroidMode",
    "CentroidSchedule",
    "NCMIForm",
    "override",
]
