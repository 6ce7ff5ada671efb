"""Request formats: each turns a decoded JSON body into one internal task plus a renderer for its answer.

`detect` picks the format of a body posted to /invocations from its keys (the rule the README documents):
1. an object with a `task` field is this container's own format (protocols/general.py);
2. an object with `images` and `classes` is the SageMaker CLIP container's labelled classification (seed 003).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ApiError
from ..tasks import Result, Task
from . import general, labelled_classes
from .fields import type_name

Render = Callable[[Result, Any], Any]


@dataclass(frozen=True)
class Call:
    """What a request asks for, and how to turn the task's result into that format's answer."""
    task: Task
    render: Render


def detect(body: Any, max_items: int) -> Call:
    if isinstance(body, dict):
        if "task" in body:
            return Call(*general.parse(body, max_items))
        if "images" in body and "classes" in body:
            return Call(*labelled_classes.parse(body, max_items))
        keys = ", ".join(sorted(body)) or "none"
        raise ApiError(f"unrecognised request format (keys: {keys}); send {{\"task\": \"embed\" | \"rank\" | "
                       f"\"classify\", ...}} or one of the formats in the README", code="unknown_format")
    raise ApiError(f"unrecognised request format: the body is {type_name(body)}, expected a JSON object",
                   code="unknown_format")
