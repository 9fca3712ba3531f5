"""MTCNN alignment on the 155 in-the-wild dev photos (../shared/data/facial_expressions_dev.zip)."""

from __future__ import annotations

import numpy as np
import pytest

from fersynth.config import CANONICAL_CLASSES, FaceAlignConfig
from fersynth.datasets.sources import load_source
from fersynth.faces import align_dataset, detect_faces, eye_angle
from fersynth.preview import save_preview

from .conftest import shared_file

# Measured 149/154 = 0.968 (the 5 misses are blurred, tight or profile crops); the team saw 0.988 on 500 photos.
DETECTION_RATE_FLOOR = 0.93


@pytest.mark.slow
@pytest.mark.shared
def test_mtcnn_aligns_dev_photos_with_level_centred_eyes(tmp_path_factory: pytest.TempPathFactory) -> None:
    photos, _ = load_source("legend", shared_file("facial_expressions_dev.zip"), CANONICAL_CLASSES, max_side=256)
    assert len(photos) == 154  # 155 photos, one labelled contempt is outside the 7 classes
    config = FaceAlignConfig(detector="mtcnn", on_no_face="drop")
    result = align_dataset(photos, config, image_size=96, channels=1)
    assert result.metrics()["detection_rate"] >= DETECTION_RATE_FLOOR
    aligned = result.dataset
    assert aligned.images.shape == (result.counts()["aligned"], 96, 96, 1)
    save_preview(aligned.images, aligned.labels, aligned.classes, tmp_path_factory.mktemp("faces") / "aligned.png")

    # Detect again on the aligned crops: the eyes must now be level and straddle the vertical centre line.
    again = [found for found in detect_faces(aligned.images, 0.9) if found is not None]
    assert len(again) >= 0.9 * len(aligned)
    angles = np.array([eye_angle(found.left_eye, found.right_eye) for found in again])
    eye_centres = np.array([(found.left_eye[0] + found.right_eye[0]) / 2 for found in again])
    assert np.median(np.abs(angles)) < 3.0 and np.mean(np.abs(angles) < 8.0) > 0.9
    assert abs(np.median(eye_centres) - 48) < 4.0

    # Deterministic for the same batches (batch composition itself nudges a few boxes: float32 batched NMS).
    rerun = align_dataset(photos.subset(np.arange(config.batch_size)), config, image_size=96, channels=1)
    np.testing.assert_array_equal(rerun.dataset.images, aligned.images[: len(rerun.dataset)])
