"""The architecture registry, rlt.from_model, the checkpoint-code layout, and an old checkpoint folder."""

import ast
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import run_without_rlt
from model_cases import CASES, SHAPE, clips_with_repeats, noise_clips
from safetensors.torch import load_file
from transformers import AutoModelForVideoClassification, ViTConfig, ViTModel, VivitImageProcessor
from transformers.dynamic_module_utils import get_imports

import rlt
from rlt import registry
from rlt.conversion import code_files_of
from rlt.models import CHECKPOINT_FILES, FOLDER, relative_imports

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_ARCHIVE = ROOT / "tests" / "fixtures" / "rlt_videomae_v0_1_0.zip"


# ------------------------------------------------------------------------------------------ lookups


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_lookup_finds_the_architecture(case):
    entry = case.architecture
    assert entry in registry.architectures() and registry.get(entry.name) is entry
    for model_type in entry.model_types:
        assert registry.for_model_type(model_type) is entry
    vanilla, rlt_model = case.vanilla_and_rlt()
    assert registry.for_config(vanilla.config) is entry and registry.for_config(rlt_model.config) is entry
    assert registry.for_config(vanilla.config.to_dict()) is entry
    assert registry.for_model(vanilla) is entry and registry.for_model(rlt_model) is entry
    # The Auto classes know the RLT classes once rlt is imported.
    assert AutoModelForVideoClassification.from_config(rlt_model.config).__class__ is entry.classifier_class


@pytest.mark.parametrize("case", CASES, ids=str)
def test_token_geometry_is_the_same_for_a_vanilla_and_an_rlt_config(case):
    vanilla_geometry = registry.as_rlt_config(case.vanilla_config())
    rlt_config = case.rlt_config()
    assert registry.as_rlt_config(rlt_config) is rlt_config
    for name in ("rlt_num_frames", "rlt_image_size", "rlt_num_channels", "rlt_tubelet_size", "rlt_patch_size",
                 "rlt_token_grid", "rlt_num_prefix_tokens", "rlt_input_name", "rlt_tokens_per_clip"):
        assert getattr(vanilla_geometry, name) == getattr(rlt_config, name), name
    assert rlt_config.rlt_token_grid == (SHAPE.num_frames // 2, SHAPE.image_size // 16, SHAPE.image_size // 16)
    assert "rlt_token_grid" not in rlt_config.to_dict()  # derived, not saved


def test_unknown_architectures_are_named_with_the_supported_ones():
    with pytest.raises(registry.UnsupportedArchitectureError, match=r"'vit' model; it supports VideoMAE .*ViViT"):
        registry.for_model_type("vit")
    with pytest.raises(ValueError, match=r"no architecture named 'timesformer'; rlt knows \['videomae', 'vivit'"):
        registry.get("timesformer")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.get("videomae"))


