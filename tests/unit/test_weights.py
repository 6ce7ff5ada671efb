"""The low-memory .safetensors loader (weights.py) gives the model open_clip itself loads, or steps aside."""
from __future__ import annotations

import shutil

import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from clip_sagemaker.weights import load_streamed


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_streamed_weights_equal_open_clips_own_loading_tensor_for_tensor(tiny_model_dir, precision):
    name = f"local-dir:{tiny_model_dir}"
    expected, _, _ = open_clip.create_model_and_transforms(name, precision=precision, require_pretrained=True)
    model, preprocess = load_streamed(open_clip, name, tiny_model_dir / "open_clip_model.safetensors",
                                      precision, force_quick_gelu=False)
    assert preprocess is not None
    got, want = model.state_dict(), expected.state_dict()
    assert set(got) == set(want)
    for key in want:
        assert got[key].dtype == want[key].dtype and got[key].device.type == "cpu", key
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
    torch.testing.assert_close(model.attn_mask, expected.attn_mask, rtol=0, atol=0)


def test_a_file_whose_tensors_differ_from_the_model_takes_open_clips_path(tiny_model_dir, tmp_path):
    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    tensors = load_file(str(directory / "open_clip_model.safetensors"))
    tensors["module.extra"] = torch.zeros(1)  # a key the model does not have
    save_file(tensors, str(directory / "open_clip_model.safetensors"))
    assert load_streamed(open_clip, f"local-dir:{directory}", directory / "open_clip_model.safetensors",
                         "fp32", force_quick_gelu=False) is None
