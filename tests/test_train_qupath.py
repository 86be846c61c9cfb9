"""QuPath GeoJSON of the test slides' patches: layout, values, and the wsi-train outputs."""

import json

import numpy as np
import pytest

from wsi_ncmi.manifest import LABELS
from wsi_ncmi.train.qupath import slide_feature_collection


def test_one_tile_per_patch_in_qupaths_object_layout():
    coords = np.array([[0, 0], [128, 0], [0, 128]], dtype=np.int64)
    attention = np.array([0.2, 0.5, 0.3])
    # as QuPath reads it: the collection is JSON as it is
    collection = json.loads(
        json.dumps(
            slide_feature_collection(
                "s1",
                coords,
                attention,
                131.5,
                predicted="macro",
                probabilities=[0.1, 0.1, 0.2, 0.6],
                class_names=LABELS,
            )
        )
    )
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert len(features) == 3
    second = features[1]
    assert second["type"] == "Feature"
    assert second["id"] == "s1/1"
    ring = second["geometry"]["coordinates"][0]
    assert second["geometry"]["type"] == "Polygon"
    assert ring[0] == ring[-1] == [128.0, 0.0]  # closed ring, level-0 pixels
    assert ring[2] == [259.5, 131.5]
    props = second["properties"]
    assert props["objectType"] == "tile"
    assert props["classification"]["name"] == "macro"
    assert len(props["classification"]["color"]) == 3
    m = props["measurements"]
    assert m["attention"] == pytest.approx(0.5)
    assert m["attention_relative"] == pytest.approx(1.5)  # 3 patches: uniform is 1/3
    assert m["attention_rank"] == 1
    assert [m[f"prob_{c}"] for c in LABELS] == pytest.approx([0.1, 0.1, 0.2, 0.6])
    assert sorted(f["properties"]["measurements"]["attention_rank"] for f in features) == [1, 2, 3]
    with pytest.raises(ValueError, match="2 attention weights"):
        slide_feature_collection(
            "s1", coords, attention[:2], 1.0, predicted="macro",
            probabilities=[0.25] * 4, class_names=LABELS,
        )  # fmt: skip
