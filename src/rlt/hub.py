"""Hub-ready RLT checkpoints: the model card (README.md, from ``model_card_template.md``) and the upload.

The card's metadata is built with ``huggingface_hub.ModelCardData`` and ``EvalResult``: transformers'
``Trainer.create_model_card`` drops video-classification results.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.utils import HFValidationError, validate_repo_id

from . import registry
from .conversion import PROCESSOR_FILES, checkpoint_file, read_processor_config
from .models import code_closure

__all__ = [
    "HubTokenError",
    "check_checkpoint_folder",
    "model_card",
    "push_to_hub",
    "require_token",
    "write_model_card",
]

logger = logging.getLogger(__name__)

PAPER_URL = "https://arxiv.org/abs/2411.05222"
PAPER_SOURCE = "Choudhury et al., NeurIPS 2024 (RLT paper), as reported"
CARD_TAGS = ["rlt", "run-length-tokenization", "video-classification"]
TEMPLATE = "model_card_template.md"

# Kinetics-400 top-1 accuracy reported by the RLT paper for training-free RLT on fine-tuned
# checkpoints of the base model's size: (model size, without RLT, with RLT).
PAPER_RESULTS = {
    "MCG-NJU/videomae-base-finetuned-kinetics": ("ViT-B", 80.9, 80.9),
    "MCG-NJU/videomae-large-finetuned-kinetics": ("ViT-L", 84.7, 84.7),
}
KINETICS_400 = {"dataset_type": "kinetics-400", "dataset_name": "Kinetics-400", "dataset_split": "validation"}


class HubTokenError(ValueError):
    """No Hugging Face token is available for an upload."""


def require_token(token: str | None = None) -> str:
    """``token``, else the one huggingface_hub finds (``HF_TOKEN``, ``hf auth login``); no network access."""
    token = token or get_token()
    if not token:
        raise HubTokenError(
            "no Hugging Face token found: run `hf auth login`, set HF_TOKEN, or pass token=... to push_to_hub"
        )
    return token


# ---------------------------------------------------------------------------------------------- card


def _render_template(template: str, values: dict) -> str:
    """Replace each ``{{ name }}`` in ``template`` with ``values[name]`` (a name without a value is an error)."""
    missing = sorted({name for name in re.findall(r"\{\{\s*(\w+)\s*\}\}", template) if name not in values})
    if missing:
        raise KeyError(f"model card template placeholders without a value: {missing}")
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda match: str(values[match.group(1)]), template)


def _base_model_of(source) -> str | None:
    """The Hub id a conversion source stands for: the id itself, or a Hub cache snapshot's repo; else None."""
    if source is None:
        return None
    path = Path(str(source))
    if path.exists():
        for part in path.resolve().parts:
            if part.startswith("models--"):
                return part[len("models--") :].replace("--", "/")
        return None
    try:
        validate_repo_id(str(source))
    except HFValidationError:
        return None
    return str(source)


def _read_card_data(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return ModelCard.load(path, ignore_metadata_errors=True).data.to_dict()
    except (ValueError, OSError):
        return {}


def _source_card_data(source) -> dict:
    """Metadata of the source checkpoint's own card (license, datasets), when it has one."""
    if source is None:
        return {}
    path = checkpoint_file(source, "README.md")
    return _read_card_data(path) if path else {}


def _length_table_is_zero(folder: Path) -> bool | None:
    """Whether the saved length encoding is all zeros (a training-free conversion); None if not found."""
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):  # one file, or the shards of a large model
        with safe_open(path, framework="pt") as weights:
            names = weights.keys()  # a safe_open handle is not iterable itself
            key = next((name for name in names if name.endswith("length_embeddings.weight")), None)
            if key is not None:
                return not bool(weights.get_tensor(key).any())
    return None


def _processor_facts(folder: Path) -> str:
    name, config = read_processor_config(folder)
    if name is None:
        return "none saved: give `pixel_values` normalised like the base model's processor does"
    kind = config.get("video_processor_type") or config.get("image_processor_type") or "processor"
    return f"`{kind}` (`{name}`)"


