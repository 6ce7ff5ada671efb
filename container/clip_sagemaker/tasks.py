"""The three tasks (embed, rank, classify) as plain numpy math on top of two primitives, and `embed_each`,
which embeds items each on its own account (record-oriented requests: one answer or error per record).

An Encoder turns texts and image sources into unnormalised embeddings (the engine does that through the
batched model loop); everything here is scoring on top, so every API format shares one implementation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol, Sequence, Union

import numpy as np

from .errors import ApiError
from .inputs import ImageSource

# Seed 003's fixed semantics: prompt "a photo of a {label}", softmax of 100 x cosine, top 3, 0.02 margin.
DEFAULT_PROMPT_TEMPLATE = "a photo of a {label}"
DEFAULT_CLASSIFY_SCALE = 100.0
DEFAULT_TOP_K = 3
DEFAULT_MARGIN = 0.02


class Encoder(Protocol):
    logit_scale: float
    logit_bias: Optional[float]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_images(self, images: Sequence[ImageSource]) -> np.ndarray: ...

    def encode_images_each(self, images: Sequence[ImageSource]) -> list[Union[np.ndarray, ApiError]]:
        """One embedding per image, or, in its place, the ApiError of an image that could not be read."""

    def token_counts(self, texts: Sequence[str]) -> Optional[list[int]]:
        """The tokens the model reads of each text, or None where its tokenizer cannot count them cheaply."""

    def template_set(self, name: str) -> tuple[str, ...]:
        """The templates of a named set (`openai_imagenet`), or an ApiError naming the known sets."""

    def class_weights(self, labels: tuple[str, ...], templates: tuple[str, ...],
                      build: Callable[[], np.ndarray]) -> np.ndarray:
        """The class weights of `labels` with `templates` from a cache, calling `build` on a miss."""


@dataclass(frozen=True)
class Item:
    """A text or an image, for tasks whose inputs may be of either modality."""
    value: Union[str, ImageSource]

    @property
    def is_text(self) -> bool:
        return isinstance(self.value, str)


@dataclass(frozen=True)
class EmbedTask:
    """Texts and images to embed, in the order the answer lists them."""
    items: tuple[Item, ...]
    normalize: bool = True
    count_tokens: bool = False  # for formats that report usage (OpenAI's): costs one more tokenizer pass


@dataclass(frozen=True)
class EmbedResult:
    vectors: np.ndarray  # [items, dim], rows in the task's item order
    normalized: bool
    text_tokens: Optional[int] = None  # the texts' tokens, when the task asked to count them and they could be


@dataclass(frozen=True)
class RankTask:
    queries: tuple[Item, ...]
    candidates: tuple[Item, ...]


@dataclass(frozen=True)
class RankResult:
    cosine_similarities: np.ndarray  # [queries, candidates]
    probabilities: np.ndarray        # [queries, candidates]
    scoring: str                     # "softmax" or "sigmoid"


@dataclass(frozen=True)
class ClassifyTask:
    """`templates`: the format strings each label becomes prompts through (one, or an ensemble), or the name
    of a set the model layer ships; `max_prompts` bounds labels x templates (MAX_CLASSIFY_PROMPTS)."""
    images: tuple[ImageSource, ...]
    labels: tuple[str, ...]
    class_ids: Optional[tuple[Any, ...]] = None
    templates: Union[tuple[str, ...], str] = (DEFAULT_PROMPT_TEMPLATE,)
    top_k: int = DEFAULT_TOP_K
    margin: float = DEFAULT_MARGIN
    logit_scale: float = DEFAULT_CLASSIFY_SCALE
    max_prompts: Optional[int] = None


@dataclass(frozen=True)
class Classification:
    """One image's answer: the top classes best first, and the decision over the selected classes."""
    top_indices: list[int]
    top_labels: list[str]
    top_probabilities: list[float]
    confidence: float
    selected: list[int]
    classification: Optional[int]  # None when the classes carry no ids


Task = Union[EmbedTask, RankTask, ClassifyTask]
Result = Union[EmbedResult, RankResult, list[Classification]]


def render_prompt(template: str, label: str) -> str:
    """`{label}` or `{}` in the template stands for the class label."""
    return template.format(label, label=label)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def _fill_by_modality(items: Sequence[Item], results: list, encode_texts, encode_images) -> None:
    """One encoder call per modality; each item's vector lands in `results` at the item's own index."""
    text_rows = [i for i, item in enumerate(items) if item.is_text]
    image_rows = [i for i, item in enumerate(items) if not item.is_text]
    for rows, encode in ((text_rows, encode_texts), (image_rows, encode_images)):
        if rows:
            for row, vector in zip(rows, encode([items[i].value for i in rows])):
                results[row] = vector


def encode_items(items: Sequence[Item], encoder: Encoder) -> np.ndarray:
    """Embeds mixed texts and images with one encoder call per modality, rows in the items' order."""
    if not items:  # Weaviate's /vectorize may ask for nothing; no row has a width then
        return np.empty((0, 0), dtype=np.float32)
    parts: list = [None] * len(items)
    _fill_by_modality(items, parts, encoder.encode_texts, encoder.encode_images)
    return np.stack(parts)


