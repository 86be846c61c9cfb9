"""Trained models as portable bundles, and prediction on new slides (``wsi-predict``).

:func:`load_model` reads a bundle written by ``wsi-train`` (``<run>/<fold>/model/``) or
``wsi-export-model``, checked and never unpickled; :class:`TrainedModel.predict_bag`
predicts one slide from its patch features. :mod:`wsi_ncmi.predict.run` is the
slides-to-report pipeline behind ``wsi-predict``.
"""

from wsi_ncmi.predict.model import Ensemble, SlidePrediction, TrainedModel, load_model
from wsi_ncmi.train.bundle import BundleError, verify_bundle

__all__ = [
    "BundleError",
    "Ensemble",
    "SlidePrediction",
    "TrainedModel",
    "load_model",
    "verify_bundle",
]
