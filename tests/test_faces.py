from __future__ import annotations

import math
import sys
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch

from fersynth import faces
from fersynth.config import FaceAlignConfig
from fersynth.datasets.format import Dataset
from fersynth.errors import DataError
from fersynth.faces import Detection, align_dataset, align_face, alignment_matrix, eye_angle

from .conftest import make_dataset


def blank_dataset(count: int = 3, size: int = 64) -> Dataset:
    """Flat grey images: nothing a face detector can find."""
    dataset = make_dataset(per_class=1, size=size).subset(np.arange(count))
    return replace(dataset, images=np.full((count, size, size, 1), 128, dtype=np.uint8))


def tilted_eyes(angle_degrees: float, centre: tuple[float, float] = (50.0, 40.0), half_gap: float = 12.0) -> Detection:
    """A face tilted by `angle_degrees` (image y down): eyes around `centre`, box centred 5 px below them
    along the face's own vertical axis (as on a real tilted face; MTCNN boxes stay axis-aligned)."""
    cos, sin = math.cos(math.radians(angle_degrees)), math.sin(math.radians(angle_degrees))
    eye_mid = np.array(centre)
    left, right = eye_mid - half_gap * np.array([cos, sin]), eye_mid + half_gap * np.array([cos, sin])
    face_centre = eye_mid + 5 * np.array([-sin, cos])
    box = np.concatenate([face_centre - 20, face_centre + 20])
    return Detection(box=box, left_eye=left, right_eye=right, confidence=0.99)


def test_detector_none_resizes_and_converts_channels() -> None:
    dataset = make_dataset(per_class=2, size=64, channels=3)
    result = align_dataset(dataset, FaceAlignConfig(detector="none"), image_size=48, channels=1)
    assert result.dataset.images.shape == (len(dataset), 48, 48, 1)
    assert list(result.dataset.ids) == list(dataset.ids)
    assert {item.outcome for item in result.outcomes} == {"resized"}
    assert result.counts() == {"aligned": 0, "fallback": 0, "dropped": 0, "resized": len(dataset)}
    # brightness survives the resize: make_dataset's classes differ in mean grey level
    assert abs(float(result.dataset.images.mean()) - float(dataset.images.mean())) < 2.0

    gray = make_dataset(per_class=1, size=32, channels=1)
    rgb = align_dataset(gray, FaceAlignConfig(detector="none"), image_size=40, channels=3).dataset.images
    assert rgb.shape == (len(gray), 40, 40, 3)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_detector_none_keeps_images_already_at_size() -> None:
    dataset = make_dataset(per_class=1, size=48)
    result = align_dataset(dataset, FaceAlignConfig(detector="none"), image_size=48, channels=1)
    np.testing.assert_array_equal(result.dataset.images, dataset.images)


@pytest.mark.parametrize("tilt", [-30.0, -5.0, 0.0, 20.0])
def test_alignment_levels_the_eyes_and_centres_the_face(tilt: float) -> None:
    detection = tilted_eyes(tilt)
    assert eye_angle(detection.left_eye, detection.right_eye) == pytest.approx(tilt)
    matrix = alignment_matrix(detection, margin=0.0, output_side=100)
    left, right = (matrix @ np.append(eye, 1.0) for eye in (detection.left_eye, detection.right_eye))
    assert left[1] == pytest.approx(right[1])  # level
    assert left[0] < right[0]  # not flipped upside down
    assert (left[0] + right[0]) / 2 == pytest.approx(50.0)  # the eyes sit on the vertical centre line
    assert left[1] == pytest.approx(50.0 - 5 * 100 / 40)  # 5 px above the box centre, scaled
    assert right[0] - left[0] == pytest.approx(24 * 100 / 40)  # scaled by output side / box side, not stretched


