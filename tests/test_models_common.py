"""The tests every RLT architecture must pass, written once over the cases of ``model_cases.CASES``.

Architecture-specific behaviour (ViViT's CLS token, VideoMAE's pooling variants, legacy weight
names, V-JEPA 2's RoPE positions, clip lengths and attentive probe) is tested in test_videomae.py /
test_vivit.py / test_vjepa2.py.
"""

import importlib
import json

import pytest
import torch
from conftest import run_without_rlt
from model_cases import (
    CASES,
    GRID,
    REPEAT_COUNTS,
    TUBELETS,
    clips_repeating_in_time,
    clips_with_repeats,
    noise_clips,
    without_positions,
)
from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification
from transformers.modeling_layers import GradientCheckpointingLayer

from rlt import VideoCollator
from rlt.training import ClipCollator

pytestmark = pytest.mark.parametrize("case", CASES, ids=str)


def with_prefix(case, counts):
    return [count + case.prefix for count in counts]


def test_threshold_zero_reproduces_vanilla_logits(case):
    vanilla, rlt_model = case.vanilla_and_rlt(rlt_threshold=0.0)
    clips, labels = noise_clips(3), torch.tensor([0, 3, 4])
    with torch.no_grad():
        expected = vanilla(**case.video(clips), labels=labels)
        output = rlt_model(**case.video(clips), labels=labels)
    assert output.tokens_kept.tolist() == with_prefix(case, [TUBELETS] * 3)
    torch.testing.assert_close(output.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.loss, expected.loss, atol=1e-5, rtol=1e-5)


def test_base_model_states_match_vanilla(case):
    vanilla, rlt_model = case.vanilla_and_rlt(base=True, rlt_threshold=0.0)
    clips = noise_clips(2)
    with torch.no_grad():
        expected = vanilla(**case.video(clips), output_hidden_states=True)
        output = rlt_model(**case.video(clips), output_hidden_states=True)
    tokens = TUBELETS + case.prefix
    assert output.last_hidden_state.shape == (1, 2 * tokens, 32)
    torch.testing.assert_close(torch.stack(output.per_clip()), expected.last_hidden_state, atol=1e-5, rtol=1e-5)
    if getattr(expected, "pooler_output", None) is not None:
        torch.testing.assert_close(output.pooler_output, expected.pooler_output, atol=1e-5, rtol=1e-5)
    # transformers' layout: the embeddings, then each of the 2 layers' outputs.
    assert len(output.hidden_states) == len(expected.hidden_states) == 2 + 1
    for ours, theirs in zip(output.hidden_states, expected.hidden_states):
        torch.testing.assert_close(ours[0].view(2, tokens, 32), theirs, atol=1e-5, rtol=1e-5)
    assert output.cu_seqlens.tolist() == [0, tokens, 2 * tokens]
    assert (output.run_lengths == 1).all()


