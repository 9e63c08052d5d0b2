"""`captioner serve`: captions over HTTP (FastAPI + uvicorn), in captioner's own API and in the Ollama and
OpenAI APIs that photo tools (PhotoPrism, Open WebUI, scripts) already speak.

Built for a network: a bearer token if configured, the request body and the image's pixels bounded (413),
at most `workers` captions computed at once with `queue` more waiting (503 beyond), a per-request timeout
(504), images only inline (no URL fetched, no path read), every error a JSON object without a traceback,
and one JSON access-log line per request.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import json
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from PIL import Image
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from captioner.decoding.captioning import ImageCaptioner
from captioner.decoding.options import DEFAULT_DECODING, Caption, DecodeOptions
from captioner.errors import CaptionerError
from captioner.serving.server_schemas import (
    ApiError,
    CaptionRequest,
    OllamaChat,
    OllamaGenerate,
    OpenAIChat,
    answer_text,
    caption_json,
    decode_image,
    error_body,
    json_wanted,
    ollama_reply,
    openai_chunks,
    openai_images_and_prompt,
    openai_reply,
)

ACCESS = logging.getLogger("captioner.access")
OPEN_PATHS = ("/health", "/docs", "/openapi.json")  # no captions, no data: reachable without the token
#: Words in a prompt that pick a caption language ("describe this in German"), by language code.
LANGUAGE_WORDS = {"en": ("english",), "de": ("german", "deutsch"), "zh": ("chinese", "mandarin", "中文", "汉语"),
                  "fr": ("french", "français"), "cs": ("czech",), "tr": ("turkish",), "ar": ("arabic",),
                  "id": ("indonesian",)}


@dataclass
class ServerConfig:
    """The limits of a server; the defaults suit one machine answering a photo library."""

    token: str | None = None
    max_body_bytes: int = 20 * 2**20
    max_pixels: int = 50_000_000
    workers: int = 1  # captions computed at once (each one already uses every core)
    queue: int = 16  # requests waiting for a worker; more get 503
    timeout_s: float = 60.0


@dataclass
class ServedModel:
    """One loaded captioner and the name clients call it by, e.g. captioner:en."""

    name: str
    captioner: ImageCaptioner

    @property
    def lang(self) -> str:
        return self.captioner.vocab.lang


def prompt_language(prompt: str) -> str | None:
    """The language a prompt asks for ("in German"), if it names one."""
    lowered = prompt.lower()
    for lang, words in LANGUAGE_WORDS.items():
        if any(re.search(rf"\b{re.escape(w)}\b", lowered) if w.isascii() else w in lowered for w in words):
            return lang
    return None


class Gate:
    """At most `workers` captions at once and `queue` waiting; a full queue is 503, a slow caption 504."""

    def __init__(self, workers: int, queue: int, timeout_s: float):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caption")
        self._slots = asyncio.Semaphore(workers)
        self._limit, self._admitted, self._timeout = workers + queue, 0, timeout_s

    async def run(self, work: Callable[[], Any]) -> Any:
        if self._admitted >= self._limit:
            raise ApiError(503, f"the server is busy ({self._limit} requests in progress or queued); retry shortly.")
        self._admitted += 1
        try:
            return await asyncio.wait_for(self._in_slot(work), self._timeout)
        except asyncio.TimeoutError:
            raise ApiError(504, f"captioning took longer than {self._timeout:g} s; retry, or send a smaller "
                                f"image.") from None
        finally:
            self._admitted -= 1

    async def _in_slot(self, work: Callable[[], Any]) -> Any:
        async with self._slots:  # a timed-out caption finishes on its thread; the pool bounds those too
            return await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._pool, work))


class Limits:
    """Pure ASGI middleware: bearer token, body size (read up to the limit, then replayed), access log."""

    def __init__(self, app, config: ServerConfig):
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, path, status = time.perf_counter(), scope["path"], {"code": 0}

        async def logged_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        size = 0
        try:
            refusal = self._refusal(scope)
            if refusal is None:
                body, size = await self._read(scope, receive)
                if body is None:
                    refusal = ApiError(413, f"the request body is over {self.config.max_body_bytes:,} bytes; "
                                            f"send a smaller image.")
            if refusal is not None:
                response = error_response(path, refusal.status, refusal.message)
                if refusal.status == 401:
                    response.headers["WWW-Authenticate"] = "Bearer"
                return await response(scope, receive, logged_send)

            sent = False

            async def replay():  # the body once, then the real channel (a disconnect, for streaming replies)
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, logged_send)
        finally:
            client = scope.get("client") or ("", 0)
            ACCESS.info(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "client": client[0],
                                    "method": scope["method"], "path": path, "status": status["code"],
                                    "bytes_in": size, "ms": round((time.perf_counter() - start) * 1000, 1)}))

    def _refusal(self, scope) -> ApiError | None:
        """401 without the token, 413 at once when Content-Length says the body is too big."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        token = self.config.token
        if token and scope["path"] not in OPEN_PATHS:
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return ApiError(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'.")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.config.max_body_bytes:
            return ApiError(413, f"the request body is over {self.config.max_body_bytes:,} bytes; send a "
                                 f"smaller image.")
        return None

    async def _read(self, scope, receive) -> tuple[bytes | None, int]:
        """The whole body, or None once it passes the limit (a client may send no Content-Length)."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.config.max_body_bytes:
                return None, size
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks), size


def error_response(path: str, status: int, message: str) -> JSONResponse:
    """An error as JSON, in the shape of the API the path belongs to."""
    return JSONResponse(error_body(message, status, "ollama" if path.startswith("/api/") else "openai"), status)


def create_app(models: list[ServedModel], config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI application serving `models` (the first is the default)."""
    config = config or ServerConfig()
    if not models:
        raise CaptionerError("no model to serve.")
    app = FastAPI(title="captioner", version="0.1.0", summary="Image captions over HTTP: captioner's own API, "
                  "Ollama's /api/generate and /api/chat, OpenAI's /v1/chat/completions.")
    gate = Gate(config.workers, config.queue, config.timeout_s)
    by_name = {m.name: m for m in models}

    def pick(name: str | None, prompt: str = "", lang: str | None = None) -> ServedModel:
        """The model named (with or without "captioner:" and ":latest"), else one of the language asked for
        (by `lang` or in the prompt), else the default: a prompt never breaks a request."""
        if name:
            bare = name.removesuffix(":latest")
            for candidate in (bare, f"captioner:{bare}", bare.removeprefix("captioner:")):
                if candidate in by_name:
                    return by_name[candidate]
        wanted = lang or prompt_language(prompt)
        return next((m for m in models if m.lang == wanted), models[0])

    def check_pixels(data: bytes) -> None:
        try:
            width, height = Image.open(io.BytesIO(data)).size  # the header only; nothing decoded yet
        except Exception:  # not an image at all: load_image says so, as a 400
            return
        if width * height > config.max_pixels:
            raise ApiError(413, f"the image is {width}x{height} pixels; this server takes at most "
                                f"{config.max_pixels:,}: downscale it first.")

    async def caption(served: ServedModel, image: Any, options: DecodeOptions = DEFAULT_DECODING) -> Caption:
        data = decode_image(image)
        check_pixels(data)

        def work() -> Caption:
            return served.captioner.caption(data, options)

        try:
            return await gate.run(work)
        except CaptionerError as error:  # ImageError: not an image, corrupt, too large
            raise ApiError(400, str(error).replace("uploaded image: ", "image: ")) from None

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return error_response(request.url.path, error.status, error.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return error_response(request.url.path, error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(request.url.path, 400, f"invalid request: {where}: {first.get('msg', 'bad value')}.")

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception):
        logging.getLogger("captioner.server").error("internal error on %s: %r", request.url.path, error)
        return error_response(request.url.path, 500, "internal error; the server log has the details.")

    async def parse(request: Request, schema):
        try:
            return schema.model_validate(json.loads(await request.body() or b"null"))
        except json.JSONDecodeError as error:
            raise ApiError(400, f"the request body is not JSON ({error.msg}).") from None
        except ValidationError as error:
            raise RequestValidationError(error.errors()) from None

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": [m.name for m in models]}

    multipart_doc = {"requestBody": {"content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"}, "model": {"type": "string"},
            "lang": {"type": "string"}, "beam": {"type": "integer"}, "n_best": {"type": "integer"}}}},
        "application/json": {"schema": CaptionRequest.model_json_schema()}}}}

    @app.post("/v1/captions", openapi_extra=multipart_doc)
    async def captions(request: Request):
        """Caption one image: multipart field `file`, or JSON with `image` as base64; options as fields or query."""
        fields: dict[str, Any] = dict(request.query_params)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "send the image as the multipart file field 'file'.")
            fields.update({k: v for k, v in form.items() if k != "file"})
            fields["image"] = base64.b64encode(await upload.read()).decode()
            body = CaptionRequest.model_validate(fields)
        else:
            body = await parse(request, CaptionRequest)
            body = CaptionRequest.model_validate({**body.model_dump(exclude_unset=True), **fields})
        if body.n_best > body.beam:
            raise ApiError(400, f"n_best ({body.n_best}) must be at most beam ({body.beam}).")
        served = pick(body.model, lang=body.lang)
        result = await caption(served, body.image, DecodeOptions(beam_size=body.beam, n_best=body.n_best))
        return caption_json(result, served.name, served.lang)

    @app.get("/api/tags")
    async def ollama_tags():
        return {"models": [{"name": m.name, "model": m.name, "modified_at": "2024-01-01T00:00:00Z", "size": 0,
                            "digest": "", "details": {"format": "captioner", "family": "captioner",
                                                      "families": ["captioner"], "parameter_size": "",
                                                      "quantization_level": ""}} for m in models]}

    @app.get("/api/version")
    async def ollama_version():
        return {"version": "0.6.0"}

    async def ollama(served: ServedModel, images: list[str], fmt, stream: bool, chat: bool):
        if not images:
            raise ApiError(400, "no image: send one as base64 in 'images'.")
        start = time.perf_counter()
        result = await caption(served, images[-1])
        text = answer_text(result, served.lang, json_wanted(fmt))
        seconds = time.perf_counter() - start
        if not stream:
            return ollama_reply(served.name, text, seconds, chat, tokens=len(result.words))
        lines = [ollama_reply(served.name, text, seconds, chat, done=False),
                 ollama_reply(served.name, "", seconds, chat, tokens=len(result.words))]
        return StreamingResponse((json.dumps(line, ensure_ascii=False) + "\n" for line in lines),
                                 media_type="application/x-ndjson")

    @app.post("/api/generate")
    async def ollama_generate(request: Request):
        """Ollama's generate: `images` as base64, the caption in `response`."""
        body = await parse(request, OllamaGenerate)
        return await ollama(pick(body.model, body.prompt), body.images, body.format, body.stream, chat=False)

    @app.post("/api/chat")
    async def ollama_chat(request: Request):
        """Ollama's chat: the images of the messages as base64, the caption in `message.content`."""
        body = await parse(request, OllamaChat)
        images = [image for message in body.messages for image in message.images or []]
        prompt = " ".join(message.content for message in body.messages)
        return await ollama(pick(body.model, prompt), images, body.format, body.stream, chat=True)

    @app.get("/v1/models")
    async def openai_models():
        return {"object": "list", "data": [{"id": m.name, "object": "model", "created": 0, "owned_by": "captioner"}
                                           for m in models]}

    @app.post("/v1/chat/completions")
    async def openai_chat(request: Request):
        """OpenAI's chat completions: an image_url content part holding a data: URL."""
        body = await parse(request, OpenAIChat)
        images, prompt = openai_images_and_prompt(body)
        if not images:
            raise ApiError(400, "no image: send one as an image_url content part with a data: URL.")
        served = pick(body.model, prompt)
        result = await caption(served, images[-1])
        as_json = (body.response_format or {}).get("type") in ("json_object", "json_schema")
        text = answer_text(result, served.lang, as_json)
        if not body.stream:
            return openai_reply(served.name, text, len(result.words))
        events = [f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n" for chunk in openai_chunks(served.name, text)]
        return StreamingResponse(iter([*events, "data: [DONE]\n\n"]), media_type="text/event-stream")

    app.add_middleware(Limits, config=config)
    return app
