"""Validation of JSON request fields, shared by every request format.

Each helper returns the clean value or raises an ApiError naming the field path (`classes[2][0]`).
"""
from __future__ import annotations

import difflib
import string
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from ..errors import ApiError, invalid
from ..inputs import ImageSource
from ..tasks import Item, render_prompt

_MISSING = object()
_PLACEHOLDERS = ("", "0", "label")  # {}, {0} and {label}: the label itself


@dataclass(frozen=True)
class Limits:
    """How much one request may hold (MAX_ITEMS, MAX_TEXT_CHARS, MAX_CLASSIFY_PROMPTS)."""
    max_items: int = 256
    max_text_chars: int = 10_000
    max_classify_prompts: int = 4096


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def require_object(body: Any, what: str) -> dict:
    if not isinstance(body, dict):
        raise ApiError(f"the request body must be a JSON object for {what}, got {type_name(body)}",
                       code="invalid_request")
    return body


def probably_meant(name: str, known: set[str]) -> Optional[str]:
    """The known field an unknown one is most likely a misspelling of (`Task`, `taks` → `task`), or None."""
    if not isinstance(name, str):
        return None
    folded = {k.lower(): k for k in known}
    if name.lower() in folded:
        return folded[name.lower()]
    # 0.75 takes one swapped or wrong letter in a four-letter name (taks), and not words that merely share
    # letters (model / image); a wrong guess costs only a 400 naming both fields.
    close = difflib.get_close_matches(name.lower(), list(folded), n=1, cutoff=0.75)
    return folded[close[0]] if close else None


def misspelt(name: str, meant: str, where: str) -> ApiError:
    return ApiError(f"unknown field {name!r} for {where}: did you mean {meant!r}?", code="unknown_field",
                    field=name)


