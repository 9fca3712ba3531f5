"""generate.backend editor: the trained editor's faces, planned like every backend's, each naming its source face."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fersynth.config import EditConfig, FaceAlignConfig, GenerateConfig, TrainEditorConfig
from fersynth.datasets.format import Dataset
from fersynth.editor import EDITOR_FILE, train_editor
from fersynth.errors import ParamsError
from fersynth.generation import BACKENDS, BackendInputs, generate_dataset

from .conftest import make_dataset

TINY = TrainEditorConfig(epochs=1, base_channels=4, residual_blocks=1, batch_size=4, images_per_epoch=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset]:
    real = make_dataset(per_class=6, size=16)
    folder = tmp_path_factory.mktemp("editor")
    train_editor(real, TINY, seed=0).editor.save(folder / EDITOR_FILE)
    return folder, real


def inputs(folder: Path, real: Dataset, **edit: object) -> BackendInputs:
    config = GenerateConfig(backend="editor", edit=EditConfig(**edit))
    return BackendInputs(config, FaceAlignConfig(), Path("unused"), folder, real, 1, 16)


def test_edits_come_from_real_train_faces_of_the_source_classes(trained: tuple[Path, Dataset]) -> None:
    folder, real = trained
    backend = BACKENDS["editor"](inputs(folder, real, source_classes=["neutral", "happy"]))
    samples = backend.sample(class_index=1, count=5, seed=3)  # disgust
    assert samples.images.shape == (5, 16, 16, 1) and samples.images.dtype == np.uint8
    by_id = {identity: row for row, identity in enumerate(real.ids)}
    rows = [by_id[origin] for origin in samples.origins]
    assert all(real.splits[row] == "train" for row in rows)
    assert {real.classes[real.labels[row]] for row in rows} <= {"neutral", "happy"}
    again = backend.sample(class_index=1, count=5, seed=3)
    np.testing.assert_array_equal(samples.images, again.images)
    assert list(samples.origins) == list(again.origins)


def test_the_intensity_range_decides_how_far_an_edit_goes(trained: tuple[Path, Dataset]) -> None:
    folder, real = trained
    untouched = BACKENDS["editor"](inputs(folder, real, intensity_min=0.0, intensity_max=0.0, colour_transfer=False))
    full = BACKENDS["editor"](inputs(folder, real, intensity_min=1.0, intensity_max=1.0, colour_transfer=False))
    at_zero, at_one = untouched.sample(1, 4, seed=0), full.sample(1, 4, seed=0)
    assert list(at_zero.origins) == list(at_one.origins)  # the same faces: intensities draw from their own stream
    assert not np.array_equal(at_zero.images, at_one.images)


def test_a_plan_through_generate_dataset_labels_rows_as_editor(trained: tuple[Path, Dataset]) -> None:
    folder, real = trained
    backends = {"editor": BACKENDS["editor"](inputs(folder, real))}
    generated = generate_dataset(backends, {"editor": {"disgust": 3, "fear": 2}}, seed=0, batch_size=2)
    assert generated.dataset.class_counts() == {"disgust": 3, "fear": 2} | {
        name: 0 for name in real.classes if name not in ("disgust", "fear")
    }
    assert set(generated.dataset.sources) == {"editor"} and generated.metrics()["generated_editor"] == 5


def test_no_trained_editor_or_a_source_class_outside_the_classes_is_a_params_error(
    trained: tuple[Path, Dataset], tmp_path: Path
) -> None:
    folder, real = trained
    with pytest.raises(ParamsError, match=r"no trained editor \(editor\.pt\); set train_editor\.epochs above 0"):
        BACKENDS["editor"](inputs(tmp_path, real))
    six = real.subset(real.labels < 6)
    six = replace(six, classes=six.classes[:6])
    with pytest.raises(ParamsError, match=r"generate\.edit\.source_classes names 'surprise', which is not in common"):
        BACKENDS["editor"](inputs(folder, six, source_classes=["surprise"]))
