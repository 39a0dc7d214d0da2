"""Shared test helpers, defined once for every test file: tiny model settings, a tiny vanilla VideoMAE
checkpoint folder, clips with known repeats, a vanilla / RLT model pair with the same weights, and a Python
process in which ``rlt`` is not importable."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parents[1] / "src"

TINY_VIDEOMAE = {
    "image_size": 32,
    "patch_size": 16,
    "num_frames": 8,
    "tubelet_size": 2,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "num_labels": 5,
}


# A processor config that normalises as the public VideoMAE checkpoints do (ImageNet mean and std).
IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
IMAGENET_PROCESSOR = {"do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, **IMAGENET}
# The image-processor config the Hub's VideoMAE checkpoints carry, at the tiny models' 32 px.
VIDEOMAE_PROCESSOR = {"image_processor_type": "VideoMAEImageProcessor", "size": {"shortest_edge": 32},
                      "crop_size": {"height": 32, "width": 32}, **IMAGENET_PROCESSOR}


def tiny_videomae_classifier(class_names: Sequence[str]):
    """A tiny vanilla VideoMAE classifier (``TINY_VIDEOMAE``, seed 0) of ``class_names``."""
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    config = VideoMAEConfig(**{**TINY_VIDEOMAE, "num_labels": len(class_names)}, id2label=dict(enumerate(class_names)),
                            label2id={name: i for i, name in enumerate(class_names)})
    torch.manual_seed(0)
    return VideoMAEForVideoClassification(config)


def save_vanilla_checkpoint(folder: Path, model) -> Path:
    """``model`` saved as the Hub's vanilla VideoMAE checkpoints are: weights, config, ``VIDEOMAE_PROCESSOR``."""
    model.save_pretrained(folder)
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps(VIDEOMAE_PROCESSOR))
    return Path(folder)


def assert_same_random_draws_as_vanilla(vanilla, rlt_model, clips: torch.Tensor) -> None:
    """In training mode with the same seed (and nothing dropped by RLT), the RLT model draws the vanilla
    model's dropout masks: equal logits; and dropout is really on: another draw gives other logits."""
    vanilla.train(), rlt_model.train()
    torch.manual_seed(1)
    expected = vanilla(clips).logits
    torch.manual_seed(1)
    same_seed = rlt_model(clips).logits
    other_seed = rlt_model(clips).logits
    torch.testing.assert_close(same_seed, expected, atol=1e-5, rtol=1e-5)
    assert (same_seed - other_seed).abs().max() > 1e-3


def noise_clips(batch: int, frames: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Random ``(B, T, 3, H, W)`` clips: no two tubelets repeat exactly."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=generator)


def clips_with_repeats(cell: int = 16, frames: int = 8, size: int = 32) -> torch.Tensor:
    """Three noise clips with known repeats at threshold 0: the first repeats nothing; in the second,
    time step 2 (frames 4-5) repeats step 1 except in one ``cell`` x ``cell`` patch; the third is static
    but for its right half at the last step. With 2x16x16 tubelets on 8x32x32: 16, 13 and 6 kept."""
    clips = noise_clips(3, frames, size)
    clips[1, 3:6] = clips[1, 2]  # time step 2 (frames 4-5) repeats step 1 (frames 2-3) exactly
    clips[1, 5, :, :cell, :cell] += 1  # ...except in one cell
    clips[2, 1:] = clips[2, 0]  # static
    clips[2, 6:, :, :, 16:] += 1  # the right half changes at the last step
    return clips


def randomise(model, suffixes: tuple[str, ...] = ("bias",)):
    """Normal noise in the parameters whose names end with ``suffixes`` (transformers starts biases, CLS
    tokens and position tables at zero), so that a weight that failed to load, or one read from the
    wrong place, shows. Returns the model."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(suffixes):
                parameter.normal_()
    return model


def vanilla_and_rlt(vanilla, rlt_model):
    """``(vanilla, rlt_model)`` in eval mode, the RLT model given the vanilla one's weights; checks that
    only the length table is missing and only what the RLT class leaves out on purpose is left over."""
    missing, unexpected = rlt_model.load_state_dict(vanilla.state_dict(), strict=False)
    ignored = getattr(type(rlt_model), "_keys_to_ignore_on_load_unexpected", None) or ()
    unexpected = [key for key in unexpected if not any(re.search(pattern, key) for pattern in ignored)]
    assert unexpected == [] and len(missing) == 1 and missing[0].endswith("length_embeddings.weight"), missing
    return vanilla.eval(), rlt_model.eval()


def run_without_rlt(code: str, cwd: Path, timeout: int = 180) -> str:
    """Run ``code`` in a fresh interpreter where ``rlt`` cannot be imported; return its stdout.

    Isolated mode (-I) ignores PYTHONPATH and the current folder, and the editable install's
    path entry is removed, so only what a checkpoint folder carries is available.
    """
    prelude = textwrap.dedent(
        f"""
        import sys
        import os
        # Also a source checkout put on the path by an editable install's .pth file (another worktree's
        # src, say): any entry outside site-packages that holds an rlt package.
        sys.path = [
            p for p in sys.path
            if not p.startswith({str(SRC)!r}) and "__editable__" not in p
            and not ("site-packages" not in p and os.path.isdir(os.path.join(p or ".", "rlt")))
        ]
        for finder in list(sys.meta_path):
            if "editable" in type(finder).__module__.lower() or "editable" in type(finder).__name__.lower():
                sys.meta_path.remove(finder)
        try:
            import rlt
        except ImportError:
            pass
        else:
            raise SystemExit("rlt is importable in the isolated process: " + str(rlt.__file__))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, "-I", "-c", prelude + textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"isolated process failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