def reject_unknown(body: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        guesses = [f"{name!r}: did you mean {meant!r}?" for name in unknown
                   if (meant := probably_meant(name, allowed)) is not None]
        hint = f" ({'; '.join(guesses)})" if guesses else ""
        raise ApiError(f"unknown field(s) {', '.join(unknown)} for {where}{hint}; allowed: "
                       f"{', '.join(sorted(allowed))}", code="unknown_field", field=unknown[0])


def text(value: Any, field: str, limits: Limits, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise invalid(field, f"must be a string, got {type_name(value)}")
    if not allow_empty and not value.strip():
        raise invalid(field, "must not be empty", code="empty_text")
    if len(value) > limits.max_text_chars:
        raise ApiError(f"{field}: {len(value)} characters, above the limit of {limits.max_text_chars} "
                       f"(MAX_TEXT_CHARS)", code="text_too_long", field=field, status=413)
    return value


def image(value: Any, field: str) -> ImageSource:
    if not isinstance(value, str):
        raise invalid(field, f"must be a string (base64 or data: URI), got {type_name(value)}")
    return ImageSource(value, field)


def as_list(value: Any, field: str, limits: Limits, required: bool = True) -> list:
    if value is _MISSING or value is None:
        if required:
            raise ApiError(f"{field}: this field is required", code="missing_field", field=field)
        return []
    if not isinstance(value, list):
        raise invalid(field, f"must be a list, got {type_name(value)}")
    if required and not value:
        raise invalid(field, "must not be empty", code="empty_list")
    if len(value) > limits.max_items:
        raise ApiError(f"{field}: {len(value)} items, above the limit of {limits.max_items} (MAX_ITEMS)",
                       code="too_many_items", field=field, status=413)
    return value


def items_list(body: dict, key: str, limits: Limits, required: bool = True) -> list:
    return as_list(body.get(key, _MISSING), key, limits, required)


def item_object(value: Any, field: str, limits: Limits) -> Item:
    """An item given as an object of its modality, {"text": "..."} or {"image": "..."} → a tasks.Item."""
    if not isinstance(value, dict) or len(value) != 1 or not ({"text", "image"} & set(value)):
        raise invalid(field, 'must be {"text": "..."} or {"image": "<base64, data URI or URL>"}')
    if "text" in value:
        return Item(text(value["text"], f"{field}.text", limits))
    return Item(image(value["image"], f"{field}.image"))


def check_total(texts: tuple, images: tuple, limits: Limits) -> None:
    """Texts and images of one request together are held to MAX_ITEMS, as each list is on its own."""
    if len(texts) + len(images) > limits.max_items:
        raise ApiError(f"{len(texts) + len(images)} texts and images together, above the limit of "
                       f"{limits.max_items} (MAX_ITEMS)", code="too_many_items", status=413)


def with_options(body: dict, options: Mapping[str, Any], accepted: set[str]) -> dict:
    """The body with the header options it accepts filled in; a field in the body itself wins."""
    return {**{k: v for k, v in options.items() if k in accepted}, **body}


def texts(body: dict, key: str, limits: Limits, required: bool = True, allow_empty: bool = False) -> tuple[str, ...]:
    return tuple(text(v, f"{key}[{i}]", limits, allow_empty)
                 for i, v in enumerate(items_list(body, key, limits, required)))


def images(body: dict, key: str, limits: Limits, required: bool = True) -> tuple[ImageSource, ...]:
    return tuple(image(v, f"{key}[{i}]") for i, v in enumerate(items_list(body, key, limits, required)))


# For every option, null means "the default", as leaving the field out does.

def boolean(body: dict, key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(key, f"must be true or false, got {type_name(value)}")
    return value


def number(body: dict, key: str, default: Optional[float], minimum: float, maximum: float) -> Optional[float]:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(key, f"must be a number, got {type_name(value)}")
    if not minimum <= value <= maximum:
        raise invalid(key, f"must be between {minimum:g} and {maximum:g}, got {value}")
    return float(value)


def integer(body: dict, key: str, default: int, minimum: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(key, f"must be a whole number, got {type_name(value)}")
    if value < minimum:
        raise invalid(key, f"must be at least {minimum}, got {value}")
    return value


def prompt_template(body: dict, key: str, default: str) -> str:
    value = body.get(key)
    if value is None:
        return default
    return template(value, key)


def template(value: Any, key: str) -> str:
    """One prompt template: a string whose only placeholders are the label's ({label}, {} or {0})."""
    if not isinstance(value, str):
        raise invalid(key, f"must be a string, got {type_name(value)}")
    try:
        # Only plain placeholders: a format spec such as {label:>999999999} would build a gigabyte per prompt.
        for _, name, spec, conversion in string.Formatter().parse(value):
            if name is not None and (name not in _PLACEHOLDERS or spec or conversion):
                placeholder = f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
                raise ValueError(f"{placeholder} is not a placeholder: no format specs, conversions, attributes "
                                 f"or indexes")
        probe = render_prompt(value, "\x00")
    except (IndexError, KeyError, ValueError, AttributeError, TypeError) as exc:
        raise invalid(key, f"is not a valid template ({exc}); write the label as {{label}} or {{}}") from None
    if "\x00" not in probe:
        raise invalid(key, "must contain the label placeholder {label} or {}")
    return value


def prompt_templates(body: dict, labels: tuple[str, ...], default: str,
                     limits: Limits) -> Union[tuple[str, ...], str]:
    """`prompt_templates` (a list of templates, or the name of a set, which the model layer resolves) or
    `prompt_template` (one): the templates every label becomes prompts through."""
    value = body.get("prompt_templates")
    if value is None:
        one = prompt_template(body, "prompt_template", default)
        check_prompt_lengths(one, labels, "prompt_template", limits)
        return (one,)
    if body.get("prompt_template") is not None:
        raise ApiError("give prompt_template (one template) or prompt_templates (several, or a set's name), not "
                       "both", code="conflicting_fields", field="prompt_templates")
    if isinstance(value, str):
        if not value.strip():
            raise invalid("prompt_templates", "must name a template set or be a list of templates")
        return value
    templates = tuple(template(v, f"prompt_templates[{i}]")
                      for i, v in enumerate(as_list(value, "prompt_templates", limits)))
    for i, one in enumerate(templates):
        check_prompt_lengths(one, labels, f"prompt_templates[{i}]", limits)
    return templates


def check_prompt_lengths(template: str, labels: tuple[str, ...], key: str, limits: Limits) -> None:
    """Every prompt the template makes is a text, held to MAX_TEXT_CHARS; measured without rendering it."""
    placeholders = sum(1 for _, name, _, _ in string.Formatter().parse(template) if name is not None)
    longest = len(render_prompt(template, "")) + placeholders * max(map(len, labels), default=0)
    if longest > limits.max_text_chars:
        raise ApiError(f"{key}: the prompts it makes are up to {longest} characters, above the limit of "
                       f"{limits.max_text_chars} (MAX_TEXT_CHARS)", code="text_too_long", field=key, status=413)


def classes(body: dict, limits: Limits) -> tuple[tuple[str, ...], Optional[tuple[Any, ...]]]:
    """`[[label, class_id], ...]` or plain `[label, ...]` → (labels, class ids or None)."""
    raw = items_list(body, "classes", limits)
    labelled = isinstance(raw[0], list)
    labels, ids = [], []
    for i, entry in enumerate(raw):
        field = f"classes[{i}]"
        if labelled:
            if not isinstance(entry, list) or len(entry) != 2:
                raise invalid(field, "must be a [label, class_id] pair like the other classes")
            label, class_id = entry
            if isinstance(class_id, (list, dict)):
                raise invalid(f"{field}[1]", f"the class id must be a number, string or boolean, got "
                                             f"{type_name(class_id)}")
            labels.append(text(label, f"{field}[0]", limits))
            ids.append(class_id)
        else:
            if isinstance(entry, list):
                raise invalid(field, "mixes a [label, class_id] pair with plain-string classes")
            labels.append(text(entry, field, limits))
    return tuple(labels), (tuple(ids) if labelled else None)


def query_integer(args: Mapping[str, str], key: str, default: int, minimum: int) -> int:
    """A whole number given in the query string (`?limit=10`)."""
    value = args.get(key)
    if value is None or not value.strip():
        return default
    try:
        return integer({key: int(value)}, key, default, minimum)
    except ValueError:
        raise invalid(key, f"must be a whole number, got {value[:40]!r}") from None


def _required_string(body: dict, key: str, max_chars: int) -> str:
    value = body.get(key)
    if value is None:
        raise invalid(key, "is required", code="missing_field")
    if not isinstance(value, str):
        raise invalid(key, f"must be a string, got {type_name(value)}")
    if not value.strip() or len(value) > max_chars:
        raise invalid(key, f"must be 1 to {max_chars} characters, got {len(value.strip())}")
    return value


def model_load(body: Any) -> tuple[str, str]:
    """A multi-model endpoint's load request, `{"model_name": ..., "url": ...}` → (name, url). Other fields
    are let through: the body is SageMaker's contract, which may grow, not a format of ours."""
    body = require_object(body, "loading a model")
    name = _required_string(body, "model_name", 1024)
    if "/" in name or not name.isprintable():
        raise invalid("model_name", "must not hold '/' or control characters: it is part of the model's routes")
    return name, _required_string(body, "url", 4096)
