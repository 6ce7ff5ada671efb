"""open_clip computed directly: the numbers every answer of the server is checked against."""
from __future__ import annotations

import base64
import io

import numpy as np
import open_clip
import torch
from PIL import Image


class Reference:
    def __init__(self, name: str):
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(name)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        self.logit_scale = float(self.model.logit_scale.detach().exp())
        bias = self.model.logit_bias
        self.logit_bias = None if bias is None else float(bias.detach())

    @torch.inference_mode()
    def texts(self, texts, normalize=True) -> np.ndarray:
        return self.model.encode_text(self.tokenizer(list(texts)), normalize=normalize).numpy().astype(np.float64)

    @torch.inference_mode()
    def images(self, images, normalize=True, draft_size=None) -> np.ndarray:
        """`draft_size`: decode JPEGs with Pillow's draft mode at that size, as the server does by default."""
        batch = torch.stack([self.preprocess(to_pil(i, draft_size)) for i in images])
        return self.model.encode_image(batch, normalize=normalize).numpy().astype(np.float64)

    def classify_probabilities(self, images, labels, template="a photo of a {}", scale=100.0) -> np.ndarray:
        logits = scale * self.images(images) @ self.texts([template.format(l) for l in labels]).T
        return softmax(logits)

    def rank(self, query_vectors: np.ndarray, candidate_vectors: np.ndarray):
        cosine = query_vectors @ candidate_vectors.T
        logits = self.logit_scale * cosine
        if self.logit_bias is not None:
            return cosine, 1 / (1 + np.exp(-(logits + self.logit_bias)))
        return cosine, softmax(logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def to_pil(image, draft_size=None) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, str):
        image = base64.b64decode(image.split(",", 1)[1] if image.startswith("data:") else image)
    decoded = Image.open(io.BytesIO(image))
    if draft_size and decoded.format == "JPEG":
        decoded.draft("RGB", (draft_size, draft_size))
    return decoded.convert("RGB")


def cosine(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
