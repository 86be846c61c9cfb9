"""What an encoder is: its frozen spec, the registration decorator, and weight loading.

The encoder modules (``builtin``, ``torchvision_models``, ``timm_models``, ``hub_models``)
import this module to register their builders; :mod:`wsi_ncmi.features.encoders.registry`
imports those modules and answers lookups. Nothing here imports an encoder module, so the
dependencies run one way: spec <- encoder modules <- registry.

An encoder is registered once, by decorating the function that builds its backbone::

    @register_encoder(EncoderSpec(name="my-encoder", out_dim=512, ...))
    def _build(spec: EncoderSpec, weights: Path | None, random_init: bool,
               arch_overrides: Mapping[str, Any]) -> nn.Module: ...

The backbone maps a normalised float batch ``(B, 3, S, S)`` to ``(B, D)``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.jsontypes import JSONObject
from wsi_ncmi.registry import Registry
from wsi_ncmi.tiling.schema import params_hash

Precision = Literal["fp32", "bf16", "fp16"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderSpec:
    """Everything that defines what an encoder's features mean.

    Attributes:
        name: Registry name (``--encoder``).
        family: ``builtin``, ``torchvision``, ``timm`` or ``transformers``.
        out_dim: Feature dimension ``D``.
        input_size_px: Side of the square input the backbone expects; patches of
            another size are resized (bilinear, antialiased) on the device. ``None``:
            any size (no resize).
        mpp: µm/px the encoder was trained at; ``None`` when it has none (ImageNet
            models used as generic backbones); checked against the tiling's target.
        mean: Per-channel RGB mean on the 0..1 scale.
        std: Per-channel RGB std on the 0..1 scale.
        interpolation: Resize filter used to reach ``input_size_px``.
        crop_pct: Below 1, resize to ``input_size_px / crop_pct`` and centre-crop
            ``input_size_px`` (timm's convention, e.g. Resize(256) + CenterCrop(224)).
        precision: Preferred compute precision on a GPU.
        weights_source: Where the weights come from (hub repo, torchvision enum,
            ``local`` for ``--weights PATH``, ``seed:<n>``).
        weights_revision: Hub revision / weights version, ``""`` if not applicable;
            ``sha256:<hex>`` of the file's content for ``--weights PATH``.
        weights_file: File name inside the hub repo, if any.
        licence: Licence note of the weights (read it before using features).
        gated: Whether the hub repo requires accepting terms and a token.
        random_init: True when the weights are random (tests, baselines): recorded in
            every output so random features are never mistaken for pretrained ones.
        channels_last: Run the backbone in ``channels_last`` memory format (CNNs).
        description: One line for ``--list_encoders``.
        weights_path: The local checkpoint's resolved path (``--weights``), for the
            record only: it is not part of :attr:`identity_hash`, so moving a
            checkpoint does not invalidate features; its content hash is.
    """

    name: str
    family: str
    out_dim: int
    input_size_px: int | None
    mpp: float | None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"
    crop_pct: float = 1.0
    precision: Precision = "fp32"
    weights_source: str = ""
    weights_revision: str = ""
    weights_file: str = ""
    licence: str = ""
    gated: bool = False
    random_init: bool = False
    channels_last: bool = False
    description: str = ""
    weights_path: str = ""

    def to_dict(self) -> JSONObject:
        """JSON-ready dict (for HDF5 attributes and reports)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Compact JSON of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @functools.cached_property
    def identity_hash(self) -> str:
        """Digest of the fields that change the features.

        Leaves out ``description``, ``licence`` and ``weights_path`` (a local
        checkpoint is identified by the content hash in ``weights_revision``). Computed
        once per spec (the spec is frozen; extraction asks for it several times a slide).
        """
        skip = ("description", "licence", "weights_path")
        keep = {k: v for k, v in self.to_dict().items() if k not in skip}
        return params_hash(keep)


BuildFn = Callable[[EncoderSpec, "Path | None", bool, Mapping[str, Any]], nn.Module]


@dataclass(frozen=True)
class EncoderEntry:
    """A registered encoder: its spec and the builder of its backbone.

    Attributes:
        spec: The registered spec.
        build_backbone: ``(spec, weights, random_init, arch_overrides) -> backbone``.
        pretrained_spec: Amends the spec once pretrained weights were loaded from the
            spec's own source (hub encoders record the commit they resolved to).
    """

    spec: EncoderSpec
    build_backbone: BuildFn
    pretrained_spec: Callable[[EncoderSpec], EncoderSpec] | None = None

    def __call__(
        self,
        *,
        spec: EncoderSpec,
        weights: Path | None,
        random_init: bool,
        arch_overrides: Mapping[str, Any],
    ) -> nn.Module:
        """Build the backbone for ``spec`` (the registered one, possibly amended)."""
        return self.build_backbone(spec, weights, random_init, arch_overrides)


#: The table the decorators fill. Look encoders up through the registry module, which
#: imports the encoder modules (whose decorators fill the table) before any lookup.
ENCODERS: Registry[nn.Module] = Registry("encoder")


def register_encoder(
    spec: EncoderSpec, *, pretrained_spec: Callable[[EncoderSpec], EncoderSpec] | None = None
) -> Callable[[BuildFn], BuildFn]:
    """Register ``spec`` with the decorated backbone builder.

    Args:
        spec: The encoder's spec.
        pretrained_spec: See :attr:`EncoderEntry.pretrained_spec`.

    Raises:
        ConfigError: The name is already registered.
    """

    def decorate(build: BuildFn) -> BuildFn:
        try:
            ENCODERS.register(spec.name)(EncoderEntry(spec, build, pretrained_spec))
        except ValueError as err:
            raise ConfigError(f"encoder {spec.name!r} is registered twice") from err
        return build

    return decorate


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file (``.safetensors`` or a torch pickle) as a state dict.

    Torch pickles are read with ``weights_only=True``. A nested ``state_dict`` /
    ``model`` key is unwrapped.

    Raises:
        WeightsUnavailableError: Missing or unreadable file.
    """
    from wsi_ncmi.errors import WeightsUnavailableError

    if not path.is_file():
        raise WeightsUnavailableError(f"--weights {str(path)!r} does not exist or is not a file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch/safetensors raise assorted errors on bad files
        raise WeightsUnavailableError(
            f"cannot read checkpoint {str(path)!r}: {type(err).__name__}: {err}"
        ) from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{str(path)!r} does not hold a state dict")
    return state


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Load ``state`` strictly (after stripping common prefixes) into ``model``.

    Raises:
        WeightsUnavailableError: Keys or shapes do not match the architecture.
    """
    from wsi_ncmi.errors import WeightsUnavailableError

    own = set(model.state_dict())
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in ("module.", "model.", "backbone.", "trunk."):
            if key.startswith(prefix) and key not in own and key[len(prefix) :] in own:
                key = key[len(prefix) :]
        cleaned[key] = value
    cleaned = {k: v for k, v in cleaned.items() if not k.startswith(("head.", "fc."))} | {
        k: v for k, v in cleaned.items() if k in own
    }
    try:
        model.load_state_dict(cleaned, strict=True)
    except RuntimeError as err:
        raise WeightsUnavailableError(
            f"weights from {source} do not fit the architecture: {err}"
        ) from err
    return model


__all__ = [
    "ENCODERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BuildFn",
    "EncoderEntry",
    "EncoderSpec",
    "Precision",
    "load_into",
    "load_state_dict_file",
    "register_encoder",
]