def test_rlt_disabled_runs_every_token_even_on_repeats(case):
    vanilla, rlt_model = case.vanilla_and_rlt(rlt_enabled=False)
    clips = clips_with_repeats()
    with torch.no_grad():
        output = rlt_model(**case.video(clips))
        expected = vanilla(**case.video(clips)).logits
    assert output.tokens_kept.tolist() == with_prefix(case, [TUBELETS] * 3)
    torch.testing.assert_close(output.logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "backend, pooling",
    [(backend, "mean") for backend in ("auto", "per_clip", "padded", "eager", "flex")] + [("auto", "length_weighted")],
)
def test_packed_batch_equals_clips_run_alone(case, backend, pooling):
    _, rlt_model = case.vanilla_and_rlt(rlt_threshold=0.0, rlt_attention=backend, rlt_pooling=pooling)
    with torch.no_grad():
        for name, parameter in rlt_model.named_parameters():
            if name.endswith("length_embeddings.weight"):
                parameter.normal_()  # so that a run length paired with the wrong token would show
    clips = clips_with_repeats()
    with torch.no_grad():
        batch = rlt_model(**case.video(clips))
        alone = [rlt_model(**case.video(clip[None])) for clip in clips]
    assert batch.tokens_kept.tolist() == with_prefix(case, REPEAT_COUNTS)
    assert [out.tokens_kept.item() for out in alone] == with_prefix(case, REPEAT_COUNTS)
    torch.testing.assert_close(batch.logits, torch.cat([out.logits for out in alone]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("run_embedding", ["first", "mean"])
@pytest.mark.parametrize("backend", ["padded", "eager", "per_clip", "dense", "flex"])
def test_proportional_attention_on_exact_repeats_reproduces_vanilla_logits(case, backend, run_embedding, monkeypatch):
    """Without positions, ``L`` exact copies of a token are one key scored ``+ log L`` in every softmax
    (and, attending alike, stay copies through every layer); a prefix token (ViViT's CLS) is one key of
    weight 1 in both models. So RLT at tau 0 with proportional attention and length-weighted pooling
    computes the vanilla model's function on clips that repeat in time; plain attention does not."""
    # RoPE rotates each copy by its own time step, so copies differ from the first layer on: with the
    # rotation the identity (in both models) positions play no part.
    identities = {"apply_rotary_embeddings": lambda self, qk, pos_ids: qk, "rotate": lambda self, q, k, packed: (q, k)}
    for module, name, method in case.rotary_attention:
        monkeypatch.setattr(getattr(importlib.import_module(module), name), method, identities[method])
    clips = clips_repeating_in_time(ragged=backend != "dense")  # "dense" needs clips of equal length
    settings = {"rlt_threshold": 0.0, "rlt_pooling": "length_weighted", "rlt_attention": backend,
                "rlt_run_embedding": run_embedding}
    vanilla, rlt_model = case.vanilla_and_rlt(**settings, rlt_proportional_attention=True)
    with torch.no_grad():
        # Matrices drawn larger than transformers' init (std 0.02): peaked attention whose output is not
        # lost next to the residual stream, so that how many times a key counts shows in the logits.
        for name, parameter in vanilla.named_parameters():
            if parameter.dim() == 2 and name.endswith("weight"):
                parameter.normal_(std=0.3)
    without_positions(vanilla)
    rlt_model.load_state_dict(vanilla.state_dict(), strict=False)
    without_positions(rlt_model)
    plain = case.rlt_model(**settings, rlt_proportional_attention=False)
    plain.load_state_dict(rlt_model.state_dict())
    with torch.no_grad():
        expected = vanilla(**case.video(clips)).logits
        output = rlt_model(**case.video(clips))
        plain_logits = plain(**case.video(clips)).logits
    assert output.tokens_kept.tolist() == with_prefix(case, [11, 4] if backend != "dense" else [11, 11])
    torch.testing.assert_close(output.logits, expected, atol=2e-5, rtol=1e-4)
    # The negative control: without the bias the same model, weights and tokens give other logits.
    assert (plain_logits - expected).abs().max() > 1e-3


def test_proportional_attention_setting_is_checked_and_passes_through_from_model(case):
    import rlt

    with pytest.raises(ValueError, match="rlt_proportional_attention must be True or False"):
        case.rlt_config(rlt_proportional_attention="yes")
    vanilla = case.vanilla_and_rlt()[0]
    model = rlt.from_model(vanilla, threshold=0.0, rlt_proportional_attention=True)
    assert model.config.rlt_proportional_attention is True
    assert case.rlt_config().rlt_proportional_attention is False  # the default: plain attention


def test_run_mean_embedding_is_the_mean_of_each_runs_tubelets(case):
    """``rlt_run_embedding="mean"``: a kept token enters the encoder as the mean of the vanilla model's input
    embeddings (tubelet embedding plus its own position) over the time steps its run covers."""
    from rlt.models.tokenizer import run_lengths_from_keep_mask

    vanilla, rlt_model = case.vanilla_and_rlt(base=True, rlt_threshold=0.1, rlt_run_embedding="mean")
    # Repeats that are not exact (as in real video): the run's tubelets differ, and are dropped at tau 0.1.
    clips = clips_with_repeats()
    clips = clips + 0.01 * torch.randn(clips.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        every = vanilla(**case.video(clips), output_hidden_states=True).hidden_states[0]  # (B, prefix + N, D)
        output = rlt_model(**case.video(clips), output_hidden_states=True)
        rlt_model.config.rlt_run_embedding = "first"
        first = rlt_model(**case.video(clips), output_hidden_states=True).hidden_states[0][0]
    lengths = run_lengths_from_keep_mask(output.keep_mask)
    expected = []
    for clip in range(len(clips)):
        expected.append(every[clip, : case.prefix])
        tokens = every[clip, case.prefix :].view(*GRID, -1)
        for t, h, w in output.keep_mask[clip].nonzero().tolist():
            expected.append(tokens[t : t + lengths[clip, t, h, w], h, w].mean(0, keepdim=True))
    expected = torch.cat(expected)
    assert output.tokens_kept.tolist() == with_prefix(case, REPEAT_COUNTS)
    torch.testing.assert_close(output.hidden_states[0][0], expected, atol=1e-5, rtol=1e-5)
    # The control: the first tubelet of each run (the paper's token) is another input.
    assert (first - expected).abs().max() > 1e-3


def test_run_embedding_setting_is_checked_and_passes_through_from_model(case):
    import rlt

    with pytest.raises(ValueError, match="rlt_run_embedding must be one of"):
        case.rlt_config(rlt_run_embedding="average")
    model = rlt.from_model(case.vanilla_and_rlt()[0], threshold=0.0, rlt_run_embedding="mean")
    assert model.config.rlt_run_embedding == "mean"
    assert case.rlt_config().rlt_run_embedding == "first"  # the default: the paper's token
    model.config.rlt_run_embedding = "average"  # set after the config's checks: the forward names it
    with pytest.raises(ValueError, match="run_embedding must be 'first' or 'mean', got 'average'"):
        model(**case.video(clips_with_repeats()))


def test_static_clip_keeps_one_time_step(case):
    rlt_model = case.rlt_model(base=True)  # default threshold 0.1
    clip = noise_clips(1)[:, :1].expand(1, 8, 3, 32, 32)  # all frames identical
    with torch.no_grad():
        output = rlt_model(**case.video(clip))
    steps, grid_h, grid_w = GRID
    assert output.tokens_kept.tolist() == [grid_h * grid_w + case.prefix]
    assert output.keep_mask[0, 0].all() and not output.keep_mask[0, 1:].any()
    # Prefix tokens stand for themselves; each kept tubelet stands for the whole clip.
    assert output.run_lengths.tolist() == [[1] * case.prefix + [steps] * (grid_h * grid_w)]
    assert output.last_hidden_state.shape == (1, grid_h * grid_w + case.prefix, 32)


def test_keep_mask_computed_in_a_loader_gives_the_same_output(case):
    _, rlt_model = case.vanilla_and_rlt(rlt_threshold=0.0)
    clips = clips_with_repeats()
    collator = VideoCollator.for_model(rlt_model.config)
    keep_mask = collator([{"pixel_values": clip} for clip in clips])["keep_mask"]
    with torch.no_grad():
        own = rlt_model(**case.video(clips))
        given = rlt_model(**case.video(clips), keep_mask=keep_mask)
        everything = rlt_model(**case.video(clips), keep_mask=torch.ones_like(keep_mask))
    torch.testing.assert_close(given.logits, own.logits)
    assert given.tokens_kept.tolist() == with_prefix(case, REPEAT_COUNTS)
    assert everything.tokens_kept.tolist() == with_prefix(case, [TUBELETS] * 3)


@pytest.mark.parametrize("vanilla_config", [False, True], ids=["rlt-config", "vanilla-config"])
def test_both_collators_keep_what_the_model_keeps(case, vanilla_config):
    rlt_model = case.rlt_model(base=True, rlt_threshold=0.0)
    clips = clips_with_repeats()
    with torch.no_grad():
        own = rlt_model(**case.video(clips)).keep_mask
    features = [{"pixel_values": clip, "labels": i} for i, clip in enumerate(clips)]
    # A vanilla config carries no RLT settings: the collators take its token geometry, tau as given.
    config = case.vanilla_config() if vanilla_config else rlt_model.config
    video_collator = VideoCollator.for_model(config)
    if vanilla_config:
        assert video_collator.threshold is None  # RLT is not on in a vanilla model
        video_collator.threshold = 0.0
    clip_collator = ClipCollator.for_model(config, drop="rlt")
    clip_collator.threshold = 0.0
    for batch in (video_collator(features), clip_collator(features)):
        assert set(batch) == {case.input_name, "labels", "keep_mask"}
        assert torch.equal(batch["keep_mask"], own) and batch["labels"].tolist() == [0, 1, 2]
        assert torch.equal(batch[case.input_name], clips)


def test_return_dict_false_gives_a_tuple(case):
    _, classifier = case.vanilla_and_rlt(rlt_threshold=0.0)
    base = case.rlt_model(base=True)
    clips, labels = clips_with_repeats(), torch.tensor([0, 1, 2])
    with torch.no_grad():
        output = classifier(**case.video(clips), labels=labels)
        as_tuple = classifier(**case.video(clips), labels=labels, return_dict=False)
        no_labels = classifier(**case.video(clips), return_dict=False)
        base_output = base(**case.video(clips))
        base_tuple = base(**case.video(clips), return_dict=False)
    assert isinstance(as_tuple, tuple) and isinstance(no_labels, tuple) and isinstance(base_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], output.loss)
    torch.testing.assert_close(as_tuple[1], output.logits)
    torch.testing.assert_close(no_labels[0], output.logits)
    assert torch.equal(no_labels[-1], output.tokens_kept)
    assert len(base_tuple) == len(base_output.to_tuple())  # the fields that are set, last_hidden_state first
    for got, want in zip(base_tuple, base_output.to_tuple()):
        torch.testing.assert_close(got, want)
    classifier.config.return_dict = False  # the config's setting, as transformers' models read it
    with torch.no_grad():
        from_config = classifier(**case.video(clips))
        asked_for = classifier(**case.video(clips), return_dict=True)
    assert isinstance(from_config, tuple) and not isinstance(asked_for, tuple)
    torch.testing.assert_close(from_config[0], output.logits)


def test_save_and_reload_with_the_auto_class(case, tmp_path):
    _, rlt_model = case.vanilla_and_rlt(rlt_threshold=0.0)
    with torch.no_grad():
        for name, parameter in rlt_model.named_parameters():
            if name.endswith("length_embeddings.weight"):
                parameter.normal_()  # saved and loaded too
    rlt_model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == rlt_model.config.model_type
    config_file = type(rlt_model.config).__module__.rsplit(".", 1)[1]
    model_file = type(rlt_model).__module__.rsplit(".", 1)[1]
    assert saved["auto_map"] == {
        "AutoConfig": f"{config_file}.{type(rlt_model.config).__name__}",
        "AutoModel": f"{model_file}.{case.architecture.rlt_class(False).__name__}",
        "AutoModelForVideoClassification": f"{model_file}.{type(rlt_model).__name__}",
    }
    assert type(AutoConfig.from_pretrained(tmp_path)) is type(rlt_model.config)
    assert type(AutoModel.from_pretrained(tmp_path)) is case.architecture.rlt_class(False)
    reloaded = AutoModelForVideoClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(rlt_model)
    assert reloaded.config.rlt_token_grid == GRID and reloaded.config.rlt_threshold == 0.0
    clips = clips_with_repeats()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**case.video(clips)).logits, rlt_model(**case.video(clips)).logits)


