"""Text at its real length: the trimmed text forward equals open_clip's padded one (fp32, 1e-5), for every
tower it is used on, and towers where trimming could change the result keep the padded path. (The same
equality on open_clip's full-size ViT-B-32 and RN50 towers: tests/integration/test_text_length_full_size.py.)"""
from __future__ import annotations

import copy

import numpy as np
import open_clip
import pytest
import torch

from conftest import TINY_CFG
from text_towers import TEXTS, assert_trimmed_equals_padded

from clip_sagemaker.model import encode_text_trimmed, trimmable_text_tower


def tiny(**changes) -> dict:
    cfg = copy.deepcopy(TINY_CFG)
    text_changes = changes.pop("text_cfg", {})
    cfg.update(changes)
    cfg["text_cfg"].update(text_changes)
    return cfg


TRIMMABLE = {
    "tiny-argmax": tiny(),
    "tiny-quickgelu": tiny(quick_gelu=True),
    "tiny-custom-text": tiny(custom_text=True),
    "tiny-eos-pool": tiny(custom_text=True, text_cfg={"pool_type": "eos", "eos_id": 49407}),
    "tiny-linear-proj": tiny(custom_text=True, text_cfg={"proj_type": "linear", "proj_bias": True}),
}
PADDED = {
    "tiny-bidirectional": tiny(custom_text=True, text_cfg={"no_causal_mask": True, "pool_type": "last"}),
    "tiny-first-token": tiny(custom_text=True, text_cfg={"no_causal_mask": True, "pool_type": "first"}),
    "tiny-cls-token": tiny(custom_text=True, text_cfg={"embed_cls": True}),
}


def build(name: str, cfg):
    torch.manual_seed(0)
    model = (open_clip.CustomTextCLIP if cfg.get("custom_text") else open_clip.CLIP)(
        **{k: v for k, v in cfg.items() if k != "custom_text"})
    return model.eval(), open_clip.get_tokenizer("ViT-B-32")


@pytest.mark.parametrize("name", TRIMMABLE)
def test_trimmed_text_forward_equals_the_padded_one(name):
    assert_trimmed_equals_padded(*build(name, TRIMMABLE[name]))


@pytest.mark.parametrize("name", PADDED)
def test_towers_where_padding_can_matter_keep_the_padded_path(name):
    model, _ = build(name, PADDED[name])
    assert trimmable_text_tower(model) is None


def test_the_transformer_runs_only_up_to_the_longest_text_in_the_batch():
    model, tokenizer = build("tiny-argmax", TRIMMABLE["tiny-argmax"])
    seen = []
    model.transformer.register_forward_hook(lambda module, args, output: seen.append(output.shape[1]))
    with torch.inference_mode():
        encode_text_trimmed(trimmable_text_tower(model), tokenizer(["a cat", "a dog on a sofa"]))
    # start token + 4 words + end token: 6 positions of 77.
    assert seen == [len(tokenizer.encode("a dog on a sofa")) + 2]


def test_the_served_model_uses_the_trimmed_path_and_can_be_told_not_to(tiny_model_dir, reference):
    from clip_sagemaker.model import load_model
    from clip_sagemaker.model_source import resolve_model_source
    from clip_sagemaker.settings import Settings
    from clip_sagemaker.modality import TEXT

    source = resolve_model_source(Settings(model_dir=str(tiny_model_dir), model_dir_explicit=True))
    trimmed, padded = load_model(source, precision="fp32"), load_model(source, precision="fp32", trim_text=False)
    assert trimmed.text_tower is not None and padded.text_tower is None
    rows = list(trimmed.tokenize(TEXTS))
    np.testing.assert_allclose(trimmed.encode(TEXT, rows), padded.encode(TEXT, rows), atol=1e-5)
    np.testing.assert_allclose(padded.encode(TEXT, rows), reference.texts(TEXTS, normalize=False), atol=1e-5)