def test_align_face_rotates_the_pixels_the_right_way() -> None:
    """Two bright dots on a tilted eye line come out on one row, left-right order kept."""
    detection = tilted_eyes(25.0)
    image = np.zeros((100, 100, 1), dtype=np.uint8)
    for eye in (detection.left_eye, detection.right_eye):
        cv2.circle(image, (round(eye[0]), round(eye[1])), 3, 255, -1)
    face = align_face(image, detection, margin=0.0, size=40)
    assert face.shape == (40, 40, 1)
    left_half, right_half = face[:, :20, 0], face[:, 20:, 0]
    rows = [np.average(np.arange(40), weights=half.sum(axis=1)) for half in (left_half, right_half)]
    assert abs(rows[0] - rows[1]) < 1.0


def test_align_face_pads_boxes_outside_the_image() -> None:
    detection = replace(tilted_eyes(0.0, centre=(5.0, 5.0)), box=np.array([-15.0, -10.0, 25.0, 30.0]))
    image = np.full((50, 50, 3), 200, dtype=np.uint8)
    face = align_face(image, detection, margin=0.5, size=32)
    assert face.shape == (32, 32, 3)
    assert face[0, 0].max() == 0 and face[-1, -1].min() == 200  # outside padded black, inside kept


def test_no_face_falls_back_to_centre_crop() -> None:
    dataset = blank_dataset()
    result = align_dataset(dataset, FaceAlignConfig(detector="mtcnn", on_no_face="fallback"), image_size=32, channels=3)
    assert [item.outcome for item in result.outcomes] == ["fallback"] * 3
    assert result.dataset.images.shape == (3, 32, 32, 3)
    assert (result.dataset.images == 128).all()
    assert result.metrics()["detection_rate"] == 0.0


def test_no_face_is_dropped_when_asked() -> None:
    result = align_dataset(
        blank_dataset(), FaceAlignConfig(detector="mtcnn", on_no_face="drop"), image_size=32, channels=1
    )
    assert [item.outcome for item in result.outcomes] == ["dropped"] * 3
    assert len(result.dataset) == 0 and result.dataset.images.shape[1:] == (32, 32, 1)


def test_low_confidence_faces_count_as_none_and_survivors_keep_their_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = make_dataset(per_class=1, size=100).subset(np.arange(3))
    confident, doubtful = tilted_eyes(10.0), replace(tilted_eyes(0.0), confidence=0.5)
    monkeypatch.setattr(faces, "detect_faces", lambda images, *_: [doubtful, confident, None][: len(images)])
    result = align_dataset(dataset, FaceAlignConfig(detector="mtcnn", on_no_face="drop"), image_size=24, channels=1)
    assert [item.outcome for item in result.outcomes] == ["dropped", "aligned", "dropped"]
    assert list(result.dataset.ids) == [dataset.ids[1]]
    assert list(result.dataset.labels) == [dataset.labels[1]]
    assert result.outcomes[0].confidence == 0.5 and math.isnan(result.outcomes[2].confidence)
    assert result.outcomes[1].angle == pytest.approx(10.0)
    metrics = result.metrics()
    assert metrics["aligned"] == 1 and metrics["dropped"] == 2 and metrics["total"] == 3
    assert metrics["detection_rate"] == pytest.approx(1 / 3)
    split = str(dataset.splits[1])
    assert metrics[f"aligned_{split}"] == 1 and metrics[f"detection_rate_{split}"] == 1.0


def test_outcomes_csv_has_one_row_per_input_image() -> None:
    dataset = blank_dataset()
    result = align_dataset(dataset, FaceAlignConfig(detector="mtcnn", on_no_face="drop"), image_size=32, channels=1)
    lines = result.outcomes_csv().decode().splitlines()
    assert lines[0] == "id,outcome,confidence,angle"
    assert lines[1:] == [f"{image_id},dropped,,0.00" for image_id in dataset.ids]


