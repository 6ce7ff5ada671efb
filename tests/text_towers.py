"""The trimmed-text checks shared by the tiny towers (unit) and open_clip's full-size ones (integration)."""
from __future__ import annotations

import numpy as np
import torch

from clip_sagemaker.model import encode_text_trimmed, trimmable_text_tower

TEXTS = ["a cat", "a photo of a dog running on the beach at sunset with a red ball",
         "x", "word " * 100]  # the last one is longer than the context and gets truncated


def assert_trimmed_equals_padded(model, tokenizer) -> None:
    """The trimmed text forward equals open_clip's padded one (fp32, 1e-5) on batches whose longest text
    differs."""
    tower = trimmable_text_tower(model)
    assert tower is not None
    tokens = tokenizer(TEXTS)
    with torch.inference_mode():
        padded = model.encode_text(tokens)
        for rows in ([0], [0, 1], [2], [0, 1, 2, 3]):  # batches whose longest text differs
            trimmed = encode_text_trimmed(tower, tokens[rows])
            np.testing.assert_allclose(trimmed.numpy(), padded[rows].numpy(), rtol=0, atol=1e-5)