def _model_card_facts(folder: Path, config: dict) -> dict:
    """What the card says about the checkpoint in ``folder`` (``config`` is its ``config.json``)."""
    model_type = config.get("model_type", "")
    architecture = (config.get("architectures") or ["?"])[0]
    geometry = registry.as_rlt_config(config)
    frames = geometry.rlt_num_frames
    height, width = geometry.rlt_image_size
    t, (ph, pw) = geometry.rlt_tubelet_size, geometry.rlt_patch_size
    cls_tokens = geometry.rlt_num_prefix_tokens
    num_tokens = geometry.rlt_tokens_per_clip
    entry = registry.for_config(config)
    is_classifier = architecture.endswith("ForVideoClassification")
    if not is_classifier:
        pooling = "none: a base model without a classification head (packed hidden states)"
        usage_result = "clips = outputs.per_clip()  # one (tokens kept, hidden) tensor per clip"
        pooling_sentence = (
            "No classification head: `outputs.last_hidden_state` holds the clips' kept tokens packed end to end\n"
            "  (`outputs.cu_seqlens` marks where each clip starts; `outputs.per_clip()` splits them)."
        )
    else:
        if entry.classifier_pooling is not None:
            pooling = entry.classifier_pooling(config)
        elif cls_tokens:
            pooling = "the clip's CLS token"
        elif config.get("use_mean_pooling", True):
            weighting = "run-length-weighted mean" if config.get("rlt_pooling") == "length_weighted" else "plain mean"
            pooling = f"{weighting} of the clip's kept tokens, then `fc_norm`"
        else:
            pooling = "the clip's first token"
        usage_result = "print(model.config.id2label[outputs.logits.argmax(-1).item()])"
        pooling_sentence = f"The classifier pools each clip's own tokens ({pooling.split(':')[0]})."
    zero = _length_table_is_zero(folder)
    if not config.get("rlt_use_length_encoding", True):
        length_encoding = "off"
    elif zero:
        length_encoding = "all zeros: training-free, the base model's function on the kept tokens"
    elif zero is None:
        length_encoding = "not found in the weights"
    else:
        length_encoding = "learned (fine-tuned with RLT)"
    scale = config.get("rlt_input_scale")
    input_scale = (
        "[" + ", ".join(f"{s:.4g}" for s in scale) + "] per channel (`rescale_factor / std` of the processor)"
        if scale
        else "not recorded: ImageNet normalisation (`(1/255) / std`) assumed"
    )
    if geometry.rlt_fixed_num_frames:
        input_size_limitation = (
            f"Fixed input size: {frames} frames of {height}x{width} (the position embeddings are fixed to that grid;\n"
            "  `interpolate_pos_encoding` is not supported)."
        )
    else:
        input_size_limitation = (
            f"Fixed frame size: {height}x{width} (positions are laid out on that grid; `interpolate_pos_encoding`\n"
            f"  is not supported). Clips may hold any multiple of {t} frames; the base model was trained on {frames}."
        )
    return {
        "architecture": architecture,
        "model_type": model_type,
        "family": model_type.removeprefix("rlt_") or "rlt",
        "threshold": config.get("rlt_threshold", 0.1) if config.get("rlt_enabled", True) else "RLT disabled",
        "compare_to": config.get("rlt_compare_to", "previous"),
        "length_encoding": length_encoding,
        "training_free": bool(zero) or not config.get("rlt_use_length_encoding", True),
        "pooling": pooling,
        "pooling_sentence": pooling_sentence,
        "position_encoding": entry.position_encoding,
        "input_size_limitation": input_size_limitation,
        "is_classifier": is_classifier,
        "auto_class": "AutoModelForVideoClassification" if is_classifier else "AutoModel",
        "usage_result": usage_result,
        "num_frames": frames,
        "num_channels": geometry.rlt_num_channels,
        "image_size": f"{height}x{width}",
        "image_size_tuple": f"{height}, {width}",
        "tubelet": f"{t}x{ph}x{pw}",
        "num_tokens": num_tokens,
        "num_tokens_text": f"{num_tokens} tokens without RLT" + (" (CLS token included)" if cls_tokens else ""),
        "input_scale": input_scale,
        "num_labels": len(config.get("id2label") or {}) or config.get("num_labels", "?"),
        "processor": _processor_facts(folder),
    }


