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

Before that, a top-level field that no format knows but that is close to one a format does know (`Task`,
`taks` → `task`; `normalise` → `normalize`) is a 400 naming the field it probably meant: detection would
otherwise read the body as another format, or ignore the option. Other unknown fields are left to the
format: the task format refuses them all, the earlier systems' formats ignore them as their originals did.
A body that no format matches is a 400 naming the formats.

Each earlier system's own route names its format (Pipeline.call), so its bodies never need detecting (nor
checking for misspellings: they behave as their originals did); so do the integrations' routes (Weaviate's
`/vectorize` takes weaviate_clip.py's format, never detected).
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
from .fields import Limits, misspelt, probably_meant, type_name


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


@dataclass(frozen=True)
class Format:
    """A request format: `shape` says in an error what its bodies look like; `fields` are the top-level
    fields it knows (the misspelling check's vocabulary)."""
    name: str
    shape: str
    matches: Callable[[Any], bool]
    parse: Parse
    fields: frozenset[str] = frozenset()


def _is_object_with(*keys: str) -> Callable[[Any], bool]:
    return lambda body: isinstance(body, dict) and all(k in body for k in keys)


FORMATS: tuple[Format, ...] = (
    Format("task", '{"task": "embed" | "rank" | "classify", ...}', _is_object_with("task"),
           task_format.parse, frozenset(task_format.FIELDS)),
    Format("encode", "a list of items (CLIP-API-service /encode)", lambda body: isinstance(body, list),
           clip_api_service.parse_encode),
    Format("rank", '{"queries", "candidates"} (CLIP-API-service /rank)', _is_object_with("queries", "candidates"),
           clip_api_service.parse_rank, frozenset(clip_api_service.RANK_FIELDS)),
    Format("sagemaker_clip", '{"images", "classes"} (the SageMaker CLIP container)',
           _is_object_with("images", "classes"), sagemaker_clip.parse, frozenset(sagemaker_clip.KEYS)),
    Format("embed", '{"texts"} (OpenCLIP as a Service /embed)', _is_object_with("texts"), openclip_service.parse,
           frozenset(openclip_service.FIELDS)),
    Format("embeddings", '{"text" and/or "image"} (OpenCLIP-API /embeddings)',
           lambda body: isinstance(body, dict) and ("text" in body or "image" in body), openclip_api.parse,
           frozenset(openclip_api.FIELDS)),
    Format("openai_embeddings", '{"input", "model"?} (OpenAI embeddings)', _is_object_with("input"),
           openai_embeddings.parse, frozenset(openai_embeddings.KEYS)),
)
_PARSERS = {f.name: f.parse for f in FORMATS}
_PARSERS["weaviate_vectorize"] = weaviate_clip.parse
KNOWN_FIELDS = frozenset().union(*(f.fields for f in FORMATS))


def _refuse_misspelt_fields(body: dict) -> None:
    for name in body:
        if name not in KNOWN_FIELDS:
            meant = probably_meant(name, KNOWN_FIELDS)
            if meant is not None:
                raise misspelt(name, meant, "/invocations")


def format_of(body: Any) -> str:
    """The format of a body posted to /invocations, first match wins; a misspelt field or a body no format
    matches is refused, naming what was probably meant or the formats there are."""
    if isinstance(body, dict):
        _refuse_misspelt_fields(body)
    for candidate in FORMATS:
        if candidate.matches(body):
            return candidate.name
    shapes = "; ".join(f.shape for f in FORMATS)
    found = (f"keys: {', '.join(sorted(body)) or 'none'}" if isinstance(body, dict)
             else f"the body is {type_name(body)}")
    raise ApiError(f"unrecognised request format ({found}); /invocations takes one of: {shapes} "
                   f"(see docs/api.md)", code="unknown_format")


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
