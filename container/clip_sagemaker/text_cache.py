"""A bounded LRU cache of text embeddings, so that labels and prompts sent again and again cost nothing.

One cache belongs to one model copy, and keys are (model, exact text): a label's embedding never depends on
the request it came in. Vectors are stored read-only and unnormalised, as the model returned them.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np

from . import metrics


class TextCache:
    def __init__(self, model_key: str, capacity: int):
        self._model_key = model_key
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def encode(self, texts: Sequence[str], encode_missing: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """Embeddings of `texts`, calling `encode_missing` once for the distinct texts not cached yet."""
        if self.capacity == 0:
            return encode_missing(list(texts))
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for text in dict.fromkeys(texts):
                vector = self._entries.get((self._model_key, text))
                if vector is not None:
                    self._entries.move_to_end((self._model_key, text))
                    found[text] = vector
            missing = [t for t in dict.fromkeys(texts) if t not in found]
            misses = sum(1 for t in texts if t not in found)  # found is a dict: linear in the texts
            self.hits += len(texts) - misses
            self.misses += misses
        metrics.count_lookups(metrics.TEXT_CACHE, len(texts) - misses, misses)
        if missing:
            for text, vector in zip(missing, encode_missing(missing)):
                vector = np.array(vector)
                vector.setflags(write=False)
                found[text] = vector
            with self._lock:
                for text in missing:
                    self._entries[(self._model_key, text)] = found[text]
                    self._entries.move_to_end((self._model_key, text))
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
        return np.stack([found[t] for t in texts])

    def stats(self) -> dict:
        with self._lock:
            return {"capacity": self.capacity, "size": len(self._entries), "hits": self.hits, "misses": self.misses}