def embed_each(items: Sequence[Item], normalize: Sequence[bool],
               encoder: Encoder) -> list[Union[np.ndarray, ApiError]]:
    """Embeds every item in shared forward passes, each on its own account: an image that cannot be read
    fails only its own item, and a failure of the whole call (overloaded, past the deadline) is the answer
    of every item that was still waiting for its vector."""
    results: list[Union[np.ndarray, ApiError, None]] = [None] * len(items)
    try:
        _fill_by_modality(items, results, encoder.encode_texts, encoder.encode_images_each)
    except ApiError as error:
        results = [error if r is None else r for r in results]
    return [r if isinstance(r, ApiError) or not wanted else l2_normalize(r) for r, wanted in zip(results, normalize)]


def embed(task: EmbedTask, encoder: Encoder) -> EmbedResult:
    vectors = encode_items(task.items, encoder)
    tokens = _text_tokens([item.value for item in task.items if item.is_text], encoder) if task.count_tokens else None
    return EmbedResult(l2_normalize(vectors) if task.normalize else vectors, normalized=task.normalize,
                       text_tokens=tokens)


def _text_tokens(texts: list[str], encoder: Encoder) -> Optional[int]:
    counts = encoder.token_counts(texts) if texts else []
    return None if counts is None else sum(counts)


def rank(task: RankTask, encoder: Encoder) -> RankResult:
    queries = l2_normalize(encode_items(task.queries, encoder)).astype(np.float64)
    candidates = l2_normalize(encode_items(task.candidates, encoder)).astype(np.float64)
    cosine = queries @ candidates.T
    logits = encoder.logit_scale * cosine
    # Models trained with a sigmoid loss (SigLIP) carry a bias; their scores are independent per pair.
    if encoder.logit_bias is not None:
        return RankResult(cosine, sigmoid(logits + encoder.logit_bias), "sigmoid")
    return RankResult(cosine, softmax(logits), "softmax")


def build_class_weights(labels: Sequence[str], templates: Sequence[str], encoder: Encoder) -> np.ndarray:
    """open_clip's build_zero_shot_classifier: each class's weight is the L2-normalised mean of its
    L2-normalised prompt embeddings, one prompt per template ([labels, dim], float32). With one template it
    is that prompt's normalised embedding."""
    prompts = [render_prompt(template, label) for label in labels for template in templates]
    vectors = l2_normalize(encoder.encode_texts(prompts).astype(np.float64))
    return l2_normalize(vectors.reshape(len(labels), len(templates), -1).mean(axis=1)).astype(np.float32)


def class_templates(task: ClassifyTask, encoder: Encoder) -> tuple[str, ...]:
    """The task's templates, a named set resolved; refused (413) when labels x templates is above the limit."""
    templates = encoder.template_set(task.templates) if isinstance(task.templates, str) else task.templates
    prompts = len(task.labels) * len(templates)
    if task.max_prompts is not None and prompts > task.max_prompts:
        raise ApiError(f"{len(task.labels)} classes x {len(templates)} prompt templates make {prompts} prompts, "
                       f"above the limit of {task.max_prompts} (MAX_CLASSIFY_PROMPTS)", code="too_many_prompts",
                       field="prompt_templates", status=413)
    return templates


def classify(task: ClassifyTask, encoder: Encoder) -> list[Classification]:
    templates = class_templates(task, encoder)
    weights = encoder.class_weights(task.labels, templates,
                                    lambda: build_class_weights(task.labels, templates, encoder))
    images = l2_normalize(encoder.encode_images(task.images)).astype(np.float64)
    probabilities = softmax(task.logit_scale * (images @ weights.astype(np.float64).T))
    top_k = min(task.top_k, len(task.labels))
    return [_decide(task, row, top_k) for row in probabilities]


def _decide(task: ClassifyTask, probabilities: np.ndarray, top_k: int) -> Classification:
    """Seed 003's rule: among the top-k classes only, those within `margin` of the best are selected, and the
    decision is whether any selected class has a truthy id. With more than k classes within the margin (a
    near-uniform answer) the ones below the top k do not take part, as in the original's loop."""
    order = np.argsort(-probabilities, kind="stable")
    best = float(probabilities[order[0]])
    top = [int(i) for i in order[:top_k]]
    selected = [i for i in top if best - probabilities[i] <= task.margin]
    decision = None
    if task.class_ids is not None:
        decision = int(any(task.class_ids[i] for i in selected))
    return Classification(
        top_indices=top, top_labels=[task.labels[i] for i in top],
        top_probabilities=[float(probabilities[i]) for i in top], confidence=best, selected=selected,
        classification=decision)


def item_count(task: Task) -> int:
    """Texts and images a task embeds (for logs)."""
    if isinstance(task, EmbedTask):
        return len(task.items)
    if isinstance(task, RankTask):
        return len(task.queries) + len(task.candidates)
    return len(task.images) + len(task.labels)


def run(task: Task, encoder: Encoder) -> Result:
    if isinstance(task, EmbedTask):
        return embed(task, encoder)
    if isinstance(task, RankTask):
        return rank(task, encoder)
    return classify(task, encoder)
