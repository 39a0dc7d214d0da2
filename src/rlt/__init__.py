"""rlt: Run-Length Tokenization for Hugging Face video transformers.

Importing ``rlt`` registers the RLT configs and models with transformers' Auto classes.
"""

from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification

from .configuration_rlt_videomae import RLTVideoMAEConfig
from .configuration_rlt_vivit import RLTVivitConfig
from .configuration_rlt_vjepa2 import RLTVJEPA2Config
from .conversion import convert
from .modeling_rlt import RLTModelOutput, RLTVideoClassifierOutput
from .modeling_rlt_videomae import RLTVideoMAEForVideoClassification, RLTVideoMAEModel
from .modeling_rlt_vivit import RLTVivitForVideoClassification, RLTVivitModel
from .modeling_rlt_vjepa2 import RLTVJEPA2ForVideoClassification, RLTVJEPA2Model
from .packing import ATTENTION_BACKENDS, PackedSequence, packed_attention
from .tokenizer import RunLengthTokens, run_length_tokenize, run_lengths_from_keep_mask
from .video_processing_rlt import RLTVideoProcessor, VideoDecodeError
from .data import VideoCollator, VideoTransform, load_video_dataset
from .inspection import inspect_video

__version__ = "0.1.0"

_REGISTRY = [
    (RLTVideoMAEConfig, RLTVideoMAEModel, RLTVideoMAEForVideoClassification),
    (RLTVivitConfig, RLTVivitModel, RLTVivitForVideoClassification),
    (RLTVJEPA2Config, RLTVJEPA2Model, RLTVJEPA2ForVideoClassification),
]
for _config, _model, _classifier in _REGISTRY:
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoModelForVideoClassification.register(_config, _classifier, exist_ok=True)

__all__ = [
    "ATTENTION_BACKENDS",
    "PackedSequence",
    "RLTModelOutput",
    "RLTVJEPA2Config",
    "RLTVJEPA2ForVideoClassification",
    "RLTVJEPA2Model",
    "RLTVideoClassifierOutput",
    "RLTVideoMAEConfig",
    "RLTVideoProcessor",
    "RLTVideoMAEForVideoClassification",
    "RLTVideoMAEModel",
    "RLTVivitConfig",
    "RLTVivitForVideoClassification",
    "RLTVivitModel",
    "RunLengthTokens",
    "VideoCollator",
    "VideoDecodeError",
    "VideoTransform",
    "convert",
    "inspect_video",
    "load_video_dataset",
    "packed_attention",
    "run_length_tokenize",
    "run_lengths_from_keep_mask",
]
