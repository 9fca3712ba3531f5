"""A local web page: upload a photo (or take one with a webcam) and see each face boxed with its expression."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
import uvicorn

from fersynth.prediction import load_face_classifier
from fersynth.webapp import ServeSettings, build_app
from stages._common import stage_command
from stages._model_options import DEFAULT_MODEL, DetectorOption, ModelOption, OnnxOption, chosen_model

app = typer.Typer(name="serve", help=__doc__, add_completion=False)

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@app.command("serve")
@stage_command
def command(
    model: ModelOption = DEFAULT_MODEL,
    onnx: OnnxOption = None,
    detector: DetectorOption = "mtcnn",
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; 0.0.0.0 opens the page to the whole network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 7860,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", min=0.01, help="Larger photos are refused (1 MB = 10^6 bytes).")
    ] = 10,
) -> None:
    """A local web page: pick a photo (or take one with a webcam), see each face boxed with its expression.

    Serves until Ctrl+C, to this machine only unless --host says otherwise; no upload is written to disk.
    """
    classifier = load_face_classifier(chosen_model(model, onnx))
    if host not in LOOPBACK_HOSTS:
        log.warning("listening on %s: anyone who can reach this machine can use the page", host)
    settings = ServeSettings(detector=detector, max_upload_bytes=round(max_upload_mb * 1e6))
    uvicorn.run(build_app(classifier, settings), host=host, port=port)
