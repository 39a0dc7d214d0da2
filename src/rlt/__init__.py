"""rlt: Run-Length Tokenization for Hugging Face video transformers.

Importing ``rlt`` registers the RLT configs and models with transformers' Auto classes.
"""

from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification

from .configuration_rlt_videomae import RLTVideoMAEConfig
from .conversion import convert
from .modeling_rlt import RLTModelOutput, RLTVideoClassifierOutput
from .modeling_rlt_videomae import RLTVideoMAEForVideoClassification, RLTVideoMAEModel
from .packing import ATTENTION_BACKENDS, PackedSequence, packed_attention
from .tokenizer import RunLengthTokens, run_length_tokenize, run_lengths_from_keep_mask

__version__ = "0.1.0"

_REGISTRY = [
    (RLTVideoMAEConfig, RLTVideoMAEModel, RLTVideoMAEForVideoClassification),
]
for _config, _model, _classifier in _REGISTRY:
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)
    AutoModelForVideoClassification.register(_config, _classifier, exist_ok=True)

__all__ = [
    "ATTENTION_BACKENDS",
    "PackedSequence",
    "RLTModelOutput",
    "RLTVideoClassifierOutput",
    "RLTVideoMAEConfig",
    "RLTVideoMAEForVideoClassification",
    "RLTVideoMAEModel",
    "RunLengthTokens",
    "convert",
    "packed_attention",
    "run_length_tokenize",
    "run_lengths_from_keep_mask",
]
