"""The SageMaker CLIP container (seed 003): `{"images": [...], "classes": [[label, class_id], ...]}`.

Answers a list with one `{"classification", "confidence", "prompts": [indices, labels, probabilities]}` per
image; with plain-string classes (the older form) each image's answer is just the `prompts` triple. The
original's fixed template, top 3 and 0.02 margin are the defaults; `prompt_template` (or a prompt ensemble,
`prompt_templates`), `top_k`, `margin` and `logit_scale` in the body (or the custom-attributes header, whose
flat key=value pairs can name a template set but not hold a list) override them.
"""
from __future__ import annotations

from typing import Any, Mapping

from .. import tasks
from . import fields

TEMPLATE_OPTIONS = {"prompt_template", "prompt_templates"}
OPTIONS = TEMPLATE_OPTIONS | {"top_k", "margin", "logit_scale"}
KEYS = {"images", "classes"} | OPTIONS


def parse_classify(body: dict, options: Mapping[str, Any], limits: fields.Limits) -> tasks.ClassifyTask:
    # Templates given in the body replace the header's, in either spelling: the two fields are one option.
    accepted = OPTIONS - TEMPLATE_OPTIONS if TEMPLATE_OPTIONS & set(body) else OPTIONS
    body = fields.with_options(body, options, accepted)
    labels, class_ids = fields.classes(body, limits)
    images = fields.images(body, "images", limits)
    return tasks.ClassifyTask(
        images=images,
        labels=labels,
        class_ids=class_ids,
        templates=fields.prompt_templates(body, labels, tasks.DEFAULT_PROMPT_TEMPLATE, limits),
        top_k=fields.integer(body, "top_k", tasks.DEFAULT_TOP_K, 1),
        margin=fields.number(body, "margin", tasks.DEFAULT_MARGIN, 0.0, 1.0),
        logit_scale=fields.number(body, "logit_scale", tasks.DEFAULT_CLASSIFY_SCALE, 0.0, 1000.0),
        max_prompts=limits.max_classify_prompts,
    )


def prompts_triple(c: tasks.Classification) -> list:
    return [c.top_indices, c.top_labels, c.top_probabilities]


def render(result: list[tasks.Classification], ctx: Any) -> list:
    return [prompts_triple(c) if c.classification is None else
            {"classification": c.classification, "confidence": c.confidence, "prompts": prompts_triple(c)}
            for c in result]


def parse(body: Any, options: Mapping[str, Any], limits: fields.Limits):
    return parse_classify(fields.require_object(body, "labelled classification"), options, limits), render
