"""Classify every face in photos, folders, zips and videos with a trained classifier (or its ONNX export)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from PIL import Image
from rich.console import Console
from rich.table import Column, Table

from fersynth.media import Frame, read_inputs, safe_file_name
from fersynth.prediction import (
    Detector,
    FaceClassifier,
    FacePrediction,
    classify_faces,
    draw_faces,
    find_faces,
    load_face_classifier,
)
from fersynth.runtime.io import atomic_write_bytes
from stages._common import FILE_OUTPUT, WORKING_FOLDER_OUTPUT, stage_command
from stages._model_options import DEFAULT_MODEL, DetectorOption, ModelOption, OnnxOption, chosen_model

app = typer.Typer(name="predict", help=__doc__, add_completion=False)

Format = Literal["table", "json", "csv"]
STATUS_FACE, STATUS_NO_FACE = "face", "no face"
TABLE_WIDTH = 160
CSV_COLUMNS = ("file", "frame", "time", "status", "x1", "y1", "x2", "y2", "detection_confidence", "label")


@app.command("predict")
@stage_command
def command(
    paths: Annotated[list[Path], typer.Argument(help="Photos, folders, zips of photos, and video files.")],
    model: ModelOption = DEFAULT_MODEL,
    onnx: OnnxOption = None,
    detector: DetectorOption = "mtcnn",
    max_faces: Annotated[int, typer.Option("--max-faces", min=0, help="Faces per image, largest first; 0 = all.")] = 0,
    every: Annotated[int, typer.Option("--every", min=1, help="Video: classify every N-th frame.")] = 1,
    output_format: Annotated[Format, typer.Option("--format", help="table (readable), json or csv.")] = "table",
    out: Annotated[
        Path | None, typer.Option("--out", help="File for the json or csv records [default: stdout]."), FILE_OUTPUT
    ] = None,
    annotate: Annotated[
        Path | None,
        typer.Option("--annotate", help="Folder for a copy of each photo or frame with faces boxed."),
        WORKING_FOLDER_OUTPUT,  # each copy lands as it is made
    ] = None,
) -> None:
    """One row per face, and one per image without a face or that could not be read.

    Exits 1 when any input could not be read (after reporting every input), 0 otherwise.
    """
    classifier = load_face_classifier(chosen_model(model, onnx))
    if annotate is not None:
        annotate.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    failed = 0
    for number, (frame, faces) in enumerate(_classified(read_inputs(paths, every), classifier, detector, max_faces)):
        failed += frame.pixels is None
        records += face_records(frame, faces, classifier.card.classes)
        if annotate is not None and frame.pixels is not None:
            _write_annotated(annotate / f"{number:05d}_{safe_file_name(frame.source, frame.frame)}", frame, faces)
    _emit(records, classifier.card.classes, output_format, out)
    if failed:
        raise typer.Exit(code=1)


def _classified(
    frames: Iterator[Frame], classifier: FaceClassifier, detector: Detector, max_faces: int
) -> Iterator[tuple[Frame, list[FacePrediction]]]:
    for frame in frames:
        if frame.pixels is None:
            yield frame, []
            continue
        yield frame, classify_faces(classifier, find_faces(frame.pixels, classifier.card, detector, max_faces), 0)


def face_records(frame: Frame, faces: Sequence[FacePrediction], classes: Sequence[str]) -> list[dict[str, Any]]:
    """One record per face; one saying why, for a frame without faces or pixels."""
    where = {"file": frame.source, "frame": frame.frame, "time": frame.time}
    if frame.pixels is None:
        return [{**where, "status": f"unreadable: {frame.error}"}]
    if not faces:
        return [{**where, "status": STATUS_NO_FACE}]
    return [
        {
            **where,
            "status": STATUS_FACE,
            "box": [round(side, 1) for side in face.box],
            "detection_confidence": None if math.isnan(face.detection_confidence) else face.detection_confidence,
            "label": face.label,
            "probabilities": {name: round(face.probabilities[name], 4) for name in classes},
        }
        for face in faces
    ]


def _emit(records: list[dict[str, Any]], classes: Sequence[str], output_format: Format, out: Path | None) -> None:
    if output_format == "table":
        console = Console()
        if not console.is_terminal:  # a log or pipe: rich's 80 columns would cut the file names
            console.width = max(console.width, TABLE_WIDTH)
        console.print(_table(records))
        return
    text = json.dumps(records, indent=1) + "\n" if output_format == "json" else _csv(records, classes)
    if out is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_bytes(out, text.encode())


def _table(records: list[dict[str, Any]]) -> Table:
    table = Table(Column("file", overflow="fold"), "time", "box", "expression", Column("top 3", no_wrap=True))
    for record in records:
        time = "" if record["time"] is None else f"{record['time']:.2f} s"
        if record["status"] != STATUS_FACE:
            table.add_row(record["file"], time, "", f"[yellow]{record['status']}[/]", "")
            continue
        ranked = sorted(record["probabilities"].items(), key=lambda item: item[1], reverse=True)
        box = ",".join(f"{side:.0f}" for side in record["box"])
        top = "  ".join(f"{name} {probability:.2f}" for name, probability in ranked[:3])
        table.add_row(record["file"], time, box, f"[bold]{ranked[0][0]}[/] {ranked[0][1]:.2f}", top)
    return table


def _csv(records: list[dict[str, Any]], classes: Sequence[str]) -> str:
    stream = io.StringIO()
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(f"p_{name}" for name in classes)])
    for record in records:
        box = record.get("box", ["", "", "", ""])
        probabilities = record.get("probabilities", {})
        row = [record["file"], _blank(record["frame"]), _blank(record["time"]), record["status"], *box]
        row += [_blank(record.get("detection_confidence")), record.get("label", "")]
        writer.writerow(row + [probabilities.get(name, "") for name in classes])
    return stream.getvalue()


def _blank(value: object) -> object:
    return "" if value is None else value


def _write_annotated(path: Path, frame: Frame, faces: Sequence[FacePrediction]) -> None:
    assert frame.pixels is not None  # only readable frames are annotated
    buffer = io.BytesIO()
    Image.fromarray(draw_faces(frame.pixels, faces)).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
