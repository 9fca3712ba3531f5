"""`fersynth serve`'s local web page: upload a photo (or take one with a webcam), see each face's expression.

A one-page FastAPI app rather than gradio: gradio brings a large dependency tree, loads remote fonts and
reports analytics by default, and its generated page is hard to drive in a browser test; this page is one
self-contained HTML file (webapp.html) and one JSON endpoint, and works offline.

No upload stays on disk: the request body is read into memory up to the size limit (refused as soon as it
passes it), parsed (starlette keeps a photo above 1 MB in an unnamed temporary file, closed before the response
goes out), decoded from bytes, and dropped with the response.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.types import Message, Receive, Scope

from fersynth.media import decode_photo
from fersynth.prediction import Detector, FaceClassifier, FacePrediction, classify_faces, find_faces

PHOTO_FIELD = "photo"  # the multipart form field the page sends the photo in
PAGE_TEMPLATE = "webapp.html"
MAX_UPLOAD_PLACEHOLDER = "{{max_upload_bytes}}"
MULTIPART_OVERHEAD = 64 * 1024  # boundary and part headers around the photo, a long file name included
# The page loads nothing from anywhere: a browser blocks any remote font, script or beacon, even one added later.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
READABLE_FORMATS = "JPEG, PNG, WebP, BMP, TIFF or GIF"


@dataclass(frozen=True)
class ServeSettings:
    detector: Detector = "mtcnn"
    max_upload_bytes: int = 10_000_000


@dataclass
class PhotoAnalyser:
    """Decodes an uploaded photo and classifies its faces, one photo at a time."""

    classifier: FaceClassifier
    detector: Detector
    # MTCNN sets torch's process-wide thread count while it runs (fersynth.faces): concurrent requests would
    # race on it, and one could leave torch on a single thread for good.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def analyse(self, data: bytes, name: str) -> dict[str, Any]:
        frame = decode_photo(data, name)
        if frame.pixels is None:
            raise HTTPException(415, f"{name}: {frame.error}. Choose a photo ({READABLE_FORMATS}).")
        with self.lock:
            found = find_faces(frame.pixels, self.classifier.card, self.detector)
            faces = classify_faces(self.classifier, found, 0)
        return result_record(name, frame.pixels, faces, self.classifier.card.classes)


def build_app(classifier: FaceClassifier, settings: ServeSettings) -> FastAPI:
    """The page at `/` and `POST /api/predict` (multipart, the photo in the field `photo`) answering JSON."""
    analyser = PhotoAnalyser(classifier, settings.detector)
    page = render_page(settings.max_upload_bytes)
    # No /docs, /redoc or /openapi.json: FastAPI's docs pages load Swagger UI and ReDoc from a CDN.
    app = FastAPI(title="fersynth", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/")
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    @app.post("/api/predict")
    async def predict_photo(request: Request) -> dict[str, Any]:
        body = await read_bounded_body(request, settings.max_upload_bytes)
        name, photo = await uploaded_photo(request.scope, body)
        if len(photo) > settings.max_upload_bytes:
            raise too_large(name, settings.max_upload_bytes)
        # Decoding and both networks take CPU seconds: in a worker thread, the server keeps answering meanwhile.
        return await run_in_threadpool(analyser.analyse, photo, name)

    return app


def render_page(max_upload_bytes: int) -> str:
    template = resources.files("fersynth").joinpath(PAGE_TEMPLATE).read_text(encoding="utf-8")
    return template.replace(MAX_UPLOAD_PLACEHOLDER, str(max_upload_bytes))


async def read_bounded_body(request: Request, max_upload_bytes: int) -> bytes:
    """The request body, refused (413) as soon as it cannot hold a photo of at most `max_upload_bytes`: by its
    declared length before reading anything, else while it streams in, so an oversized upload is never held whole."""
    limit = max_upload_bytes + MULTIPART_OVERHEAD
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large("The upload", max_upload_bytes)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large("The upload", max_upload_bytes)
    return bytes(body)


async def uploaded_photo(scope: Scope, body: bytes) -> tuple[str, bytes]:
    """The file name and bytes of the form field `photo` in a multipart body already in memory."""
    in_memory = Request(scope, _replaying(body))  # starlette parses forms from a request's stream: this one's is `body`
    # Leaving the block closes the parser's copy of the upload (a temporary file once above 1 MB).
    async with in_memory.form(max_files=1) as form:
        upload = form.get(PHOTO_FIELD)
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, f"No photo in the upload: send one file in the form field {PHOTO_FIELD!r}.")
        return upload.filename or "the upload", await upload.read()


def _replaying(body: bytes) -> Receive:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def too_large(name: str, limit: int) -> HTTPException:
    return HTTPException(413, f"{name} is larger than {limit / 1e6:g} MB, the most this page takes.")


def result_record(
    name: str, pixels: np.ndarray, faces: list[FacePrediction], classes: tuple[str, ...]
) -> dict[str, Any]:
    """The photo's size (the boxes' pixels: upright, as decoded) and each face; a message when there is none."""
    height, width = pixels.shape[:2]
    return {
        "file": name,
        "width": width,
        "height": height,
        "classes": list(classes),
        "faces": [
            {
                "box": [round(side, 1) for side in face.box],
                "label": face.label,
                "confidence": face.confidence,
                # nan without a detector, and JSON has no nan
                "detection_confidence": None if np.isnan(face.detection_confidence) else face.detection_confidence,
                "probabilities": face.probabilities,
            }
            for face in faces
        ],
        "message": "" if faces else f"No face found in {name}.",
    }
