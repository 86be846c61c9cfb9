"""Frozen patch encoders: a registry of specs and builders (see ``registry``)."""

from wsi_ncmi.features.encoders.registry import (
    EncoderModule,
    EncoderSpec,
    build_encoder,
    get_spec,
    list_encoders,
    register_encoder,
)

__all__ = [
    "EncoderModule",
    "EncoderSpec",
    "build_encoder",
    "get_spec",
    "list_encoders",
    "register_encoder",
]
