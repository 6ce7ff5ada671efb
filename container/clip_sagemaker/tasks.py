"""The three tasks (embed, rank, classify) as plain numpy math on top of two primitives, and `embed_each`,
which embeds items each on its own account (record-oriented requests: one answer or error per record).

An Encoder turns texts and image sources into unnormalised embeddings (the engine does that through the
batched model loop); everything here is scoring on top, so every API format shares one implementation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence, Union

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


@dataclass(frozen=True)
class EmbedResult:
    vectors: np.ndarray  # [items, dim], rows in the task's item order
    normalized: bool


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
    images: tuple[ImageSource, ...]
    labels: tuple[str, ...]
    class_ids: Optional[tuple[Any, ...]] = None
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    top_k: int = DEFAULT_TOP_K
    margin: float = DEFAULT_MARGIN
    logit_scale: float = DEFAULT_CLASSIFY_SCALE

    def prompts(self) -> list[str]:
        return [render_prompt(self.prompt_template, label) for label in self.labels]


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
    return EmbedResult(l2_normalize(vectors) if task.normalize else vectors, normalized=task.normalize)


def rank(task: RankTask, encoder: Encoder) -> RankResult:
    queries = l2_normalize(encode_items(task.queries, encoder)).astype(np.float64)
    candidates = l2_normalize(encode_items(task.candidates, encoder)).astype(np.float64)
    cosine = queries @ candidates.T
    logits = encoder.logit_scale * cosine
    # Models trained with a sigmoid loss (SigLIP) carry a bias; their scores are independent per pair.
    if encoder.logit_bias is not None:
        return RankResult(cosine, sigmoid(logits + encoder.logit_bias), "sigmoid")
    return RankResult(cosine, softmax(logits), "softmax")


def classify(task: ClassifyTask, encoder: Encoder) -> list[Classification]:
    prompts = l2_normalize(encoder.encode_texts(task.prompts())).astype(np.float64)
    images = l2_normalize(encoder.encode_images(task.images)).astype(np.float64)
    probabilities = softmax(task.logit_scale * (images @ prompts.T))
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
