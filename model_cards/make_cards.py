"""Write the cards of the planned RLT checkpoints (model_cards/*.md) with rlt.hub.model_card.

Each card is what ``rlt convert BASE OUT --push-to-hub NAMESPACE/NAME`` writes for that base
model: the facts come from a stand-in folder holding the converted config (the base model's
public config plus the RLT defaults) and a zero length table, exactly as ``rlt convert`` saves
them. Run ``python model_cards/make_cards.py`` after changing the template or rlt.hub; a test
checks the committed cards are up to date.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from rlt import registry
from rlt.common import IMAGENET_DEFAULT_STD
from rlt.hub import model_card

NAMESPACE = "YOUR-NAMESPACE"  # the Hub namespace the checkpoints will be uploaded to
HERE = Path(__file__).resolve().parent
RLT_DEFAULTS = {
    "rlt_enabled": True,
    "rlt_threshold": 0.1,
    "rlt_compare_to": "previous",
    "rlt_use_length_encoding": True,
    "rlt_length_encoding_init": "zeros",
    "rlt_pooling": "mean",
    "rlt_attention": "auto",
}
VIDEOMAE = {
    "model_type": "rlt_videomae",
    "architectures": ["RLTVideoMAEForVideoClassification"],
    "image_size": 224,
    "patch_size": 16,
    "num_frames": 16,
    "tubelet_size": 2,
    "num_channels": 3,
    "use_mean_pooling": True,
    "rlt_input_scale": [1 / 255 / std for std in IMAGENET_DEFAULT_STD],
}

KINETICS_400 = (["kinetics-400"], 400)

# name -> (base model, license of the base model's card, converted config, length table key,
#          (datasets, number of classes))
PLANNED = {
    "videomae-base-finetuned-kinetics-rlt": (
        "MCG-NJU/videomae-base-finetuned-kinetics",
        "cc-by-nc-4.0",
        {**VIDEOMAE, "hidden_size": 768},
        "videomae.embeddings.length_embeddings.weight",
        KINETICS_400,
    ),
    "videomae-large-finetuned-kinetics-rlt": (
        "MCG-NJU/videomae-large-finetuned-kinetics",
        "cc-by-nc-4.0",
        {**VIDEOMAE, "hidden_size": 1024},
        "videomae.embeddings.length_embeddings.weight",
        KINETICS_400,
    ),
    "vivit-b-16x2-kinetics400-rlt": (
        "google/vivit-b-16x2-kinetics400",
        "mit",
        {
            "model_type": "rlt_vivit",
            "architectures": ["RLTVivitForVideoClassification"],
            "image_size": 224,
            "num_frames": 32,
            "tubelet_size": [2, 16, 16],
            "num_channels": 3,
            "hidden_size": 768,
            # VivitVideoProcessor: rescale by 1/127.5 (and offset by -1), then normalise with std 0.5.
            "rlt_input_scale": [1 / 127.5 / 0.5] * 3,
        },
        "vivit.embeddings.length_embeddings.weight",
        KINETICS_400,
    ),
    # V-JEPA 2 ViT-L with its attentive probe trained on Something-Something v2 (174 classes): 16 frames
    # of 256x256; VJEPA2VideoProcessor resizes the short side to 292, crops 256, ImageNet mean/std.
    "vjepa2-vitl-fpc16-256-ssv2-rlt": (
        "facebook/vjepa2-vitl-fpc16-256-ssv2",
        "mit",
        {
            "model_type": "rlt_vjepa2",
            "architectures": ["RLTVJEPA2ForVideoClassification"],
            "crop_size": 256,
            "frames_per_clip": 16,
            "tubelet_size": 2,
            "patch_size": 16,
            "in_chans": 3,
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "num_pooler_layers": 3,
            "rlt_input_scale": [1 / 255 / std for std in IMAGENET_DEFAULT_STD],
        },
        "vjepa2.encoder.embeddings.length_embeddings.weight",
        (["something-something-v2"], 174),
    ),
}


def planned_card(name: str):
    base_model, license, config, length_key, (datasets, num_labels) = PLANNED[name]
    config = {**RLT_DEFAULTS, **config, "id2label": {str(i): f"LABEL_{i}" for i in range(num_labels)}}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "config.json").write_text(json.dumps(config))
        processor = {"video_processor_type": "RLTVideoProcessor"}
        (folder / "video_preprocessor_config.json").write_text(json.dumps(processor))
        grid_t = registry.as_rlt_config(config).rlt_token_grid[0]
        save_file({length_key: torch.zeros(grid_t, config["hidden_size"])}, folder / "model.safetensors")
        return model_card(
            folder, repo_id=f"{NAMESPACE}/{name}", base_model=base_model, license=license, datasets=datasets
        )


def main() -> int:
    for name in PLANNED:
        planned_card(name).save(HERE / f"{name}.md")
        print(f"wrote model_cards/{name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