# ------------------------------------------------------------------------------------------ from_model


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("base", [False, True], ids=["classifier", "base"])
def test_from_model_shares_the_weights_and_reproduces_the_model_at_threshold_zero(case, base):
    vanilla, _ = case.vanilla_and_rlt(base=base)
    rlt_model = rlt.from_model(vanilla, threshold=0.0, rlt_pooling="length_weighted")
    assert type(rlt_model) is case.architecture.rlt_class(not base)
    assert not rlt_model.training and rlt_model.config.rlt_pooling == "length_weighted"
    # The same tensors, not copies: same storage for every weight the model had.
    vanilla_weights = dict(vanilla.named_parameters())
    for name, parameter in rlt_model.named_parameters():
        if name.endswith("length_embeddings.weight"):
            assert torch.equal(parameter, torch.zeros_like(parameter))  # training-free
        else:
            assert parameter.data_ptr() == vanilla_weights[name].data_ptr(), name
    assert not any(tensor.is_meta for tensor in [*rlt_model.parameters(), *rlt_model.buffers()])
    clips = noise_clips(2)
    with torch.no_grad():
        expected, output = vanilla(**case.video(clips)), rlt_model(**case.video(clips))
    if base:
        torch.testing.assert_close(torch.stack(output.per_clip()), expected.last_hidden_state, atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(output.logits, expected.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_from_model_keeps_dtype_and_training_mode_and_drops_tokens(case):
    vanilla, _ = case.vanilla_and_rlt()
    vanilla = vanilla.to(torch.bfloat16).train()
    rlt_model = rlt.from_model(vanilla)  # default threshold 0.1
    assert rlt_model.training and rlt_model.dtype == torch.bfloat16 and rlt_model.config.rlt_threshold == 0.1
    assert all(
        tensor.dtype == torch.bfloat16 for tensor in rlt_model.state_dict().values() if tensor.is_floating_point()
    )
    clips = clips_with_repeats()
    clips[:, :, :, :, :] = clips[:, :1]  # static clips: one time step kept
    with torch.no_grad():
        output = rlt_model.eval()(**case.video(clips.to(torch.bfloat16)))
    assert output.tokens_kept.tolist() == [4 + case.prefix] * 3


def test_from_model_takes_the_input_scale_of_the_processor():
    case = next(case for case in CASES if case.name == "vivit")
    vanilla, _ = case.vanilla_and_rlt()
    # ViViT's processor: pixels to [-1, 1] (1/127.5), then std 0.5; given, or assumed from the registry.
    assert rlt.from_model(vanilla, processor=VivitImageProcessor()).config.rlt_input_scale == pytest.approx(
        [1 / 127.5 / 0.5] * 3
    )
    assert rlt.from_model(vanilla).config.rlt_input_scale == pytest.approx([1 / 127.5 / 0.5] * 3)
    imagenet = rlt.RLTVideoProcessor()
    assert rlt.from_model(vanilla, processor=imagenet).config.rlt_input_scale == pytest.approx(imagenet.rlt_input_scale)


def test_from_model_errors_name_what_is_supported():
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ValueError, match=r"'vit' model; it supports VideoMAE \(model_type 'videomae'\), ViViT"):
        rlt.from_model(vit)
    with pytest.raises(ValueError, match="has no config"):
        rlt.from_model(torch.nn.Linear(2, 2))
    case = CASES[0]
    _, rlt_model = case.vanilla_and_rlt()
    with pytest.raises(TypeError, match="already an RLT model"):
        rlt.from_model(rlt_model)
    vanilla, _ = case.vanilla_and_rlt()
    with pytest.raises(TypeError, match=r"unknown setting 'pooling' \(did you mean 'rlt_pooling'\?\)"):
        rlt.from_model(vanilla, pooling="mean")
    with pytest.raises(ValueError, match="rlt_threshold must be a finite number >= 0"):
        rlt.from_model(vanilla, threshold=-1)
    vanilla.fc_norm = None  # a model whose weights do not cover what the RLT class needs
    with pytest.raises(ValueError, match=r"lacks weights RLTVideoMAEForVideoClassification needs: \['fc_norm"):
        rlt.from_model(vanilla)


# ------------------------------------------------------------------------------------------ layout


def module_level_and_function_imports(path: Path) -> list[ast.AST]:
    """Every import statement of a file outside ``try`` blocks (transformers' loader demands those)."""
    found = []

    def visit(node):
        if isinstance(node, ast.Try):
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_checkpoint_code_imports_only_torch_transformers_and_itself(name):
    # numpy and the standard library come with transformers; optional packages (av, torchcodec,
    # flash_attn) must be imported inside try, where transformers' loader does not demand them.
    allowed = {"torch", "transformers", "numpy", "__future__"} | set(sys.stdlib_module_names)
    path = FOLDER / name
    for node in module_level_and_function_imports(path):
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.level == 1 and node.module, f"{name}:{node.lineno}: only `from .module import x` travels"
            assert f"{node.module}.py" in CHECKPOINT_FILES, f"{name}:{node.lineno}: .{node.module} is not in rlt/models"
            continue
        modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
        for module in modules:
            assert module.split(".")[0] in allowed, f"{name}:{node.lineno} imports {module}"
    # And as transformers itself reads the file when loading it with trust_remote_code:
    assert set(get_imports(path)) <= allowed, get_imports(path)


def test_checkpoint_files_are_the_models_folder():
    assert set(CHECKPOINT_FILES) == {p.name for p in FOLDER.glob("*.py")} - {"__init__.py"}
    assert {"tokenizer.py", "packing.py", "modeling_rlt.py", "video_processing_rlt.py"} <= set(CHECKPOINT_FILES)
    assert {"attention_kernels.py", "token_choice.py", "video_decoding.py"} <= set(CHECKPOINT_FILES)
    for entry in registry.architectures():  # every registered class lives in rlt/models
        for cls in (entry.config_class, entry.model_class, entry.classifier_class):
            assert cls.__module__.rsplit(".", 1)[0] == "rlt.models", cls
    files = code_files_of(registry.get("videomae").classifier_class, rlt.RLTVideoProcessor)
    assert "modeling_rlt_vivit.py" not in files and {"modeling_rlt_videomae.py", "tokenizer.py"} <= set(files)
    for entry in registry.architectures():  # the modules split out of packing, modeling_rlt and the processor travel
        assert {"packing.py", "attention_kernels.py", "token_choice.py"} <= set(code_files_of(entry.classifier_class))
    assert {"video_processing_rlt.py", "video_decoding.py"} <= set(code_files_of(rlt.RLTVideoProcessor))
    assert relative_imports("from .packing import x\nimport torch\nfrom . import y\n") == ["packing"]


def test_split_modules_keep_their_old_import_paths():
    """What moved out of packing, video_processing_rlt and modeling_rlt into a module of its own stays
    importable from the old module, as the same object (user code and older tools import it there)."""
    from rlt.models import attention_kernels, modeling_rlt, packing, token_choice, video_decoding, video_processing_rlt

    for old, new in ((packing, attention_kernels), (video_processing_rlt, video_decoding), (modeling_rlt, token_choice)):
        for name in new.__all__:
            assert getattr(old, name) is getattr(new, name), f"{old.__name__}.{name}"
    assert packing.key_score_mask is attention_kernels.key_score_mask


def test_tools_do_not_test_model_types():
    """No tool compares against an architecture's name or model_type: they ask rlt.registry."""
    pattern = ("videomae", "vivit", "vjepa")
    tools = [p for p in (ROOT / "src" / "rlt").rglob("*.py") if "models" not in p.parts and p.name != "registry.py"]
    tools.append(ROOT / "examples" / "train_video_classification.py")
    offenders = []
    for path in tools:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                texts = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
                if any(word in text.lower() for text in texts for word in pattern):
                    offenders.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in ("startswith", "endswith"):
                receiver = ast.unparse(node.func.value)
                if "model_type" in receiver or "tubelet" in receiver:  # model_type.startswith("rlt_")
                    offenders.append(f"{path.name}:{node.lineno}")
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", "") == "isinstance"
                and "tubelet" in ast.unparse(node.args[0])  # isinstance(config.tubelet_size, list): ViViT
            ):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