def test_saved_folder_loads_in_a_process_without_rlt(case, tmp_path):
    _, rlt_model = case.vanilla_and_rlt(rlt_threshold=0.0)
    folder = tmp_path / "checkpoint"
    rlt_model.save_pretrained(folder)
    clips = clips_with_repeats()
    torch.save(clips, tmp_path / "clips.pt")
    base_class = case.architecture.rlt_class(False).__name__
    with torch.no_grad():
        expected = rlt_model(**case.video(clips))
        expected_states = getattr(rlt_model, rlt_model.base_model_prefix)(**case.video(clips)).last_hidden_state
    code = f"""
        import torch
        from transformers import AutoModel, AutoModelForVideoClassification
        video = {{{case.input_name!r}: torch.load({str(tmp_path / "clips.pt")!r})}}
        model = AutoModelForVideoClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        encoder = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        for loaded, name in ((model, {type(rlt_model).__name__!r}), (encoder, {base_class!r})):
            assert type(loaded).__name__ == name, type(loaded)
            assert not type(loaded).__module__.startswith("rlt."), type(loaded).__module__
        with torch.no_grad():
            output = model(**video)
            states = encoder(**video).last_hidden_state
        result = {{"logits": output.logits, "tokens_kept": output.tokens_kept, "states": states}}
        torch.save(result, {str(tmp_path / "out.pt")!r})
        """
    run_without_rlt(code, cwd=tmp_path)
    result = torch.load(tmp_path / "out.pt")
    assert result["tokens_kept"].tolist() == with_prefix(case, REPEAT_COUNTS)
    torch.testing.assert_close(result["logits"], expected.logits, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(result["states"], expected_states, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((8, 3, 32, 32), "shape \\(batch, frames, channels, height, width\\)"),
        ((1, 8, 1, 32, 32), "has 1 channels at dimension 2, the model expects 3"),
        ((1, 3, 8, 32, 32), "looks like \\(batch, channels, frames"),
        ((1, 8, 32, 32, 3), "channels-last"),
        # A table of positions takes a fixed frame count; RoPE (V-JEPA 2) any whole number of tubelets.
        (
            (1, 7, 3, 32, 32),
            "7 frames of 32x32; this model takes 8 frames|7 frames, not a multiple of the tubelet size 2",
        ),
        ((1, 8, 3, 48, 48), "48x48"),
    ],
)
def test_bad_input_is_named(case, shape, message):
    for rlt_model in (case.rlt_model(), case.rlt_model(base=True)):
        with pytest.raises(ValueError, match=message):
            rlt_model(**case.video(torch.zeros(shape)))


