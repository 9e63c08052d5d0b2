"""`captioner serve` as a real process on 127.0.0.1, called by clients nobody here wrote: the official `ollama` and
`openai` Python packages, and plain httpx for the limits (401, 413, 400, 503), every error a JSON object."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from tiny_model import save_random_model

from captioner.serving.server import prompt_language

pytestmark = pytest.mark.slow  # exports a model and starts servers (about 30 s in all)
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The tiny random model exported for the portable runtime: the server starts without TensorFlow."""
    from captioner.export import export_model

    folder = tmp_path_factory.mktemp("served")
    model, tokenizer = save_random_model(folder / "model")
    return export_model(model, tokenizer, "onnx", folder / "onnx", "none")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, *extra: str):
    """`captioner serve` in a subprocess, once /health answers: (base URL, process)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("CAPTIONER_TOKEN", None)
    process = subprocess.Popen([sys.executable, "-m", "captioner", "serve", "--model", str(model), "--port",
                                str(port), *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return url, process
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError("the server did not answer /health within 120 s")


def stop(process) -> str:
    process.terminate()
    try:
        return process.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0]


@pytest.fixture(scope="module")
def server(exported):
    url, process = start_server(exported, "--token", TOKEN, "--max-body-mb", "1", "--max-pixels", "1000000")
    yield url
    log = stop(process)
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
def photo() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def expected(exported, photo) -> str:
    """The caption the library gives the photo: what every endpoint must answer."""
    import captioner

    return captioner.load(exported).caption(photo).text


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_the_ollama_client_captions_a_photo(server, photo, expected):
    import ollama

    client = ollama.Client(host=server, headers=AUTH)
    assert [m.model for m in client.list().models] == ["captioner:en"]
    reply = client.generate(model="captioner:en", prompt="Describe this photo.", images=[photo], stream=False)
    assert reply.response == expected and reply.done
    streamed = "".join(chunk.response for chunk in client.generate(model="llava", prompt="Describe", images=[photo],
                                                                     stream=True))
    assert streamed == expected  # an unknown model name falls back to the default model
    chat = client.chat(model="captioner:en", messages=[{"role": "user", "content": "What is in this picture, in "
                                                        "German?", "images": [photo]}])
    assert chat.message.content == expected  # a language the server does not have never breaks a request
    as_json = json.loads(client.generate(model="captioner:en", prompt="", images=[photo], format="json").response)
    assert as_json["caption"] == expected and as_json["tags"] == [] and as_json["language"] == "en"


def test_the_openai_client_captions_a_photo(server, photo, expected):
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key=TOKEN, max_retries=0)
    assert [m.id for m in client.models.list()] == ["captioner:en"]
    data_url = "data:image/jpeg;base64," + base64.b64encode(photo).decode()
    messages = [{"role": "user", "content": [{"type": "text", "text": "Caption this image."},
                                             {"type": "image_url", "image_url": {"url": data_url}}]}]
    reply = client.chat.completions.create(model="captioner:en", messages=messages)
    assert reply.choices[0].message.content == expected and reply.choices[0].finish_reason == "stop"
    stream = client.chat.completions.create(model="captioner:en", messages=messages, stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == expected
    with pytest.raises(openai.BadRequestError, match="never fetches URLs"):
        client.chat.completions.create(model="captioner:en", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}])


def test_captions_endpoint_multipart_and_json(server, photo, expected):
    reply = httpx.post(f"{server}/v1/captions", headers=AUTH, files={"file": ("p.jpg", photo, "image/jpeg")},
                       data={"beam": "3", "n_best": "2"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["caption"] == expected and len(body["n_best"]) == 2 and body["tags"] == body["grounded_by"] == []
    assert body["language"] == "en" and body["model"] == "captioner:en" and 0 < body["confidence"] <= 1
    reply = httpx.post(f"{server}/v1/captions?beam=1", headers=AUTH,
                       json={"image": base64.b64encode(photo).decode()})
    assert reply.status_code == 200 and reply.json()["caption"]
    assert httpx.get(f"{server}/docs").status_code == 200 and "/api/generate" in httpx.get(
        f"{server}/openapi.json").json()["paths"]


def _error(reply: httpx.Response, status: int) -> str:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    message = error if isinstance(error, str) else error["message"]
    assert "Traceback" not in message and "\n" not in message
    return message


def test_a_missing_or_wrong_token_is_401(server, photo):
    image = base64.b64encode(photo).decode()
    assert "bearer token" in _error(httpx.post(f"{server}/api/generate", json={"images": [image]}), 401)
    assert "bearer token" in _error(httpx.get(f"{server}/v1/models", headers={"Authorization": "Bearer no"}), 401)


def test_oversized_bodies_and_images_are_413(server):
    big = base64.b64encode(os.urandom(900_000)).decode()  # 1.2 MB of base64: over the 1 MB limit
    assert "request body is over" in _error(httpx.post(f"{server}/api/generate", headers=AUTH,
                                                       json={"images": [big]}), 413)
    chunks = (b"x" * 65536 for _ in range(20))  # no Content-Length: counted as it arrives
    assert "request body is over" in _error(httpx.post(f"{server}/v1/captions", headers=AUTH, content=chunks), 413)
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 1000), "white").save(buffer, "PNG")  # small file, 2 megapixels
    reply = httpx.post(f"{server}/v1/captions", headers=AUTH, json={"image": base64.b64encode(
        buffer.getvalue()).decode()})
    assert "2000x1000 pixels" in _error(reply, 413)


@pytest.mark.parametrize("image", ["https://example.com/cat.jpg", "file:///etc/passwd", "/etc/passwd",
                                   "../photos/cat.jpg", "C:\\Users\\me\\cat.jpg"])
def test_a_url_or_path_in_place_of_an_image_is_400(server, image):
    assert "never fetches URLs or reads files" in _error(httpx.post(f"{server}/api/generate", headers=AUTH,
                                                                    json={"images": [image]}), 400)
    assert "never fetches URLs or reads files" in _error(httpx.post(f"{server}/v1/captions", headers=AUTH,
                                                                    json={"image": image}), 400)


def test_bad_requests_are_400_as_json(server):
    assert "not an image" in _error(httpx.post(f"{server}/api/generate", headers=AUTH, json={
        "images": [base64.b64encode(b"hello, not a photo").decode()]}), 400)
    assert "not JSON" in _error(httpx.post(f"{server}/api/chat", headers=AUTH, content=b"{nope"), 400)
    assert "no image" in _error(httpx.post(f"{server}/api/generate", headers=AUTH, json={"prompt": "hi"}), 400)
    assert "invalid request" in _error(httpx.post(f"{server}/v1/captions", headers=AUTH, json={"beam": 3}), 400)
    assert _error(httpx.get(f"{server}/nowhere", headers=AUTH), 404)


def test_a_full_queue_answers_503_and_the_server_keeps_serving(exported):
    url, process = start_server(exported, "--workers", "1", "--queue", "0")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1500, 2000, 3), dtype=np.uint8)).save(buffer, "PNG")
    body = {"images": [base64.b64encode(buffer.getvalue()).decode()], "stream": False}
    try:
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: httpx.post(f"{url}/api/generate", json=body, timeout=60), range(8)))
        codes = sorted(r.status_code for r in replies)
        assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes
        assert "busy" in _error(next(r for r in replies if r.status_code == 503), 503)
        assert httpx.post(f"{url}/api/generate", json=body, timeout=60).status_code == 200
    finally:
        log = stop(process)
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert {line["status"] for line in lines if line["path"] == "/api/generate"} == {200, 503}
    assert "Traceback" not in log


def test_a_prompt_names_the_language():
    assert prompt_language("Describe this image in German.") == "de"
    assert prompt_language("用中文描述这张图片") == "zh"
    assert prompt_language("Write a caption") is None and prompt_language("germane") is None
