"""The prompt template sets open_clip ships, by the names requests give in `prompt_templates`.

open_clip writes its templates as functions (`lambda c: f"a photo of a {c}."`); requests and the tasks take
format strings (`"a photo of a {label}."`), so each function is turned into one here, once. Part of the model
layer: importing open_clip imports torch, which the HTTP layer must not.
"""
from __future__ import annotations

from typing import Callable, Iterable

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from .errors import invalid

_LABEL = "\x00"  # stands for the label while a template function is turned into a format string


def as_format_string(template: Callable[[str], str]) -> str:
    """The template function as a format string with `{label}`; braces of its own text are escaped."""
    text = template(_LABEL)
    return text.replace("{", "{{").replace("}", "}}").replace(_LABEL, "{label}")


def _format_strings(templates: Iterable[Callable[[str], str]]) -> tuple[str, ...]:
    return tuple(as_format_string(t) for t in templates)


# The CLIP paper's 80 ImageNet prompts, and the 7 its authors' notebook picked from them.
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "openai_imagenet": _format_strings(OPENAI_IMAGENET_TEMPLATES),
    "simple_imagenet": _format_strings(SIMPLE_IMAGENET_TEMPLATES),
}


def template_set(name: str) -> tuple[str, ...]:
    templates = TEMPLATE_SETS.get(name)
    if templates is None:
        known = ", ".join(f"{n} ({len(t)} templates)" for n, t in TEMPLATE_SETS.items())
        raise invalid("prompt_templates", f"{name!r} is not a template set; the sets are {known}; or give a list "
                                          f"of templates", code="unknown_template_set")
    return templates
