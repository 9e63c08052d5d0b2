"""What `captioner serve` reads and answers: the request bodies (validated by pydantic) and the replies in
captioner's own, Ollama's and OpenAI's shapes. No FastAPI here: these are plain data."""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from captioner.decoding.options import Caption


class ApiError(Exception):
    """A request the server refuses: the HTTP status and a one-line message that says what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send fields we do not use (keep_alive, options, …)


class CaptionRequest(_Open):
    """POST /v1/captions as JSON (multipart takes the same fields as form or query fields)."""

    image: str = Field(description="the image as base64, or a data: URL")
    model: str | None = Field(None, description="a name from GET /v1/models; default: the first model")
    lang: str | None = Field(None, description="caption language (en, de, zh…) among the loaded models")
    beam: int = Field(3, ge=1, le=10, description="beam width; 1 = greedy")
    n_best: int = Field(1, ge=1, le=10, description="how many captions to return, at most beam")


class OllamaGenerate(_Open):
    """Ollama's POST /api/generate."""

    model: str = ""
    prompt: str = ""
    images: list[str] = Field(default_factory=list)
    stream: bool = True
    format: str | dict | None = None


class OllamaMessage(_Open):
    role: str = "user"
    content: str = ""
    images: list[str] | None = None


class OllamaChat(_Open):
    """Ollama's POST /api/chat."""

    model: str = ""
    messages: list[OllamaMessage]
    stream: bool = True
    format: str | dict | None = None


class OpenAIMessage(_Open):
    role: str = "user"
    content: str | list[dict[str, Any]] | None = None


class OpenAIChat(_Open):
    """OpenAI's POST /v1/chat/completions with image_url content parts (data: URLs only)."""

    model: str = ""
    messages: list[OpenAIMessage]
    stream: bool = False
    response_format: dict | None = None


_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, file:, ftp:, s3: …
INLINE_ONLY = ("images must be sent inline, as base64 or a data: URL; this server never fetches URLs or reads "
               "files")


def decode_image(value: Any) -> bytes:
    """Image bytes from a base64 string or a data: URL; ApiError 400 for a URL, a path or anything else."""
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "an image must be a non-empty base64 string or data: URL.")
    text = value.strip()
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise ApiError(400, "a data: URL image must be base64 (data:image/jpeg;base64,...).")
    elif _URL.match(text):  # base64 has no ":"
        raise ApiError(400, f"{INLINE_ONLY}: got a URL.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        looks_like_path = len(text) < 4096 and any(c in text for c in "/\\.~")
        raise ApiError(400, f"{INLINE_ONLY}: got a file path." if looks_like_path
                       else "the image is not valid base64 data.") from None


def tag_list(caption: Caption) -> list[dict]:
    """The caption's ImageNet tags as name and probability; [] for a model without a classifier."""
    return [{"name": t.name, "probability": round(float(t.probability), 4)} for t in caption.tags]


def caption_json(caption: Caption, model: str, lang: str) -> dict:
    """captioner's own reply: the caption, its confidence, the n-best list, tags, the tag words it names because of
    them (grounded_by), language and model."""
    return {"caption": caption.text, "confidence": round(caption.confidence, 4),
            "n_best": [{"caption": c.text, "confidence": round(c.confidence, 4)} for c in caption.ranked],
            "tags": tag_list(caption), "grounded_by": caption.grounded_by, "language": lang, "model": model}


def answer_text(caption: Caption, lang: str, as_json: bool) -> str:
    """The text a chat reply carries: the caption, or with JSON output the caption and tags as an object."""
    if not as_json:
        return caption.text
    return json.dumps({"caption": caption.text, "confidence": round(caption.confidence, 4), "language": lang,
                       "tags": tag_list(caption)}, ensure_ascii=False)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def ollama_reply(model: str, text: str, seconds: float, chat: bool, done: bool = True, tokens: int = 0) -> dict:
    """One Ollama reply object (or the last stream chunk), timings in nanoseconds as Ollama gives them."""
    body: dict[str, Any] = {"model": model, "created_at": _now()}
    if chat:
        body["message"] = {"role": "assistant", "content": text}
    else:
        body["response"] = text
    body["done"] = done
    if done:
        ns = int(seconds * 1e9)
        body.update(done_reason="stop", total_duration=ns, load_duration=0, prompt_eval_count=0,
                    prompt_eval_duration=0, eval_count=tokens, eval_duration=ns)
    return body


def openai_reply(model: str, text: str, tokens: int) -> dict:
    """An OpenAI chat.completion object."""
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                         "logprobs": None}],
            "usage": {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}}


def openai_chunks(model: str, text: str) -> list[dict]:
    """The chat.completion.chunk objects of a streamed reply: the text, then the stop."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "system_fingerprint": None}
    return [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                                  "finish_reason": None, "logprobs": None}]},
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]}]


def openai_images_and_prompt(chat: OpenAIChat) -> tuple[list[str], str]:
    """The image_url parts (data: URLs) and the text of a chat, last user message first."""
    images, prompt = [], []
    for message in chat.messages:
        if isinstance(message.content, str):
            prompt.append(message.content)
            continue
        for part in message.content or []:
            kind = part.get("type")
            if kind == "text":
                prompt.append(str(part.get("text", "")))
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str) or not url.startswith("data:"):
                    raise ApiError(400, f"{INLINE_ONLY}: image_url must be a data: URL (data:image/jpeg;base64,...).")
                images.append(url)
    return images, " ".join(prompt)


def json_wanted(fmt: str | dict | None) -> bool:
    """Ollama's `format`: "json" or a JSON schema both ask for a JSON object."""
    return fmt == "json" or isinstance(fmt, dict)


ErrorShape = Literal["ollama", "openai"]


def error_body(message: str, status: int, shape: ErrorShape) -> dict:
    """An error as the client's API writes it: Ollama {"error": "..."}, OpenAI {"error": {"message": ...}}."""
    if shape == "ollama":
        return {"error": message}
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "code": status}}
