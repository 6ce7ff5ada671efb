"""The SageMaker CLIP container (seed 003): `{"images": [...], "classes": [[label, class_id], ...]}`.

Answers a list with one `{"classification", "confidence", "prompts": [indices, labels, probabilities]}` per
image; with plain-string classes (the older form) each image's answer is just the `prompts` triple. The
original's fixed template, top 3 and 0.02 margin are the defaults; `prompt_template`, `top_k`, `margin` and
`logit_scale` in the body (or the custom-attributes header) override them.
"""
from __future__ import annotations

from typing import Any, Mapping

from .. import tasks
from . import fields

OPTIONS = {"prompt_template", "top_k", "margin", "logit_scale"}
KEYS = {"images", "classes"} | OPTIONS


def parse_classify(body: dict, options: Mapping[str, Any], limits: fields.Limits) -> tasks.ClassifyTask:
    body = fields.with_options(body, options, OPTIONS)
    labels, class_ids = fields.classes(body, limits)
    images = fields.images(body, "images", limits)
    template = fields.prompt_template(body, "prompt_template", tasks.DEFAULT_PROMPT_TEMPLATE)
    fields.check_prompt_lengths(template, labels, "prompt_template", limits)
    return tasks.ClassifyTask(
        images=images,
        labels=labels,
        class_ids=class_ids,
        prompt_template=template,
        top_k=fields.integer(body, "top_k", tasks.DEFAULT_TOP_K, 1),
        margin=fields.number(body, "margin", tasks.DEFAULT_MARGIN, 0.0, 1.0),
        logit_scale=fields.number(body, "logit_scale", tasks.DEFAULT_CLASSIFY_SCALE, 0.0, 1000.0),
    )


def prompts_triple(c: tasks.Classification) -> list:
    return [c.top_indices, c.top_labels, c.top_probabilities]


def render(result: list[tasks.Classification], ctx: Any) -> list:
    return [prompts_triple(c) if c.classification is None else
            {"classification": c.classification, "confidence": c.confidence, "prompts": prompts_triple(c)}
            for c in result]


def parse(body: Any, options: Mapping[str, Any], limits: fields.Limits):
    return parse_classify(fields.require_object(body, "labelled classification"), options, limits), render