class FakeMtcnn:
    """Stands in for MTCNN.detect: fixed faces in the coordinates of the (shrunk) images it is given."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, images: np.ndarray, landmarks: bool) -> tuple[list, list, list]:
        self.shapes.append(images.shape)
        points = np.tile(np.array([[30.0, 30.0], [50.0, 30.0], [40, 40], [32, 50], [48, 50]]), (3, 1, 1))
        boxes = np.array([[0, 0, 20, 20], [10, 10, 70, 70], [0, 0, 100, 100]], dtype=np.float32)
        picks_largest_confident = (boxes, np.array([0.95, 0.92, 0.5]), points)
        only_doubtful = (boxes[:2], np.array([0.3, 0.6]), points[:2])
        nothing = (None, [None], None)
        rows = [picks_largest_confident, only_doubtful, nothing]
        return tuple(list(column) for column in zip(*rows, strict=True))  # type: ignore[return-value]


def test_detect_faces_picks_largest_confident_face_in_input_coordinates(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMtcnn()
    monkeypatch.setattr(faces, "_mtcnn", lambda: fake)
    gray = np.zeros((3, 320, 320, 1), dtype=np.uint8)
    largest, doubtful, nothing = faces.detect_faces(gray, 0.9, detection_size=160)
    assert fake.shapes == [(3, 160, 160, 3)]  # shrunk and made RGB for the detector
    assert largest is not None and doubtful is not None and nothing is None
    np.testing.assert_allclose(largest.box, [20, 20, 140, 140])  # the 60-px box beats the more confident 20-px one
    np.testing.assert_allclose(largest.left_eye, [60, 60])
    assert largest.confidence == pytest.approx(0.92)
    assert doubtful.confidence == pytest.approx(0.6)  # below threshold: reported, treated as no face by the caller
    faces.detect_faces(gray, 0.9, detection_size=0)
    assert fake.shapes[-1] == (3, 320, 320, 3)


def test_detect_every_face_keeps_each_confident_face_largest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    class OnePhotoMtcnn(FakeMtcnn):  # the first fake image's three faces, for a batch of one photo
        def detect(self, images: np.ndarray, landmarks: bool) -> tuple[list, list, list]:
            boxes, scores, points = super().detect(images, landmarks)
            return boxes[:1], scores[:1], points[:1]

    monkeypatch.setattr(faces, "_mtcnn", OnePhotoMtcnn)
    photo = np.zeros((320, 320, 3), dtype=np.uint8)
    found = faces.detect_every_face(photo, 0.9, detection_size=160)
    assert [face.box.tolist() for face in found] == [[20, 20, 140, 140], [0, 0, 40, 40]]  # input coordinates
    assert [face.confidence for face in found] == pytest.approx([0.92, 0.95])
    assert faces.detect_every_face(photo, 0.99) == []


def test_missing_facenet_pytorch_names_the_command_that_installs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pip install .` cannot bring MTCNN (its metadata pins an old torch): say how to get it."""
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # None makes `import` raise ImportError
    faces._mtcnn.cache_clear()
    try:
        with pytest.raises(DataError, match=r"pip install --no-deps facenet-pytorch==2\.6\.0"):
            align_dataset(blank_dataset(), FaceAlignConfig(detector="mtcnn"), image_size=32, channels=1)
    finally:
        faces._mtcnn.cache_clear()


def test_detector_runs_on_one_torch_thread_and_restores_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    """MTCNN's boxes change with torch's thread count: one thread keeps faces the same under any setting."""
    seen: list[int] = []

    class ThreadCountingMtcnn(FakeMtcnn):
        def detect(self, images: np.ndarray, landmarks: bool) -> tuple[list, list, list]:
            seen.append(torch.get_num_threads())
            return super().detect(images, landmarks)

    monkeypatch.setattr(faces, "_mtcnn", ThreadCountingMtcnn)
    callers = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        faces.detect_faces(np.zeros((3, 64, 64, 1), dtype=np.uint8), 0.9)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(callers)
