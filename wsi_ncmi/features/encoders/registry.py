"""The encoder registry: one decorator, one frozen spec per encoder.

Encoders live in a :class:`wsi_ncmi.registry.Registry` (the type the losses and the
aggregators use too). An encoder is registered once, by decorating the function that
builds its backbone::

    @register_encoder(EncoderSpec(name="my-encoder", out_dim=512, ...))
    def _build(spec: EncoderSpec, weights: Path | None, random_init: bool,
               arch_overrides: Mapping[str, Any]) -> nn.Module: ...

The backbone maps a normalised float batch ``(B, 3, S, S)`` to ``(B, D)``. Everything
around it (uint8 to float, resizing to the input size, mean/std normalisation on the
device) lives once in :class:`EncoderModule`. The spec travels with every feature file.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from wsi_ncmi.errors import ConfigError
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (for HDF5 attributes and reports)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Compact JSON of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def identity_hash(self) -> str:
        """Digest of the fields that change the features.

        Leaves out ``description``, ``licence`` and ``weights_path`` (a local
        checkpoint is identified by the content hash in ``weights_revision``).
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


def _load_builtin_modules() -> None:
    # Registration happens when these modules are imported; importing them is cheap
    # (torchvision/timm are imported inside the builders only).
    from wsi_ncmi.features.encoders import builtin, hub_models, torchvision_models  # noqa: F401


ENCODERS: Registry[nn.Module] = Registry("encoder", _load_builtin_modules)


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


def _entry(name: str) -> EncoderEntry:
    """The registry entry of a registered name."""
    entry = ENCODERS.get(name)
    if not isinstance(entry, EncoderEntry):
        raise TypeError(f"encoder {name!r} is registered without a spec: {entry!r}")
    return entry


def list_encoders() -> list[EncoderSpec]:
    """Specs of every registered encoder, sorted by name."""
    return [_entry(name).spec for name in ENCODERS.names()]


def get_spec(name: str) -> EncoderSpec:
    """The registered spec of ``name`` (``timm:<model>`` names are resolved lazily).

    Raises:
        ConfigError: Unknown name.
    """
    if name in ENCODERS:
        return _entry(name).spec
    if name.startswith("timm:"):
        from wsi_ncmi.features.encoders.timm_models import timm_spec

        return timm_spec(name)
    raise ConfigError(
        f"--encoder must be a registered name or 'timm:<model>', got {name!r}; "
        f"registered: {ENCODERS.names()} (see wsi-extract --list_encoders)"
    )


class EncoderModule(nn.Module):
    """A backbone plus the preprocessing its spec prescribes, applied on the device.

    Args:
        spec: The encoder spec (recorded in outputs).
        backbone: Maps normalised ``(B, 3, S, S)`` float to ``(B, D)``.
    """

    def __init__(self, spec: EncoderSpec, backbone: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        # (x / 255 - mean) / std == x * scale - shift: one fused pass over the batch.
        mean, std = torch.tensor(spec.mean), torch.tensor(spec.std)
        self.scale: torch.Tensor
        self.shift: torch.Tensor
        self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", (mean / std).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` → normalised float ``(B, 3, S, S)``, S = input size.

        Normalisation comes first (it is per-channel affine, so it commutes with the
        resize, whose weights sum to one). A permuted NHWC batch is already laid out
        ``channels_last``; CNNs keep that layout, other models get a contiguous copy.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 (B, H, W, 3) images, got {tuple(images.shape)}")
        x = images.permute(0, 3, 1, 2).float().mul_(self.scale).sub_(self.shift)
        size = self.spec.input_size_px
        if size is not None:
            resized = round(size / self.spec.crop_pct)
            if x.shape[-2:] != (resized, resized):
                x = nn.functional.interpolate(
                    x,
                    size=(resized, resized),
                    mode=self.spec.interpolation,
                    align_corners=False,
                    antialias=True,
                )
            if resized != size:
                top = (resized - size) // 2
                x = x[..., top : top + size, top : top + size]
        memory_format = torch.channels_last if self.spec.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features ``(B, D)`` of uint8 ``(B, H, W, 3)`` patches."""
        out = self.backbone(self.preprocess(images))
        return out.flatten(1)


def build_encoder(
    name: str,
    *,
    weights: str | Path | None = None,
    random_init: bool = False,
    arch_overrides: Mapping[str, Any] | None = None,
    weights_hash_cache: str | Path | None = None,
) -> EncoderModule:
    """Build a frozen encoder in eval mode.

    Args:
        name: Registered name or ``timm:<model>``.
        weights: Local checkpoint (``.safetensors``, ``.bin``, ``.pth``) instead of
            the spec's download source.
        random_init: Random weights, no download (tests, demos); recorded in the spec.
        arch_overrides: Architecture keyword overrides (e.g. ``{"depth": 1}`` to make
            a tiny test variant of a ViT; only valid with ``random_init``).
        weights_hash_cache: JSON memo of checkpoint SHA-256 digests (see
            :mod:`wsi_ncmi.features.weights_hash`); ``None`` hashes ``weights`` anew.

    Raises:
        ConfigError: Unknown encoder, or ``arch_overrides`` with pretrained weights.
        WeightsUnavailableError: Pretrained weights cannot be found or downloaded.
    """
    spec = get_spec(name)
    overrides = dict(arch_overrides or {})
    if overrides and not random_init:
        raise ConfigError("arch_overrides change the architecture; use them with random_init")
    weights_path = Path(weights) if weights is not None else None
    if weights_path is not None and random_init:
        raise ConfigError("pass either weights or random_init, not both")
    if weights_path is not None:
        spec = dataclasses.replace(
            spec,
            weights_source="local",
            weights_revision=f"sha256:{_checkpoint_sha256(weights_path, weights_hash_cache)}",
            weights_path=str(weights_path.resolve()),
        )
    if random_init and spec.family != "builtin":
        spec = dataclasses.replace(spec, random_init=True, weights_source="random")
    if name.startswith("timm:"):
        from wsi_ncmi.features.encoders.timm_models import build_timm_generic

        backbone = build_timm_generic(spec, weights_path, random_init, overrides)
    else:
        backbone = ENCODERS.build(
            name, spec=spec, weights=weights_path, random_init=random_init, arch_overrides=overrides
        )
        amend = _entry(name).pretrained_spec
        if amend is not None and weights_path is None and not random_init:
            spec = amend(spec)
    module = EncoderModule(spec, backbone)
    if spec.channels_last:
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    module.eval().requires_grad_(False)
    return module


def _checkpoint_sha256(path: Path, cache: str | Path | None) -> str:
    """Content hash of a ``--weights`` file (memoised).

    Raises:
        WeightsUnavailableError: Missing or unreadable file.
    """
    from wsi_ncmi.errors import WeightsUnavailableError
    from wsi_ncmi.features.weights_hash import weights_sha256

    if not path.is_file():
        raise WeightsUnavailableError(f"--weights {str(path)!r} does not exist or is not a file")
    try:
        return weights_sha256(path, cache)
    except OSError as err:
        raise WeightsUnavailableError(f"cannot read checkpoint {str(path)!r}: {err}") from err


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
