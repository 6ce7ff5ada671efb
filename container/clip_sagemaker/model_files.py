"""Writes OpenCLIP models in the directory layout the container loads (and SageMaker's model.tar.gz).

The layout is open_clip's own (the one the Hugging Face Hub uses): `open_clip_config.json` holding
`{"model_cfg": ..., "preprocess_cfg": ...}` plus `open_clip_model.safetensors`. Tests, the benchmark and
users packaging their weights all go through `write_model_dir`. The config also records where the weights
came from (`"weights": {"pretrained": TAG}`, or `{"random": true, "seed": N}` without --pretrained), so that
the server can say loudly that a directory of random weights is one (open_clip ignores the key).

    python -m clip_sagemaker.model_files ViT-B-32 --pretrained laion2b_s34b_b79k --out model/ --tar model.tar.gz
"""
from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Optional

from .model_source import CONFIG_FILE, WEIGHTS_KEY

WEIGHTS_FILE = "open_clip_model.safetensors"


def write_model_dir(model, model_cfg: dict, out_dir: Path, weights: dict) -> Path:
    """Saves a loaded open_clip model with its architecture config, preprocessing config and `weights`,
    where the weights came from."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": dict(model.visual.preprocess_cfg), WEIGHTS_KEY: weights}
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE))
    return out_dir


def build_model_dir(out_dir: Path, arch: str, pretrained: Optional[str] = None,
                    model_cfg: Optional[dict] = None, seed: int = 0) -> Path:
    """An open_clip architecture with pretrained or seeded random weights, saved as a model directory.

    `model_cfg` registers a new architecture under the name `arch` first (tests use tiny ones).
    """
    import open_clip
    import torch

    if model_cfg is not None:
        with tempfile.TemporaryDirectory() as tmp:
            config_path = Path(tmp) / f"{arch}.json"
            config_path.write_text(json.dumps(model_cfg))
            open_clip.add_model_config(config_path)
    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
    torch.manual_seed(seed)
    model = open_clip.create_model(arch, pretrained=pretrained, require_pretrained=bool(pretrained))
    # A checkpoint's name only: its path on this machine means nothing where the directory is served.
    weights = {"pretrained": Path(pretrained).name if Path(pretrained).is_file() else pretrained} if pretrained \
        else {"random": True, "seed": seed}
    return write_model_dir(model, model_cfg, out_dir, weights)


def make_tarball(model_dir: Path, tar_path: Path) -> Path:
    """model.tar.gz with the files at its top level, as SageMaker unpacks it into /opt/ml/model."""
    with tarfile.open(tar_path, "w:gz") as tar:
        for path in sorted(Path(model_dir).iterdir()):
            tar.add(path, arcname=path.name)
    return Path(tar_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arch", help="open_clip architecture, e.g. ViT-B-32 (see open_clip.list_models()), or the "
                                     "name to give the architecture in --config")
    parser.add_argument("--pretrained", default=None,
                        help="pretrained tag (needs network) or checkpoint file; omit for random weights")
    parser.add_argument("--config", type=Path, help="a JSON open_clip model config defining the architecture")
    parser.add_argument("--seed", type=int, default=0, help="seed for random weights")
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--tar", type=Path, help="also write this model.tar.gz")
    args = parser.parse_args()
    model_cfg = json.loads(args.config.read_text()) if args.config else None
    out = build_model_dir(args.out, args.arch, args.pretrained, model_cfg, args.seed)
    print(f"wrote {out}" + ("" if args.pretrained else f" (RANDOM weights, seed {args.seed}: for tests and "
                                                          f"benchmarks only; give --pretrained for real ones)"))
    if args.tar:
        print(f"wrote {make_tarball(out, args.tar)}")


if __name__ == "__main__":
    main()
