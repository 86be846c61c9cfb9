"""Slide access: one reader contract over OpenSlide, tiffslide, tile decode and cuCIM; µm/px."""

from wsi_ncmi.slide.backends import BACKENDS, OpenSlideSlide, TiffSlideSlide
from wsi_ncmi.slide.base import Slide, rgba_to_rgb_over_white
from wsi_ncmi.slide.factory import (
    BACKEND_CHOICES,
    SlideRef,
    choose_reader,
    close_cached_slides,
    open_slide,
)
from wsi_ncmi.slide.identity import SlideIdentity, fingerprint_file
from wsi_ncmi.slide.mpp import (
    PLAUSIBLE_MPP_RANGE,
    MppInfo,
    is_plausible_mpp,
    load_mpp_csv,
    lookup_mpp_override,
    resolve_mpp,
)

__all__ = [
    "BACKENDS",
    "BACKEND_CHOICES",
    "PLAUSIBLE_MPP_RANGE",
    "MppInfo",
    "OpenSlideSlide",
    "Slide",
    "SlideIdentity",
    "SlideRef",
    "TiffSlideSlide",
    "choose_reader",
    "close_cached_slides",
    "fingerprint_file",
    "is_plausible_mpp",
    "load_mpp_csv",
    "lookup_mpp_override",
    "open_slide",
    "resolve_mpp",
    "rgba_to_rgb_over_white",
]
