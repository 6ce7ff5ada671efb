"""The frozen TorchScript vision tower (torchscript.py) computes what the eager one does, or is not used."""
from __future__ import annotations

import logging

import torch

from clip_sagemaker.torchscript import freeze, vision_example


def test_the_traced_vision_tower_agrees_with_the_eager_one_at_any_batch_size(engine):
    model = engine.model
    assert isinstance(model._vision, torch.jit.ScriptModule)
    for batch in (1, 3, 8):
        images = torch.randn(batch, 3, *model.info.image_size)
        with torch.inference_mode():
            traced, eager = model._vision(images), model._model.encode_image(images)
        torch.testing.assert_close(traced, eager, rtol=1e-4, atol=1e-5)


class Untraceable(torch.nn.Module):
    def forward(self, x):
        return {"features": x, "note": "tracing cannot return a string"}


def test_a_module_that_cannot_be_traced_stays_eager_and_says_so(caplog):
    module = Untraceable()
    with caplog.at_level(logging.WARNING, logger="clip_sagemaker.torchscript"):
        assert freeze(module, vision_example((8, 8), torch.float32, torch.device("cpu")), "toy tower") is module
    assert "toy tower could not be traced" in caplog.text