def _paper_results(base_model: str | None) -> tuple[list[EvalResult], str]:
    """The paper's reported numbers for ``base_model``'s size (model-index entries and text), if any."""
    if base_model not in PAPER_RESULTS:
        return [], (
            "The RLT paper reports no result for this base model. Its Kinetics-400 results (training-free, "
            "fine-tuned VideoMAE ViT-B / L / H) are on the cards of the RLT VideoMAE checkpoints."
        )
    size, without_rlt, with_rlt = PAPER_RESULTS[base_model]
    result = EvalResult(
        task_type="video-classification",
        task_name="Video Classification",
        metric_type="accuracy",
        metric_name="top-1 accuracy (reported by the RLT paper)",
        metric_value=with_rlt,
        source_name=PAPER_SOURCE,
        source_url=PAPER_URL,
        **KINETICS_400,
    )
    text = (
        f"**Reported by the RLT paper** ([Choudhury et al., NeurIPS 2024]({PAPER_URL}); not measured on this "
        f"checkpoint): on Kinetics-400, training-free RLT on a fine-tuned {size} model keeps top-1 accuracy at "
        f"{with_rlt}% ({without_rlt}% without RLT). Overall the paper reports about 35% more throughput "
        "for about 0.1 points of accuracy. The paper used its own fine-tuned weights (VideoMAE-2) and evaluation "
        "protocol, so these numbers describe the method, not this exact conversion."
    )
    return [result], text


BENCHMARKS_TEXT = (
    "**Token reduction and speed**: this project's measurements, each with the command that produced it, are in "
    "`benchmarks/RESULTS.md` of the rlt-transformers repository; none is quoted here. `outputs.tokens_kept` gives "
    "the tokens each clip keeps on your own videos."
)


def model_card(
    folder: str | Path,
    *,
    repo_id: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
    eval_results: list[EvalResult] | None = None,
    source=None,
    summary: str | None = None,
    sections: Sequence[str] = (),
    tags: Sequence[str] = (),
) -> ModelCard:
    """The model card of the RLT checkpoint in ``folder``, filled from the template with its facts.

    Metadata not given here comes from the folder's existing README.md (so rewriting a card keeps
    it), then from the ``source`` checkpoint's card (license, datasets). ``eval_results`` are your
    own measurements (e.g. from ``Trainer.evaluate``); the paper's reported numbers for the base
    model are added, attributed to the paper. ``summary`` replaces the opening paragraph, ``sections``
    (markdown, each with its own ``##`` heading) follow the results, ``tags`` are added to the card's.
    """
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    facts = _model_card_facts(folder, config)
    existing = _read_card_data(folder / "README.md")
    source_card = _source_card_data(source)
    base_model = base_model or existing.get("base_model") or _base_model_of(source)
    license = license or existing.get("license") or source_card.get("license")
    datasets = datasets or existing.get("datasets") or source_card.get("datasets")
    name = (repo_id or "").split("/")[-1] or (
        f"{base_model.split('/')[-1]}-rlt" if base_model else folder.resolve().name
    )
    if eval_results is None and existing.get("model-index"):
        kept = ModelCardData(**{"model-index": existing["model-index"]}, ignore_metadata_errors=True).eval_results
        eval_results = [result for result in kept or [] if result.source_url != PAPER_URL]
    own_results = list(eval_results or [])
    reported, reported_text = _paper_results(base_model)
    if own_results:
        rows = "\n".join(
            f"| {r.dataset_name} ({r.dataset_split or 'unspecified split'}) | {r.metric_name or r.metric_type} "
            f"| {r.metric_value} |"
            for r in own_results
        )
        measured = f"**Measured on this checkpoint**:\n\n| Dataset | Metric | Value |\n|---|---|---|\n{rows}"
    else:
        measured = "**Measured on this checkpoint**: no accuracy measurement has been made yet."
    results = "\n\n".join([reported_text, measured, BENCHMARKS_TEXT, *sections])

    tags = list(dict.fromkeys([*CARD_TAGS, facts["family"], *tags, *(existing.get("tags") or [])]))
    card_data = ModelCardData(
        library_name="transformers",
        # A base model (encoder) serves no pipeline task of its own.
        pipeline_tag="video-classification" if facts["is_classifier"] else None,
        tags=tags,
        base_model=base_model,
        datasets=datasets,
        license=license,
        metrics=["accuracy"] if own_results or reported else None,
        model_name=name if own_results or reported else None,
        eval_results=(own_results + reported) or None,
    )
    base_model_link = f"[{base_model}](https://huggingface.co/{base_model})" if base_model else "not recorded"
    if summary is None and facts["training_free"]:
        summary = (
            f"{base_model_link if base_model else 'A video transformer'} with Run-Length Tokenization (RLT), "
            "converted training-free with `rlt convert`: the weights are the base model's and the length encoding "
            "is zero, so the model computes what the base model computes on the tokens RLT keeps, and skips the rest."
        )
    elif summary is None:
        summary = "A video transformer with Run-Length Tokenization (RLT)" + (
            f", fine-tuned from {base_model_link}." if base_model else "."
        )
    from . import __version__

    values = {
        **facts,
        "card_data": card_data.to_yaml(),
        "model_title": name,
        "summary": summary,
        "repo_id": repo_id or "path/to/this/folder",
        "base_model_link": base_model_link,
        "results": results,
        "rlt_version": __version__,
    }
    template = resources.files("rlt").joinpath(TEMPLATE).read_text(encoding="utf-8")
    return ModelCard(_render_template(template, values))


