"""A loaded model bundle: ``load_model(path).predict_bag(features) -> SlidePrediction``.

The aggregator and the loss are rebuilt from their registries with the arguments the
manifest records, and their safetensors state is loaded strictly (every tensor present,
none extra). A bag goes through exactly the steps training applied to its test slides:
the per-slide normalisation (``slide_norm``), the standardisation with the training
statistics (``standardize``), the aggregator, and the loss's class scores
(:meth:`~wsi_ncmi.train.module.MILClassifier.class_scores`). So a bundle reproduces the
training run's own test predictions (``tests/test_predict_bundle.py``).

Two decision rules are always computed: the loss's own (``default``: argmax, or nearest
centroid for NCMI-MIL) and the prior-aware rule fitted on validation (``calibrated``,
:mod:`wsi_ncmi.losses.decision`); the manifest names the one reported.

The QC score of a slide is the root-mean-square, over the feature dimensions, of the
z-score of the slide's mean patch feature against the training patches' per-dimension
mean and sd (``ood_score``); it is flagged ``out_of_distribution`` above the threshold
recorded in the bundle (a margin over the largest score of a training slide).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from wsi_ncmi.predict.records import EncoderRecord, TilingRecord
from wsi_ncmi.train.bundle import (
    STATS_FILE,
    WEIGHTS_FILE,
    BundleError,
    load_tensors,
    ood_score,
    read_manifest_json,
    verify_bundle,
)


@dataclass(frozen=True)
class SlidePrediction:
    """What a model says about one slide.

    Attributes:
        classes: Class names, in the model's order.
        probabilities: ``(C,)`` class probabilities.
        predicted: The class of the reported decision rule (:attr:`decision`).
        predicted_default: The loss's own rule.
        predicted_calibrated: The validation-fitted prior-aware rule.
        decision: ``"calibrated"`` or ``"default"``.
        attention: ``(N,)`` attention weights over the bag's patches (sum 1).
        n_patches: ``N``.
        ood_score: RMS z-score of the slide's mean feature against training.
    """

    classes: tuple[str, ...]
    probabilities: tuple[float, ...]
    predicted: str
    predicted_default: str
    predicted_calibrated: str
    decision: str
    attention: NDArray[np.float64]
    n_patches: int
    ood_score: float

    @property
    def confidence(self) -> float:
        """Probability of the predicted class."""
        return float(self.probabilities[self.classes.index(self.predicted)])


class TrainedModel:
    """A verified bundle, ready to predict bags of patch features.

    Use :func:`load_model`; the attributes are read-only views of the manifest.

    Attributes:
        path: The bundle folder.
        manifest: The parsed ``model.json``.
        classes: Class names in order.
    """

    def __init__(
        self,
        path: Path,
        manifest: dict[str, Any],
        weights: dict[str, Tensor],
        stats: dict[str, Tensor],
    ) -> None:
        from wsi_ncmi.losses import build_loss
        from wsi_ncmi.losses.decision import PriorRule
        from wsi_ncmi.mil import build_aggregator
        from wsi_ncmi.train.module import MILClassifier

        self.path = path
        self.manifest = manifest
        self.classes: tuple[str, ...] = tuple(manifest["classes"])
        aggregator = build_aggregator(
            manifest["aggregator"]["name"], **manifest["aggregator"]["kwargs"]
        )
        criterion = build_loss(manifest["loss"]["name"], **manifest["loss"]["kwargs"])
        self.module = MILClassifier(aggregator, criterion, len(self.classes))
        try:
            self.module.load_state_dict(weights, strict=True)
        except RuntimeError as err:
            raise BundleError(
                f"{str(path)!r}: the weights do not fit {manifest['aggregator']['name']} + "
                f"{manifest['loss']['name']} as the manifest builds them: {err}"
            ) from err
        self.module.eval()
        rule = manifest["decision"]["rule"]
        self.rule = PriorRule(
            float(rule["scale"]),
            tuple(float(v) for v in rule["log_prior"]),
            float(rule["val_macro_f1"]),
            float(rule["val_macro_f1_default"]),
        )
        self.decision: str = manifest["decision"]["default"]
        self.slide_norm: str = manifest["features"]["slide_norm"]
        self.standardize = (
            (stats["standardize_mean"], stats["standardize_std"])
            if manifest["features"]["standardize"]
            else None
        )
        self.ood = (stats["ood_mean"].to(torch.float64), stats["ood_std"].to(torch.float64))
        self.ood_threshold = float(manifest["qc"]["ood_threshold"])
        #: The features the model takes.
        self.encoder = EncoderRecord.from_json(manifest["encoder"])
        #: How its training slides were tiled.
        self.tiling = TilingRecord.from_json(manifest["tiling"])

    def prepare(self, features: Tensor) -> Tensor:
        """The bag as the aggregator sees it: ``slide_norm``, then ``standardize``.

        Args:
            features: ``(N, D)`` patch features as stored (float16 or float32).

        Returns:
            ``(N, D)``: the stored dtype, or float32 after a normalisation.
        """
        from wsi_ncmi.train.slide_norm import apply_slide_norm

        bag = apply_slide_norm(features, self.slide_norm)
        if self.standardize is not None:
            mean, std = self.standardize
            bag = (bag.to(torch.float32) - mean) / std
        return bag

    @torch.inference_mode()
    def scores(self, features: Tensor) -> tuple[Tensor, int, Tensor]:
        """``(probabilities (C,) float32, default-rule class, attention (N,))`` of one bag."""
        output = self.module(self.prepare(features).unsqueeze(0))
        outputs = self.module._loss_outputs(output)
        probs = self.module.class_scores(outputs).float()[0]
        default = int(self.module.criterion.predict(outputs)[0])
        return probs, default, output.attention.float()[0]

    def predict_bag(self, features: Tensor | NDArray[Any]) -> SlidePrediction:
        """Predict one slide from its bag of patch features.

        Args:
            features: ``(N, D)`` patch features as the features file stores them (valid
                rows), ``N ≥ 1``, ``D`` the encoder's width.

        Returns:
            The prediction.

        Raises:
            ConfigError: A bag of the wrong width, or an empty one.
        """
        from wsi_ncmi.errors import ConfigError
        from wsi_ncmi.losses.decision import log_scores

        bag = torch.as_tensor(features)
        width = int(self.manifest["encoder"]["out_dim"])
        if bag.ndim != 2 or bag.shape[0] == 0 or bag.shape[1] != width:
            raise ConfigError(
                f"predict_bag takes (N >= 1, {width}) features, got {tuple(bag.shape)}"
            )
        probs, default, attention = self.scores(bag)
        p = probs.double().numpy()
        calibrated = int(self.rule.predict(log_scores(p[None]))[0])
        return self._prediction(
            p, default, calibrated, attention.double().numpy(), ood_score(bag, *self.ood)
        )

    def _prediction(
        self,
        probs: NDArray[np.float64],
        default: int,
        calibrated: int,
        attention: NDArray[np.float64],
        ood: float,
    ) -> SlidePrediction:
        chosen = calibrated if self.decision == "calibrated" else default
        return SlidePrediction(
            classes=self.classes,
            probabilities=tuple(float(v) for v in probs),
            predicted=self.classes[chosen],
            predicted_default=self.classes[default],
            predicted_calibrated=self.classes[calibrated],
            decision=self.decision,
            attention=attention,
            n_patches=int(attention.shape[0]),
            ood_score=ood,
        )


def load_model(path: str | Path) -> TrainedModel:
    """Load a model bundle (checked, never unpickled).

    Args:
        path: A bundle folder (``<run>/<fold>/model/`` of ``wsi-train``, or
            ``wsi-export-model --out_dir``).

    Returns:
        The model.

    Raises:
        BundleError: A checkpoint file, a missing, edited or truncated bundle (exit code
            2 in the commands).
    """
    path = Path(path)
    contents = verify_bundle(path)
    manifest = read_manifest_json(path, contents)
    weights, stats = load_tensors(contents, WEIGHTS_FILE), load_tensors(contents, STATS_FILE)
    try:
        return TrainedModel(path, manifest, weights, stats)
    except (KeyError, TypeError) as err:
        raise BundleError(
            f"model bundle {str(path)!r} lacks {err} in model.json or stats.safetensors; "
            "it was not written by this version of wsi-train (re-export it with "
            "wsi-export-model)"
        ) from err


class Ensemble:
    """Several bundles that agree on classes and encoder: their mean probabilities.

    The ``default`` rule is the argmax of the mean probabilities; the ``calibrated`` rule
    adds the mean of the members' prior offsets to their log. Attention is the mean of
    the members' attention. The reported rule is the first member's.

    Args:
        models: At least one model.

    Raises:
        ConfigError: Models that disagree on classes, encoder (name, identity hash,
            width), µm/px or patch size.
    """

    def __init__(self, models: Sequence[TrainedModel]) -> None:
        from wsi_ncmi.errors import ConfigError

        if not models:
            raise ConfigError("an ensemble needs at least one bundle in --models")
        self.models = list(models)
        first = self.models[0]
        self.classes = first.classes
        self.decision = first.decision
        for other in self.models[1:]:
            problems = []
            if other.classes != first.classes:
                problems.append(f"classes {list(other.classes)} vs {list(first.classes)}")
            for key in ("name", "identity_hash", "out_dim"):
                mine, theirs = getattr(other.encoder, key), getattr(first.encoder, key)
                if mine != theirs:
                    problems.append(f"encoder {key} {mine!r} vs {theirs!r}")
            for key in ("target_mpp", "patch_size_px"):
                mine, theirs = getattr(other.tiling, key), getattr(first.tiling, key)
                if mine != theirs:
                    problems.append(f"{key} {mine!r} vs {theirs!r}")
            if problems:
                raise ConfigError(
                    f"--models {str(other.path)!r} does not match {str(first.path)!r}: "
                    f"{'; '.join(problems)}. An ensemble's models must share classes and encoder"
                )

    @property
    def encoder(self) -> EncoderRecord:
        """The members' encoder record (they agree)."""
        return self.models[0].encoder

    @property
    def tiling(self) -> TilingRecord:
        """The first member's tiling record."""
        return self.models[0].tiling

    def predict_bag(self, features: Tensor | NDArray[Any]) -> SlidePrediction:
        """Predict one slide: a single model's own prediction, or the ensemble mean."""
        if len(self.models) == 1:
            return self.models[0].predict_bag(features)
        from wsi_ncmi.losses.decision import log_scores

        bag = torch.as_tensor(features)
        runs = [m.predict_bag(bag) for m in self.models]
        probs = np.mean([np.asarray(r.probabilities) for r in runs], axis=0)
        attention = np.mean([r.attention for r in runs], axis=0)
        offsets = np.mean([m.rule.offsets() for m in self.models], axis=0)
        default = int(np.argmax(probs))
        calibrated = int(np.argmax(log_scores(probs[None])[0] + offsets))
        return self.models[0]._prediction(
            probs, default, calibrated, attention, float(np.mean([r.ood_score for r in runs]))
        )

    @property
    def ood_threshold(self) -> float:
        """The members' mean threshold."""
        return float(np.mean([m.ood_threshold for m in self.models]))
