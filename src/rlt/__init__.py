"""rlt: Run-Length Tokenization for Hugging Face video transformers.

Importing ``rlt`` registers the RLT configs and models of every architecture in ``rlt.registry``
with transformers' Auto classes.

Layout: ``rlt/models/`` holds the files that travel into checkpoint folders (tokenizer, packing,
attention kernels, token choice, configuration and modeling files, video decoding and the video
processor); everything else in ``rlt/`` is tooling.
A clip's road to the model: ``clip_sources`` (one reader per kind of data, ``open_clips``) ->
``ClipDataset`` -> ``collator.ClipCollator`` -> the model; ``data`` turns video folders and lists
into ``datasets`` for ``Trainer``, ``cache`` decodes them once. What a user calls is exported here;
the internals (packed attention, the tokenizer's helpers, ...) stay in their modules.
"""

from . import registry
from .calibration import calibrate
from .clip_sources import Clip, ClipDataset, open_clips
from .collator import ClipCollator
from .conversion import convert, from_model
from .data import VideoCollator, VideoTransform, load_video_dataset
from .evaluation import evaluate
from .inspection import inspect_video
from .models.configuration_rlt_qwen_vl import RLTQwen2_5_VLConfig, RLTQwen3VLConfig
from .models.configuration_rlt_videomae import RLTVideoMAEConfig
from .models.configuration_rlt_vivit import RLTVivitConfig
from .models.configuration_rlt_vjepa2 import RLTVJEPA2Config
from .models.modeling_rlt_qwen2_5_vl import RLTQwen2_5_VLForConditionalGeneration
from .models.modeling_rlt_qwen3_vl import RLTQwen3VLForConditionalGeneration
from .models.modeling_rlt_qwen_vl import use_packed_vision_attention
from .models.modeling_rlt_videomae import RLTVideoMAEForVideoClassification, RLTVideoMAEModel
from .models.modeling_rlt_vivit import RLTVivitForVideoClassification, RLTVivitModel
from .models.modeling_rlt_vjepa2 import RLTVJEPA2ForVideoClassification, RLTVJEPA2Model
from .models.processing_rlt_qwen_vl import RLTQwenVLProcessor
from .models.tokenizer import RunLengthTokens, run_length_tokenize
from .models.video_decoding import VideoDecodeError
from .models.video_processing_rlt import RLTVideoProcessor

__version__ = "0.1.0"

for _architecture in registry.architectures():
    registry.register_auto_classes(_architecture)
registry.register_video_llm_auto_classes()

__all__ = [
    "Clip",
    "ClipCollator",
    "ClipDataset",
    "RLTQwen2_5_VLConfig",
    "RLTQwen2_5_VLForConditionalGeneration",
    "RLTQwen3VLConfig",
    "RLTQwen3VLForConditionalGeneration",
    "RLTQwenVLProcessor",
    "RLTVJEPA2Config",
    "RLTVJEPA2ForVideoClassification",
    "RLTVJEPA2Model",
    "RLTVideoMAEConfig",
    "RLTVideoMAEForVideoClassification",
    "RLTVideoMAEModel",
    "RLTVideoProcessor",
    "RLTVivitConfig",
    "RLTVivitForVideoClassification",
    "RLTVivitModel",
    "RunLengthTokens",
    "VideoCollator",
    "VideoDecodeError",
    "VideoTransform",
    "calibrate",
    "convert",
    "evaluate",
    "from_model",
    "inspect_video",
    "load_video_dataset",
    "open_clips",
    "registry",
    "run_length_tokenize",
    "use_packed_vision_attention",
]