# ---------------------------------------------------------------------------- a folder from rlt 0.1.0


@pytest.fixture(scope="module")
def old_folder(tmp_path_factory) -> Path:
    """The checkpoint folder rlt 0.1.0's `rlt convert` wrote (tests/fixtures/README.md), unpacked."""
    out = tmp_path_factory.mktemp("rlt-0.1.0")
    with zipfile.ZipFile(FIXTURE_ARCHIVE) as archive:
        archive.extractall(out)
    return out


@pytest.fixture(scope="module")
def reference(old_folder):
    return load_file(old_folder / "reference.safetensors")


def test_a_folder_converted_by_rlt_0_1_0_loads_with_its_own_code(old_folder, reference, tmp_path):
    # Where rlt is not installed: the folder's own code files (as rlt 0.1.0 wrote them) run.
    folder = old_folder / "rlt_videomae_v0_1_0"
    code = f"""
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModelForVideoClassification
        model = AutoModelForVideoClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__name__ == "RLTVideoMAEForVideoClassification", type(model)
        assert not type(model).__module__.startswith("rlt."), type(model).__module__
        clip = load_file({str(old_folder / "reference.safetensors")!r})["clip"]
        with torch.no_grad():
            output = model(clip)
        torch.save({{"logits": output.logits, "tokens_kept": output.tokens_kept}}, {str(tmp_path / "out.pt")!r})
        """
    run_without_rlt(code, cwd=tmp_path)
    output = torch.load(tmp_path / "out.pt")
    assert output["tokens_kept"].tolist() == reference["tokens_kept"].tolist() == [24]
    torch.testing.assert_close(output["logits"], reference["rlt_logits"])


def test_a_folder_converted_by_rlt_0_1_0_loads_into_todays_classes(old_folder, reference):
    folder = old_folder / "rlt_videomae_v0_1_0"
    for model in (
        AutoModelForVideoClassification.from_pretrained(folder),  # rlt registered the Auto classes
        rlt.RLTVideoMAEForVideoClassification.from_pretrained(folder),
    ):
        model.eval()
        assert type(model) is rlt.RLTVideoMAEForVideoClassification
        with torch.no_grad():
            output = model(reference["clip"])
        assert output.tokens_kept.tolist() == [24]
        torch.testing.assert_close(output.logits, reference["rlt_logits"])
        model.config.rlt_enabled = False  # every token: the vanilla model's function
        with torch.no_grad():
            torch.testing.assert_close(model(reference["clip"]).logits, reference["vanilla_logits"])
