"""Request formats: each turns a decoded JSON body into one internal task, plus a renderer for its answer.

`format_of` names the format of a body posted to /invocations from its shape, first match wins (the rule
the README documents; `detect` parses the body in it):

1. an object with `task`                    → the task format, this container's own (task_format.py)
2. a list                                   → CLIP-API-service's `/encode` (clip_api_service.py)
3. an object with `queries` + `candidates`  → CLIP-API-service's `/rank`
4. an object with `images` + `classes`      → the SageMaker CLIP container's classification (sagemaker_clip.py)
5. an object with `texts`                   → OpenCLIP as a Service's `/embed` (openclip_service.py)
6. an object with `text` and/or `image`     → OpenCLIP-API's `/embeddings` (openclip_api.py)
7. an object with `input`                   → OpenAI's embeddings API (openai_embeddings.py)

Each earlier system's own route calls `parse_as` with its format, so its bodies never need detecting; so do
the integrations' routes (Weaviate's `/vectorize` takes weaviate_clip.py's format, never detected).
`options` come from the X-Amzn-SageMaker-Custom-Attributes header; a body's own fields win over them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import ApiError
from ..tasks import Classification, EmbedResult, RankResult, Result, Task
from . import (clip_api_service, openai_embeddings, openclip_api, openclip_service, sagemaker_clip, task_format,
               weaviate_clip)
from .fields import Limits, type_name


@dataclass(frozen=True)
class Context:
    """What a renderer may need besides the result: the model's description and the request's start."""
    info: Any
    started: float = field(default_factory=time.monotonic)

    def duration(self) -> float:
        return time.monotonic() - self.started


Render = Callable[[Result, Context], Any]
Check = Callable[[Any], None]
Parse = Callable[[Any, Mapping[str, Any], int], "tuple[Task, Render] | tuple[Task, Render, Check]"]


def _fits_any_model(info: Any) -> None:
    """The Check of formats that ask nothing of the served model."""


@dataclass(frozen=True)
class Call:
    """What a request asks for, how to turn the task's result into that format's answer, and what the request
    needs of the served model (`check(info)` raises an ApiError before any work when the model cannot do it)."""
    task: Task
    render: Render
    check: Check = _fits_any_model


def _is_object_with(*keys: str) -> Callable[[Any], bool]:
    return lambda body: isinstance(body, dict) and all(k in body for k in keys)


FORMATS: tuple[tuple[str, Callable[[Any], bool], Parse], ...] = (
    ("task", _is_object_with("task"), task_format.parse),
    ("encode", lambda body: isinstance(body, list), clip_api_service.parse_encode),
    ("rank", _is_object_with("queries", "candidates"), clip_api_service.parse_rank),
    ("sagemaker_clip", _is_object_with("images", "classes"), sagemaker_clip.parse),
    ("embed", _is_object_with("texts"), openclip_service.parse),
    ("embeddings", lambda body: isinstance(body, dict) and ("text" in body or "image" in body), openclip_api.parse),
    ("openai_embeddings", _is_object_with("input"), openai_embeddings.parse),
)
_PARSERS = {name: parse for name, _, parse in FORMATS}
_PARSERS["weaviate_vectorize"] = weaviate_clip.parse


def format_of(body: Any) -> str:
    for name, matches, _ in FORMATS:
        if matches(body):
            return name
    if isinstance(body, dict):
        keys = ", ".join(sorted(body)) or "none"
        raise ApiError(f"unrecognised request format (keys: {keys}); send {{\"task\": \"embed\" | \"rank\" | "
                       f"\"classify\", ...}} or one of the formats in the README", code="unknown_format")
    raise ApiError(f"unrecognised request format: the body is {type_name(body)}, expected a JSON object or list",
                   code="unknown_format")


def detect(body: Any, options: Mapping[str, Any], limits: Limits) -> Call:
    return parse_as(format_of(body), body, options, limits)


def parse_as(name: str, body: Any, options: Mapping[str, Any], limits: Limits) -> Call:
    return Call(*_PARSERS[name](body, options, limits))


def as_array(result: Result) -> np.ndarray:
    """The result as one float32 array, for `Accept: application/x-npy`: embeddings, or rank probabilities."""
    if isinstance(result, EmbedResult):
        return result.vectors.astype(np.float32)
    if isinstance(result, RankResult):
        return result.probabilities.astype(np.float32)
    if isinstance(result, list) and all(isinstance(c, Classification) for c in result):
        raise ApiError("a classification answer has no array form; ask for application/json",
                       code="not_acceptable", status=406)
    raise TypeError(f"no array form for {type(result).__name__}")
