"""`fersynth serve`'s page: the JSON API (faces, refusals, nothing left on disk) and the page in headless Chromium."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import socket
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from PIL import Image

from fersynth.config import CANONICAL_CLASSES
from fersynth.prediction import FaceClassifier, load_face_classifier
from fersynth.training import MODEL_FILE
from fersynth.webapp import MULTIPART_OVERHEAD, ServeSettings, build_app, read_bounded_body

from .conftest import REPO_ROOT, run_stage, shared_file
from .helpers import TwoFacesWhereBright, save_tiny_face_classifier

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

SIZE = 16
LIMIT = 2_000_000  # above starlette's 1 MiB in-memory spool, so a large photo reaches its temporary file
DEV_PHOTO = "facial_expressions/images/Claire_Danes_0003.jpg"  # one clear face, boxed inside the photo
SCREENSHOT = REPO_ROOT / "docs" / "images" / "serve.png"
BROWSER_WAIT_S = 60


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    """An untrained VGG for 16×16 grey faces: labels mean nothing, the page's structure is what is tested."""
    return save_tiny_face_classifier(tmp_path / MODEL_FILE, SIZE)


@pytest.fixture
def classifier(model_path: Path) -> FaceClassifier:
    return load_face_classifier(model_path)


@pytest.fixture
def client(classifier: FaceClassifier, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setattr("fersynth.faces._mtcnn", TwoFacesWhereBright)
    return TestClient(build_app(classifier, ServeSettings(max_upload_bytes=LIMIT)))


def _png(bright: bool, side: int = 64) -> bytes:
    """A noise photo; the fake detector finds two faces in it when its top-left pixel is bright."""
    pixels = np.random.default_rng(side).integers(0, 100, size=(side, side, 3), dtype=np.uint8)
    pixels[0, 0] = 255 if bright else 0
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def _post(client: TestClient, name: str, data: bytes) -> tuple[int, dict]:
    response = client.post("/api/predict", files={"photo": (name, data, "application/octet-stream")})
    return response.status_code, response.json()


def test_page_loads_nothing_from_elsewhere(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "http:" not in response.text and "https:" not in response.text and 'src="//' not in response.text
    assert f'data-max-upload-bytes="{LIMIT}"' in response.text
    for remote_docs in ("/docs", "/redoc", "/openapi.json"):  # FastAPI's docs pages load Swagger UI from a CDN
        assert client.get(remote_docs).status_code == 404


def test_photo_gives_every_face_with_its_class_probabilities(client: TestClient) -> None:
    status, answer = _post(client, "group.png", _png(bright=True))
    assert status == 200, answer
    assert (answer["file"], answer["width"], answer["height"], answer["message"]) == ("group.png", 64, 64, "")
    assert answer["classes"] == list(CANONICAL_CLASSES)
    assert [face["box"] for face in answer["faces"]] == [[20, 20, 50, 50], [2, 2, 12, 12]]  # largest first
    for face in answer["faces"]:
        assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert face["label"] == max(face["probabilities"], key=face["probabilities"].get)
        assert face["confidence"] == face["probabilities"][face["label"]]
        assert 0.8 <= face["detection_confidence"] <= 1


def test_photo_without_a_face_says_so(client: TestClient) -> None:
    status, answer = _post(client, "empty.png", _png(bright=False))
    assert status == 200 and answer["faces"] == [] and answer["message"] == "No face found in empty.png."


def test_non_image_is_refused_naming_the_file(client: TestClient) -> None:
    status, answer = _post(client, "notes.txt", b"not a photo at all")
    assert status == 415
    assert answer["detail"].startswith("notes.txt: not a readable image") and "Choose a photo" in answer["detail"]


def test_upload_without_a_photo_is_refused(client: TestClient) -> None:
    response = client.post("/api/predict", data={"comment": "forgot the photo"})
    assert response.status_code == 400 and "form field 'photo'" in response.json()["detail"]


def test_oversized_uploads_are_refused(client: TestClient) -> None:
    status, answer = _post(client, "big.jpg", b"\xff" * (LIMIT + 1))  # within the multipart allowance
    assert (status, answer["detail"]) == (413, "big.jpg is larger than 2 MB, the most this page takes.")
    status, answer = _post(client, "huge.jpg", b"\xff" * (LIMIT + MULTIPART_OVERHEAD + 1))  # by Content-Length
    assert (status, answer["detail"]) == (413, "The upload is larger than 2 MB, the most this page takes.")
    chunks = (b"\xff" * 2**16 for _ in range(LIMIT // 2**16 + 2))  # streamed: no Content-Length to go by
    response = client.post("/api/predict", content=chunks, headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413


def test_body_is_refused_while_it_streams_in() -> None:
    """An endless upload is cut off once past the limit, not read whole."""
    sent: list[int] = []

    async def endless() -> dict:
        sent.append(2**16)
        return {"type": "http.request", "body": b"\0" * 2**16, "more_body": True}

    request = Request({"type": "http", "method": "POST", "headers": []}, endless)
    with pytest.raises(HTTPException) as refused:
        asyncio.run(read_bounded_body(request, LIMIT))
    assert refused.value.status_code == 413
    assert sum(sent) <= LIMIT + MULTIPART_OVERHEAD + 2**16


def test_no_upload_remains_on_disk(client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither a file in the temp folder nor an open (unlinked) one: also the >1 MiB upload starlette spools."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    large = _png(bright=True, side=640)
    assert 2**20 < len(large) < LIMIT
    for name, data in (("large.png", large), ("small.png", _png(bright=True)), ("notes.txt", b"no photo")):
        _post(client, name, data)
        assert list(temp.iterdir()) == [], name
        assert not [target for target in _open_files() if target.startswith(str(temp))], name


def _open_files() -> list[str]:
    """What this process's file descriptors point at; a deleted temporary file reads `<dir>/#123 (deleted)`."""
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("no /proc/self/fd to list open files")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:  # closed between listing and reading
            continue
    return targets


def test_serve_listens_on_localhost_unless_told(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port: served.update(app=app, host=host, port=port))
    code, output = run_stage(["serve", "--model", str(model_path), "--max-upload-mb", "0.5"])
    assert code == 0, output
    assert (served["host"], served["port"]) == ("127.0.0.1", 7860)
    assert 'data-max-upload-bytes="500000"' in TestClient(served["app"]).get("/").text


@pytest.mark.slow
@pytest.mark.shared
def test_page_in_a_browser_boxes_each_face_with_its_expression(tmp_path: Path, classifier: FaceClassifier) -> None:
    """As a person would: the real server and MTCNN, a dev photo chosen in headless Chromium, boxes and bars."""
    chromium, chromedriver = _browser_or_skip()
    from selenium.webdriver.common.by import By

    photo = tmp_path / Path(DEV_PHOTO).name
    with zipfile.ZipFile(shared_file("facial_expressions_dev.zip")) as archive:
        photo.write_bytes(archive.read(DEV_PHOTO))
    with _serving(build_app(classifier, ServeSettings())) as url, _headless_chromium(chromium, chromedriver) as driver:
        driver.get(url)
        driver.find_element(By.ID, "file").send_keys(str(photo))
        assert _answer(driver, photo.name) == (f"{photo.name}: 1 face.", False)
        boxes = driver.find_elements(By.CSS_SELECTOR, ".face-box")
        labels = [box.find_element(By.CSS_SELECTOR, ".face-label").text.split() for box in boxes]
        assert boxes and all(label[1] in CANONICAL_CLASSES for label in labels), labels
        assert all(box.size["width"] > 20 and box.size["height"] > 20 for box in boxes)
        bars = driver.find_elements(By.CSS_SELECTOR, ".face .bar")
        assert len(bars) == len(boxes) * len(CANONICAL_CLASSES)
        assert all(bar.get_attribute("style").startswith("width:") for bar in bars)
        driver.save_screenshot(str(tmp_path / "serve.png"))
        if os.environ.get("FERSYNTH_UPDATE_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_path / "serve.png", SCREENSHOT)

        notes = tmp_path / "notes.txt"
        notes.write_text("not a photo")
        driver.find_element(By.ID, "file").send_keys(str(notes))
        message, error = _answer(driver, notes.name)
        assert error and message.startswith("notes.txt: not a readable image"), message

        driver.find_element(By.ID, "webcam-start").click()  # Chromium's fake camera: a test pattern, no face
        capture = driver.find_element(By.ID, "webcam-capture")
        _wait_until(driver, "a playing webcam", lambda _: capture.is_displayed())
        capture.click()
        message, error = _answer(driver, "webcam.jpg")
        assert not error, message


def _browser_or_skip() -> tuple[str, str]:
    """Debian's chromium and chromedriver: a skip without them, a failure under CI=true."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401  (a dev extra)
    except ImportError:
        chromium = None
    if chromium and chromedriver:
        return chromium, chromedriver
    reason = "the browser test needs Debian's chromium and chromium-driver (`make browser`) and selenium"
    if os.environ.get("CI") == "true":
        pytest.fail(reason + "; under CI=true their absence is an error")
    pytest.skip(reason)


@contextmanager
def _serving(app: FastAPI) -> Iterator[str]:
    """The app on a free port of 127.0.0.1, in a thread of this process; stopped on leaving."""
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + BROWSER_WAIT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                pytest.fail("the server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{listening.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(timeout=BROWSER_WAIT_S)
        listening.close()


@contextmanager
def _headless_chromium(chromium: str, chromedriver: str) -> Iterator[WebDriver]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,860"):
        options.add_argument(argument)
    # A webcam for getUserMedia: a generated test pattern, allowed without asking
    options.add_argument("--use-fake-device-for-media-stream")
    options.add_argument("--use-fake-ui-for-media-stream")
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        driver.set_page_load_timeout(BROWSER_WAIT_S)
        yield driver
    finally:
        driver.quit()


def _answer(driver: WebDriver, file_name: str) -> tuple[str, bool]:
    """The page's message once the server has answered about `file_name`, and whether it is an error."""
    from selenium.webdriver.common.by import By

    message = driver.find_element(By.ID, "message")

    def answered(_: WebDriver) -> bool:
        return file_name in message.text and not message.text.startswith("Looking for faces")

    _wait_until(driver, f"answer about {file_name}", answered)
    return message.text, "error" in message.get_attribute("class").split()


def _wait_until(driver: WebDriver, what: str, condition: Callable[[WebDriver], bool]) -> None:
    """Fails with what the page's message line says when `condition` does not hold in time."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, BROWSER_WAIT_S).until(condition)
    except TimeoutException:
        page_says = driver.find_element(By.ID, "message").text
        pytest.fail(f"no {what} within {BROWSER_WAIT_S} s; the page says {page_says!r}")
