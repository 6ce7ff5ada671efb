"""The trimmed text forward equals open_clip's padded one on open_clip's own full-size towers (fp32, 1e-5):
big models, a few seconds each to build at random, so with the integration tests. (The tiny towers, and
the towers that keep the padded path: tests/unit/test_text_length.py.)"""
from __future__ import annotations

import open_clip
import pytest
import torch

from text_towers import assert_trimmed_equals_padded


@pytest.mark.parametrize("name", ["ViT-B-32", "RN50"])
def test_trimmed_text_forward_equals_the_padded_one(name):
    torch.manual_seed(0)
    assert_trimmed_equals_padded(open_clip.create_model(name).eval(), open_clip.get_tokenizer(name))