def write_model_card(folder: str | Path, **kwargs) -> ModelCard:
    """Write ``model_card(folder, **kwargs)`` to ``folder/README.md`` and return it."""
    card = model_card(folder, **kwargs)
    card.save(Path(folder) / "README.md")
    return card


# --------------------------------------------------------------------------------------------- upload


def check_checkpoint_folder(folder: str | Path) -> list[str]:
    """The files of a complete RLT checkpoint folder, or a ValueError naming what is missing.

    Complete: ``config.json`` with ``auto_map``, the code files it names and the files they import
    (single-dot relative imports), and safetensors weights. A missing processor config is a warning.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a checkpoint folder")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: save the model with save_pretrained first")
    config = json.loads((folder / "config.json").read_text())
    auto_map = config.get("auto_map") or {}
    if not auto_map:
        raise ValueError(f"{folder}/config.json has no auto_map: save an RLT model (or run `rlt convert`) into it")
    missing = []
    if not ((folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()):
        missing.append("model.safetensors")
    missing += code_closure({reference.split(".")[0] + ".py" for reference in auto_map.values()}, folder)[1]
    if missing:
        raise ValueError(f"{folder} is incomplete, missing {sorted(missing)}")
    if not any((folder / name).is_file() for name in PROCESSOR_FILES):
        logger.warning("%s has no processor config: users will have to normalise pixel_values themselves", folder)
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload RLT checkpoint",
    revision: str | None = None,
    update_card: bool = True,
    endpoint: str | None = None,
):
    """Upload a complete RLT checkpoint folder to the Hub (``create_repo`` + ``upload_folder``).

    The folder is checked first (``check_checkpoint_folder``), then the token (``token``, else
    ``HF_TOKEN`` or the one saved by ``hf auth login``): both before any network access. With
    ``update_card``, a missing README.md, or one rlt wrote, is (re)written for ``repo_id``.

    Returns:
        The ``huggingface_hub.CommitInfo`` of the upload.
    """
    folder = Path(folder)
    validate_repo_id(repo_id)
    check_checkpoint_folder(folder)
    token = require_token(token)
    readme = folder / "README.md"
    if update_card:
        if not readme.is_file() or "rlt" in (_read_card_data(readme).get("tags") or []):
            write_model_card(folder, repo_id=repo_id)
        else:
            logger.info("%s/README.md is not an rlt card: uploading it as it is", folder)
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        commit_message=commit_message,
        revision=revision,
        ignore_patterns=["__pycache__/*", "*.pyc", ".cache/*"],
    )