def test_bad_settings_and_arguments_are_named(case):
    with pytest.raises(ValueError, match="rlt_threshold must be a finite number >= 0"):
        case.rlt_config(rlt_threshold=-0.5)
    with pytest.raises(ValueError, match="unknown RLT attention backend 'xformers'"):
        case.rlt_config(rlt_attention="xformers")
    with pytest.raises(ValueError, match="rlt_pooling"):
        case.rlt_config(rlt_pooling="max")
    with pytest.raises(ValueError, match="rlt_input_scale must hold 3 positive numbers"):
        case.rlt_config(rlt_input_scale=[1.0, 2.0])
    rlt_model = case.rlt_model()
    clips = noise_clips(1)
    with pytest.raises(ValueError, match="output_attentions"):
        rlt_model(**case.video(clips), output_attentions=True)
    with pytest.raises(ValueError, match="attention_mask is not supported"):
        rlt_model(**case.video(clips), attention_mask=torch.ones(1, TUBELETS))
    with pytest.raises(ValueError, match="interpolate_pos_encoding is not supported"):
        rlt_model(**case.video(clips), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match="keep_mask has grid"):
        rlt_model(**case.video(clips), keep_mask=torch.ones(1, 2, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="first time step"):
        rlt_model(**case.video(clips), keep_mask=torch.zeros(1, *GRID, dtype=torch.bool))
    with pytest.raises(ValueError, match=f"{case.input_name} must be a float tensor"):
        rlt_model(**case.video((clips * 100).to(torch.uint8)))
    with pytest.raises(TypeError, match=f"{case.input_name} must be a torch.Tensor"):
        rlt_model(**case.video(clips.numpy()))
    rlt_model.config.rlt_attention = "varlen"
    with pytest.raises((ValueError, RuntimeError), match="CUDA"):
        rlt_model(**case.video(clips_with_repeats()))
    rlt_model.config.rlt_attention = "nonsense"
    with pytest.raises(ValueError, match="unknown RLT attention backend 'nonsense'"):
        rlt_model(**case.video(clips))


def test_training_step_reaches_every_weight_and_reduces_loss(case):
    model = case.rlt_model(rlt_threshold=0.0, rlt_length_encoding_init="trunc_normal", num_labels=2).train()
    clips = clips_with_repeats()[:2].repeat(2, 1, 1, 1, 1)
    labels = torch.tensor([0, 1, 0, 1])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(10):
        output = model(**case.video(clips), labels=labels)
        optimizer.zero_grad()
        output.loss.backward()
        if step == 0:  # the length table, the patch projection, prefix tokens: everything learns
            no_gradient = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            assert no_gradient == []
        losses.append(output.loss.item())
        optimizer.step()
    assert losses[-1] < losses[0] * 0.5


def test_autocast_reaches_the_attention_kernel_in_its_dtype(case, monkeypatch):
    """Under bf16 autocast every packed attention call must see bf16 inputs, as SDPA would: a float32
    query (V-JEPA 2's RoPE in some transformers releases) would pick a slow float32-only fallback on CUDA."""
    from rlt.models import attention_kernels

    seen = []
    resolve = attention_kernels.resolve_backend

    def spy(requested, attn_implementation, query, packed, dropout):
        seen.append(query.dtype)
        return resolve(requested, attn_implementation, query, packed, dropout)

    monkeypatch.setattr(attention_kernels, "resolve_backend", spy)
    rotary_like = attention_kernels.packed_attention

    def float32_inputs(query, key, value, *args, **kwargs):  # as a float32 rotation would hand them over
        return rotary_like(query.float(), key.float(), value, *args, **kwargs)

    model = case.rlt_model(rlt_threshold=0.0).train()
    for module in list(model.modules()):
        module_globals = getattr(type(module).forward, "__globals__", {})
        if module_globals.get("packed_attention") is rotary_like:
            monkeypatch.setitem(module_globals, "packed_attention", float32_inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(**case.video(clips_with_repeats()), labels=torch.tensor([0, 1, 2]))
    output.loss.backward()
    assert seen and set(seen) == {torch.bfloat16}, seen


def count_checkpointed_layers(model) -> tuple[list[str], list[str]]:
    """The model's checkpointable layers, and a list that each one's checkpoint function appends its name
    to when it runs (the function ``gradient_checkpointing_enable`` installs, or torch's if none is yet)."""
    layers, calls = [], []
    for name, module in model.named_modules():
        if isinstance(module, GradientCheckpointingLayer):
            checkpoint_function = getattr(module, "_gradient_checkpointing_func", torch.utils.checkpoint.checkpoint)

            def counted(*args, _name=name, _checkpoint=checkpoint_function, **kwargs):
                calls.append(_name)
                return _checkpoint(*args, **kwargs)

            module._gradient_checkpointing_func = counted
            layers.append(name)
    return layers, calls


def test_gradient_checkpointing_gives_the_same_gradients(case):
    model = case.rlt_model(rlt_threshold=0.0).train()
    clips, labels = clips_with_repeats(), torch.tensor([0, 1, 2])
    layers, calls = count_checkpointed_layers(model)
    assert len(layers) >= model.config.num_hidden_layers, layers
    model(**case.video(clips), labels=labels).loss.backward()
    assert calls == []  # not enabled: the count below would catch a checkpointing that silently does nothing
    expected = {name: parameter.grad.clone() for name, parameter in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    layers, calls = count_checkpointed_layers(model)
    model(**case.video(clips), labels=labels).loss.backward()
    assert sorted(calls) == sorted(layers)  # every layer checkpointed, once
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.grad, expected[name], msg=name)


def test_trainer_num_items_in_batch_reaches_the_loss(case):
    _, rlt_model = case.vanilla_and_rlt(rlt_threshold=0.0)
    clips, labels = noise_clips(2), torch.tensor([1, 3])
    mean_loss = rlt_model(**case.video(clips), labels=labels).loss
    summed_over_4 = rlt_model(**case.video(clips), labels=labels, num_items_in_batch=torch.tensor(4)).loss
    torch.testing.assert_close(summed_over_4, mean_loss / 2)


def static_clips(batch: int) -> torch.Tensor:
    """Clips whose frames all repeat the first: each keeps one time step (4 of 16 tubelets)."""
    return noise_clips(batch)[:, :1].expand(batch, 8, 3, 32, 32).contiguous()


def forward_and_gradients(model, case, clips, labels):
    output = model(**case.video(clips), labels=labels)
    output.loss.backward()
    gradients = {name: parameter.grad.clone() for name, parameter in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return output, gradients


@pytest.mark.parametrize("inputs", ["repeats", "static"])
@pytest.mark.parametrize("backend", ["auto", "padded", "eager"])  # FlexAttention has no CPU backward
@pytest.mark.parametrize("buckets", [1, 3, 8])
def test_bucketed_packing_gives_the_same_logits_and_gradients(case, buckets, backend, inputs):
    model = case.rlt_model(rlt_threshold=0.0, rlt_attention=backend, rlt_length_encoding_init="trunc_normal")
    clips = clips_with_repeats() if inputs == "repeats" else static_clips(3)
    labels = torch.tensor([0, 1, 2])
    expected, expected_gradients = forward_and_gradients(model, case, clips, labels)
    model.config.rlt_pack_buckets = buckets
    output, gradients = forward_and_gradients(model, case, clips, labels)
    assert output.tokens_kept.tolist() == expected.tokens_kept.tolist()
    torch.testing.assert_close(output.logits, expected.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.loss, expected.loss, atol=1e-6, rtol=1e-5)
    for name, gradient in expected_gradients.items():
        torch.testing.assert_close(gradients[name], gradient, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("backend", ["auto", "flex"])
def test_bucketed_base_model_outputs_hold_no_padding(case, backend):
    model = case.rlt_model(base=True, rlt_threshold=0.0, rlt_attention=backend)
    clips = clips_with_repeats()
    with torch.no_grad():
        expected = model(**case.video(clips), output_hidden_states=True)
        model.config.rlt_pack_buckets = 8
        output = model(**case.video(clips), output_hidden_states=True)
    assert output.last_hidden_state.shape == expected.last_hidden_state.shape  # the padding rows are dropped
    for field in ("last_hidden_state", "run_lengths", "cu_seqlens", "tokens_kept"):
        torch.testing.assert_close(getattr(output, field), getattr(expected, field), atol=1e-5, rtol=1e-5)
    assert len(output.hidden_states) == len(expected.hidden_states)
    for got, want in zip(output.hidden_states, expected.hidden_states):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for got, want in zip(output.per_clip(), expected.per_clip()):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["auto", "padded", "eager"])  # auto is per_clip here: it splits the padding off
def test_padding_tokens_never_reach_the_outputs(case, backend, monkeypatch):
    """Whatever the padding rows hold (here: huge values written into them after the embedding), the
    clips' outputs and gradients do not change: no clip attends to them and no head pools them."""
    from rlt.models import modeling_rlt

    model = case.rlt_model(rlt_threshold=0.0, rlt_pack_buckets=8, rlt_attention=backend)
    clips, labels = clips_with_repeats(), torch.tensor([0, 1, 2])
    expected, expected_gradients = forward_and_gradients(model, case, clips, labels)
    run_encoder = modeling_rlt.run_encoder
    poisoned = []

    def poison_padding(layers, hidden_states, packed, output_hidden_states):
        real = packed.num_real_tokens
        assert hidden_states.shape[0] > real  # this batch is padded
        poisoned.append(hidden_states.shape[0] - real)
        hidden_states = torch.cat([hidden_states[:real], 1e4 + hidden_states[real:] * 1e3])
        return run_encoder(layers, hidden_states, packed, output_hidden_states)

    monkeypatch.setattr(modeling_rlt, "run_encoder", poison_padding)  # the one encoder loop, every architecture's
    output, gradients = forward_and_gradients(model, case, clips, labels)
    assert poisoned
    torch.testing.assert_close(output.logits, expected.logits, atol=1e-5, rtol=1e-5)
    for name, gradient in expected_gradients.items():
        torch.testing.assert_close(gradients[name], gradient, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("base", [False, True], ids=["classifier", "base"])
def test_bucketed_compile_does_not_recompile_within_a_bucket(case, base):
    """torch.compile over bucketed packing: batches with different kept counts that fall in one bucket
    reuse the graphs of the first call (dynamo's own counters; backend "eager" compiles as often as inductor).
    The base model too, whose output drops the padding (a host length, read outside the graph)."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    # 4 buckets of 2 * 16 / 4 = 8 tubelets: every batch below keeps 17..24 tubelets, so the bucket of 24 (+ prefix).
    model = case.rlt_model(base, rlt_threshold=0.0, rlt_pack_buckets=4, rlt_attention="padded")
    compiled = torch.compile(model, backend="eager")
    totals, graphs = [], []
    for step, steps_kept in enumerate([(4, 1), (3, 3), (2, 3), (4, 2)]):
        clips = noise_clips(2, seed=step)
        for clip, kept in zip(clips, steps_kept):
            clip[2 * kept - 2 :] = clip[2 * kept - 2].clone()  # time steps after the first `kept` repeat
        with torch.no_grad():
            output = compiled(**case.video(clips))
            expected = model(**case.video(clips))
        totals.append(int(output.tokens_kept.sum()) - 2 * case.prefix)
        result = "last_hidden_state" if base else "logits"
        torch.testing.assert_close(output[result], expected[result], atol=1e-5, rtol=1e-5)
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert len(set(totals)) > 1 and all(17 <= total <= 24 for total in totals), totals
    if base:  # the output's epilogue (after the padding is dropped) sees the real length: dynamic from batch 2 on
        assert graphs[-1] == graphs[1], graphs
    else:
        assert graphs[-1] == graphs[0], graphs
    torch._dynamo.reset()
