"""The benchmark's cases: the models (vanilla and RLT at their real sizes, random weights) and the
timed cases run on them (inference, training step, attention backends, torch.compile).

``Bench`` runs one model's cases and collects one row per case; ``rlt.benchmark.report`` turns the
rows into the table.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import registry
from ..common import compiled_graphs, synchronize
from ..models.attention_kernels import resolve_backend
from ..models.token_choice import choose_tokens, run_length_tokenize_for
from .clips import InputFactory, cut_windows, normalize
from .timing import RecompileRecorder, busy_fraction, measure, peak_memory_gb, reset_peak_memory

__all__ = ["MODELS", "PARTS", "TINY_MODELS", "Bench", "ModelSpec", "Settings", "build_models", "error_text"]

PARTS = ("core", "sweep", "backends", "train", "compile")


@dataclass(frozen=True)
class ModelSpec:
    family: str  # an architecture of rlt.registry: "videomae", "vivit", ...
    hidden: int
    layers: int
    heads: int
    mlp: int
    frames: int
    image_size: int = 224

    @property
    def shape(self) -> registry.ModelShape:
        # ModelShape's first six fields, in this order: hidden, layers, heads, MLP, frames, frame size.
        return registry.ModelShape(self.hidden, self.layers, self.heads, self.mlp, self.frames, self.image_size)


MODELS = {
    "videomae-b": ModelSpec("videomae", 768, 12, 12, 3072, 16),
    "videomae-l": ModelSpec("videomae", 1024, 24, 16, 4096, 16),
    # ViT-S at three sizes: where a step holds few tokens, launches rather than FLOPs can bound it.
    "videomae-s": ModelSpec("videomae", 384, 12, 6, 1536, 16),
    "videomae-s-160": ModelSpec("videomae", 384, 12, 6, 1536, 16, 160),
    "videomae-s-112": ModelSpec("videomae", 384, 12, 6, 1536, 16, 112),
    "vivit-b": ModelSpec("vivit", 768, 12, 12, 3072, 32),
    "vjepa2-l": ModelSpec("vjepa2", 1024, 24, 16, 4096, 64, 256),  # facebook/vjepa2-vitl-fpc64-256's encoder
}
TINY_MODELS = {
    "videomae-b": ModelSpec("videomae", 64, 2, 4, 128, 4, 32),
    "videomae-l": ModelSpec("videomae", 96, 3, 4, 192, 4, 32),
    "videomae-s": ModelSpec("videomae", 48, 2, 4, 96, 4, 32),
    "videomae-s-160": ModelSpec("videomae", 48, 2, 4, 96, 4, 48),
    "videomae-s-112": ModelSpec("videomae", 48, 2, 4, 96, 4, 64),
    "vivit-b": ModelSpec("vivit", 64, 2, 4, 128, 8, 32),
    "vjepa2-l": ModelSpec("vjepa2", 64, 2, 4, 128, 16, 32),
}


def build_models(spec: ModelSpec, num_labels: int, device: torch.device, seed: int = 0):
    """The vanilla model and the RLT model, both float32 on ``device``, the RLT one with the vanilla weights."""
    architecture = registry.get(spec.family)
    kwargs = dict(
        architecture.config_fields(spec.shape),
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        # transformers' classification loss sets problem_type on its first call when it is None; that
        # mutation of the config fails torch.compile's guards once (a recompile that is not the model's).
        problem_type="single_label_classification",
    )
    torch.manual_seed(seed)
    vanilla_config = architecture.vanilla_classifier_class.config_class(**kwargs)
    vanilla = architecture.vanilla_classifier_class._from_config(vanilla_config, attn_implementation="sdpa")
    rlt_config = architecture.rlt_config(kwargs, rlt_input_scale=None)  # inputs use the ImageNet (reference) scale
    model = architecture.classifier_class._from_config(rlt_config, attn_implementation="sdpa")
    missing, unexpected = model.load_state_dict(vanilla.state_dict(), strict=False)
    load_report = {"missing": sorted(missing), "unexpected": sorted(unexpected)}
    return vanilla.to(device), model.to(device), load_report


def _video(config, x: torch.Tensor) -> dict:
    """``x`` as the model's video argument: ``pixel_values``, or its architecture's name."""
    return {registry.as_rlt_config(config).rlt_input_name: x}


def error_text(error: Exception) -> str:
    """A failed case's error, on one line, for its row."""
    return f"{type(error).__name__}: {error}".splitlines()[0]


def host_keep_masks(config, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """RLT's keep mask of each input, computed on the host as a loader worker would (``VideoCollator``):
    passed as ``keep_mask=``, it spares the forward its device sync (the ``rlt_hostkeep`` rows)."""
    # In the input's own dtype, as the model tokenizes it: a float32 copy could decide differently near tau.
    return [run_length_tokenize_for(config, x.detach().cpu()).keep_mask for x in inputs]


@dataclass
class Settings:
    device: torch.device
    dtype: torch.dtype  # inference compute dtype
    inference_precision: str  # "bf16-weights", "autocast" or "fp32"
    train_autocast: bool
    batch_sizes: list[int]
    train_batch_size: int
    warmup: int
    iters: int
    input_sets: int
    tau: float
    sweep: list[float]
    backends: list[str]
    inputs: list[str]
    parts: list[str]
    compile_batches: int
    compile_budget_s: float
    compile_backend: str
    compile_mode: str | None
    num_labels: int
    window_hop: float
    pack_buckets: int = 0  # > 0: also run RLT with rlt_pack_buckets (the "rlt_b<k>" rows); compiled RLT uses it
    proportional_attention: bool = False  # also run RLT with rlt_proportional_attention (the "rlt_prop" rows)
    busy_fraction: bool = False  # profile a few calls per timed case for the device's busy fraction
    train_inputs: list[str] = field(default_factory=lambda: ["real"])  # input kinds of the training step
    compile_inputs: list[str] = field(default_factory=lambda: ["real"])  # input kinds of the torch.compile cases


class Bench:
    """Runs one model's cases under ``settings`` and collects one row (a dict) per case in ``rows``."""

    def __init__(self, settings: Settings, deadline: float | None = None, on_row: Callable | None = None):
        self.settings = settings
        self.rows: list[dict] = []
        self.model_info: dict = {}
        self.deadline = deadline  # time.perf_counter() value after which cases are skipped
        self.on_row = on_row
        self.started = time.perf_counter()

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    def skip_if_late(self, row: dict) -> dict | None:
        if self.out_of_time():
            return self.add_row(**row, error="skipped: --deadline-s reached")
        return None

    # ---- helpers ---------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        blank = "\n" if message.startswith("\n") else ""
        print(f"{blank}[{time.perf_counter() - self.started:6.1f} s] {message.lstrip()}", flush=True)

    def autocast(self, enabled: bool):
        return torch.autocast(self.settings.device.type, dtype=torch.bfloat16, enabled=enabled)

    def token_stats(
        self, config, inputs: list[torch.Tensor], cls_tokens: int, tau: float | None, keep_masks=None
    ) -> dict:
        """Tokens kept by ``run_length_tokenize`` on these inputs (all kept when ``tau`` is None, those of
        ``keep_masks`` when given); ``cls_tokens``: prefix tokens per clip, never dropped. ``config`` may be
        the vanilla model's."""
        config = registry.as_rlt_config(config)
        tubelet, (patch_h, patch_w) = config.rlt_tubelet_size, config.rlt_patch_size
        prefix = cls_tokens * sum(x.shape[0] for x in inputs)
        tubelets = sum(x.shape[0] * (x.shape[1] // tubelet) * (x.shape[3] // patch_h) * (x.shape[4] // patch_w)
                       for x in inputs)
        if tau is None:
            kept = tubelets
        else:
            masks = keep_masks or [run_length_tokenize_for(config, x, threshold=tau).keep_mask for x in inputs]
            kept = sum(int(mask.sum()) for mask in masks)
        return {
            "kept_frac": kept / tubelets,
            "ideal": (tubelets + prefix) / (kept + prefix),
            "tokens_full": tubelets + prefix,
            "tokens_kept": kept + prefix,
        }

    def resolved_backend(self, model, x: torch.Tensor, dtype: torch.dtype) -> str:
        """The attention backend "auto" (or the configured one) picks for this batch."""
        config = model.config
        if not hasattr(config, "rlt_enabled"):
            return config._attn_implementation  # the vanilla model
        if not config.rlt_enabled and config.rlt_attention == "auto":
            return "dense"
        try:
            _, packed = choose_tokens(config, x)
            query = torch.empty(1, 1, 1, dtype=dtype, device=x.device)
            return resolve_backend(config.rlt_attention, config._attn_implementation, query, packed, 0.0)
        except Exception as error:  # noqa: BLE001 - reported, not raised
            return f"error: {error}"

    def add_row(self, **row) -> dict:
        self.rows.append(row)
        ms = row.get("ms")
        text = f"{ms:9.2f} ms" if ms is not None else f"skipped ({row.get('error', '')[:120]})"
        kept = row.get("kept_frac")
        kept_text = f" kept {kept:6.1%}" if kept is not None else ""
        if row.get("compile_s") is not None:
            kept_text += f"; compiled: first call {row['compile_s']:.1f} s, {row['recompiles']} recompiles"
        self.log(
            f"  {row['model']:<11} {row['variant']:<14} {row['mode']:<9} {row['input']:<6} "
            f"B={row['batch_size']:<3} {text}{kept_text}"
        )
        if self.on_row is not None:
            self.on_row(self)
        return row

    def base_row(self, model_name, variant, tau, attention, mode, kind, batch_size, compiled=False):
        return {
            "model": model_name, "variant": variant, "tau": tau, "attention": attention, "mode": mode,
            "compiled": compiled, "input": kind, "batch_size": batch_size,
        }  # fmt: skip

    # ---- cases -----------------------------------------------------------------------------------

    def timed_case(self, model_name, model, variant, tau, attention, kind, inputs, tok, keep_masks=None, labels=None):
        """Time ``model``'s forward pass over ``inputs`` (``model`` already in inference precision), or with
        ``labels`` (one tensor per input) forward + backward + AdamW step (bf16 autocast on GPU). With
        ``keep_masks`` (one per input, on the host), each call gets its input's mask as ``keep_mask=``."""
        s = self.settings
        train = labels is not None
        mode = "train" if train else "inference"
        row = self.base_row(model_name, variant, tau, attention, mode, kind, inputs[0].shape[0])
        if (skipped := self.skip_if_late(row)) is not None:
            return skipped
        # Each call's keyword arguments, built once, outside the timed calls.
        masks = [None] * len(inputs) if keep_masks is None else keep_masks
        calls = [_video(model.config, x) | ({} if k is None else {"keep_mask": k}) for x, k in zip(inputs, masks)]
        if train:
            calls = [call | {"labels": y} for call, y in zip(calls, labels)]
        autocast = s.train_autocast if train else s.inference_precision == "autocast"
        step = self.train_step(model) if train else self.forward(model, autocast)
        try:
            reset_peak_memory(s.device)
            with warnings.catch_warnings():  # uncompiled FlexAttention (CPU) warns on every call
                warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
                timing = measure(step, calls, device=s.device, warmup=s.warmup, iters=s.iters)
        except Exception as error:  # noqa: BLE001 - a backend that cannot run here is reported, not fatal
            return self.add_row(**row, error=error_text(error))
        finally:
            model.zero_grad(set_to_none=True)
        row.update(timing, **tok, peak_mem_gb=peak_memory_gb(s.device))
        row["clips_per_s"] = row["batch_size"] / timing["ms"] * 1e3
        row.update(self.busy(step, calls))
        model.zero_grad(set_to_none=True)
        compute_dtype = s.dtype if autocast else inputs[0].dtype
        row["attention_resolved"] = self.resolved_backend(model, inputs[0], compute_dtype)
        if not train and variant.startswith("rlt") and variant != "rlt_off" and tau is not None and keep_masks is None:
            row.update(self.tokenizer_timing(model, inputs, timing["ms"]))
        return self.add_row(**row)

    def tokenizer_timing(self, model, inputs, forward_ms: float) -> dict:
        config = model.config
        timing = {"device": self.settings.device, "warmup": self.settings.warmup, "iters": self.settings.iters}
        with torch.inference_mode():
            tok = measure(lambda x: run_length_tokenize_for(config, x), inputs, **timing)["ms"]
            # The token choice + packing, as the model's forward (which just ran on these inputs) runs it.
            pack = measure(lambda x: choose_tokens(config, x), inputs, **timing)["ms"]
        return {"tokenizer_ms": tok, "tokenizer_pct": 100 * tok / forward_ms,
                "select_pack_ms": pack, "select_pack_pct": 100 * pack / forward_ms}

    def busy(self, fn, inputs) -> dict:
        """The device's busy fraction over a few profiled calls (``--busy-fraction``), or nothing."""
        if not self.settings.busy_fraction:
            return {}
        try:
            return busy_fraction(fn, inputs, device=self.settings.device)
        except Exception as error:  # noqa: BLE001 - a profiler problem must not lose the timing
            return {"busy_error": error_text(error)}

    def forward(self, model, autocast: bool):
        """One inference call: ``model(**call)`` (the video, and a host keep mask for the rlt_hostkeep rows)."""

        def forward(call: dict):
            with torch.inference_mode(), self.autocast(autocast):
                return model(**call).logits

        return forward

    def train_step(self, model, forward=None):
        """One training step on ``call`` (the video, ``labels``, and a host keep mask for the rlt_hostkeep rows):
        ``forward`` (default ``model``, else e.g. its compiled version), backward, AdamW step."""
        s = self.settings
        forward = model if forward is None else forward
        fused = s.device.type == "cuda"
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, fused=fused)

        def step(call: dict):
            with self.autocast(s.train_autocast):
                loss = forward(**call).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

        return step

    def compile_case(self, model_name, model, variant, tau, mode, factory, kind, batch_size, cls_tokens, dtype):
        """Compile ``model`` (``mode`` "inference" or "train"), time the first call, count recompiles over batches
        of input ``kind``, then time it.

        Every kind gives a distinct batch per seed (a new draw of windows, other generated clips, other noise),
        but not every kind varies the packed shapes: a static clip keeps exactly its first time step,
        so every static batch packs to the same length and its recompile count tests no shape change;
        noise keeps every token (the dense path). Only "real" and "still" vary the kept counts.
        """
        import torch._dynamo

        s = self.settings
        train = mode == "train"
        attention = "sdpa" if variant == "vanilla" else "auto"
        row = self.base_row(model_name, variant, tau, attention, mode, kind, batch_size, compiled=True)
        if (skipped := self.skip_if_late(row)) is not None:
            return skipped
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()

        # Batch k is the same batch as input set k of the eager cases of this kind; each is moved to the
        # device only when its turn comes (outside the timed call), so the memory peak stays comparable.
        def item(seed: int) -> dict:
            call = _video(model.config, normalize(factory.batch(kind, batch_size, seed).to(s.device), dtype))
            if not train:
                return call
            generator = torch.Generator().manual_seed(seed)
            return call | {"labels": torch.randint(0, s.num_labels, (batch_size,), generator=generator).to(s.device)}

        compiled = torch.compile(model, backend=s.compile_backend, mode=s.compile_mode)
        model.train(train)
        autocast = s.inference_precision == "autocast"
        call = self.train_step(model, compiled) if train else self.forward(compiled, autocast)

        def timed_call(seed: int, recorder: RecompileRecorder) -> dict:
            """One call on batch ``seed``: its seconds, and the graphs and recompiles it caused."""
            batch = item(seed)
            graphs, reasons = compiled_graphs(), len(recorder.reasons)
            start = time.perf_counter()
            call(batch)
            synchronize(s.device)
            seconds = time.perf_counter() - start
            return {"s": seconds, "new_graphs": compiled_graphs() - graphs, "recompiles": len(recorder.reasons) - reasons}

        per_batch = []
        try:
            with RecompileRecorder() as recorder:
                first = timed_call(0, recorder)  # the compilation
                compile_s, graphs_first = first["s"], first["new_graphs"]
                loop_start = time.perf_counter()
                for seed in range(1, s.compile_batches):
                    per_batch.append(timed_call(seed, recorder))
                    if time.perf_counter() - loop_start > s.compile_budget_s or self.out_of_time():
                        break
                reset_peak_memory(s.device)
                sets = [item(seed) for seed in range(s.input_sets)]
                reasons_before_timing = len(recorder.reasons)
                timing = measure(call, sets, device=s.device, warmup=s.warmup, iters=s.iters)
                recompiles_in_timing = len(recorder.reasons) - reasons_before_timing
                busy = self.busy(call, sets)
            graph_breaks = recorder.graph_breaks
        except Exception as error:  # noqa: BLE001
            torch._dynamo.reset()
            return self.add_row(**row, error=error_text(error))
        finally:
            model.zero_grad(set_to_none=True)
        inputs = [call[registry.as_rlt_config(model.config).rlt_input_name] for call in sets]
        tok = self.token_stats(model.config, inputs, cls_tokens, tau if variant.startswith("rlt") else None)
        row.update(timing, **tok, **busy, peak_mem_gb=peak_memory_gb(s.device))
        row["compile_mode"] = s.compile_mode
        compute_dtype = s.dtype if (train and s.train_autocast) or s.inference_precision == "autocast" else dtype
        row["attention_resolved"] = self.resolved_backend(model, inputs[0], compute_dtype)
        row["clips_per_s"] = batch_size / timing["ms"] * 1e3
        row.update(
            compile_s=compile_s,
            graphs_first_call=graphs_first,
            compile_batches_run=1 + len(per_batch),
            recompiles=sum(b["recompiles"] for b in per_batch),
            batches_that_compiled=sum(1 for b in per_batch if b["new_graphs"] or b["recompiles"]),
            new_graphs_after_first=sum(b["new_graphs"] for b in per_batch),
            recompiles_during_timing=recompiles_in_timing,
            graph_breaks=sum(graph_breaks.values()),
            graph_break_reasons=[reason.splitlines()[0][:200] for reason in graph_breaks],
            recompile_reasons=[reason[:600] for reason in recorder.reasons[:10]],
            per_batch_s=[round(b["s"], 4) for b in per_batch],
        )
        torch._dynamo.reset()
        return self.add_row(**row)

    # ---- per model -------------------------------------------------------------------------------

    def run_model(self, model_name: str, spec: ModelSpec, clips: dict, phase: str) -> None:
        """One model's ``phase``: "eager" (inference on ``inputs``, training step on ``train_inputs``) or
        "compile" (torch.compile on ``compile_inputs``)."""
        s = self.settings
        self.log(f"\n== {model_name} ({phase}): {spec}")
        if self.skip_if_late(self.base_row(model_name, phase, None, None, "-", "-", 0)) is not None:
            return
        try:
            start = time.perf_counter()
            vanilla, model, load_report = build_models(spec, s.num_labels, s.device)
        except registry.UnsupportedArchitectureError as error:
            self.log(f"  skipped: {error}")
            self.add_row(**self.base_row(model_name, "all", None, None, "-", "-", 0), error=str(error))
            return
        seconds = time.perf_counter() - start
        self.log(f"  built in {seconds:.1f} s; weights not taken from vanilla: {load_report['missing']}")
        cls_tokens = model.config.rlt_num_prefix_tokens
        windows = cut_windows(clips, spec.frames, spec.image_size, hop=max(1, round(spec.frames * s.window_hop)))
        factory = InputFactory(windows)
        if model_name not in self.model_info:
            self.model_info[model_name] = {
                "spec": spec.__dict__,
                "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                "windows": factory.windows.shape[0],
                "weight_load": load_report,
                "parity_rlt_off_vs_vanilla": self.parity(vanilla, model, factory),
                "kept_per_video": self.kept_per_video(model.config, clips, spec),
            }
        to_bf16 = s.inference_precision == "bf16-weights"
        data_dtype = s.dtype if to_bf16 else torch.float32
        if phase == "eager":
            self.eager_cases(model_name, vanilla, model, factory, cls_tokens, to_bf16, data_dtype)
        else:  # "compile", scheduled only when --parts has it
            # With --pack-buckets the compiled RLT model packs to bucket sizes: static shapes, what
            # CUDA graphs (--compile-mode reduce-overhead) need.
            rlt_variant = f"rlt_b{s.pack_buckets}" if s.pack_buckets else "rlt"
            self.set_rlt(model.config, enabled=True, tau=s.tau, buckets=s.pack_buckets)

            def compile_cases(mode, vanilla_net, rlt_net, batch_size, batch_dtype):
                for kind in s.compile_inputs:
                    case = {"factory": factory, "kind": kind, "batch_size": batch_size, "cls_tokens": cls_tokens,
                            "dtype": batch_dtype}
                    self.compile_case(model_name, vanilla_net, "vanilla", None, mode, **case)
                    self.compile_case(model_name, rlt_net, rlt_variant, s.tau, mode, **case)

            # The inference copies (bf16) live only for their own cases, as in the eager phase.
            inference_nets = [copy.deepcopy(net).to(s.dtype) if to_bf16 else net for net in (vanilla, model)]
            compile_cases("inference", *inference_nets, s.batch_sizes[-1], data_dtype)
            del inference_nets
            if "train" in s.parts:
                compile_cases("train", vanilla, model, s.train_batch_size, torch.float32)
            self.set_rlt(model.config, enabled=True, tau=s.tau)
        del vanilla, model
        if s.device.type == "cuda":
            torch.cuda.empty_cache()

    def eager_cases(self, model_name, vanilla, model, factory, cls_tokens, to_bf16, data_dtype) -> None:
        """Inference on every ``inputs`` kind and batch size, then the training step on ``train_inputs``."""
        s = self.settings
        inf_vanilla = copy.deepcopy(vanilla).to(s.dtype).eval() if to_bf16 else vanilla.eval()
        inf_model = copy.deepcopy(model).to(s.dtype).eval() if to_bf16 else model.eval()
        for batch_size in s.batch_sizes:
            for kind in s.inputs:
                inputs = factory.sets(kind, batch_size, s.input_sets, s.device, data_dtype)
                self.variant_cases(model_name, inf_vanilla, inf_model, kind, inputs, cls_tokens)
                del inputs
        del inf_vanilla, inf_model
        if "train" in s.parts:
            vanilla.train()
            model.train()
            for kind in s.train_inputs:
                inputs = factory.sets(kind, s.train_batch_size, s.input_sets, s.device, torch.float32)
                labels = [torch.randint(0, s.num_labels, (s.train_batch_size,), device=s.device) for _ in inputs]
                self.variant_cases(model_name, vanilla, model, kind, inputs, cls_tokens, labels)
                del inputs, labels

    def variant_cases(self, model_name, vanilla, model, kind, inputs, cls_tokens, labels=None) -> None:
        """The eager rows of one input set, inference (``labels`` None) or training step: vanilla, RLT
        off (real clips: it does not depend on the input), RLT at ``tau``, and as the settings ask, RLT
        with host keep masks, bucketed packing, proportional attention; inference also the ``tau``
        sweep and the attention backends (real clips)."""
        s = self.settings
        config = model.config
        real = kind == "real"

        def case(net, variant, tau, attention, tok, keep_masks=None):
            self.timed_case(model_name, net, variant, tau, attention, kind, inputs, tok, keep_masks, labels)

        def rlt_case(variant, tau, tok, keep_masks=None, **rlt):
            """An RLT row: the model with RLT on at ``tau``, the settings ``rlt`` (``set_rlt``'s) and defaults."""
            self.set_rlt(config, enabled=True, tau=tau, **rlt)
            case(model, variant, tau, rlt.get("attention", "auto"), tok, keep_masks)

        full = self.token_stats(config, inputs, cls_tokens, None)
        case(vanilla, "vanilla", None, "sdpa", full)
        if real and (labels is not None or "core" in s.parts):
            self.set_rlt(config, enabled=False)
            case(model, "rlt_off", None, "auto", full)
        tok = self.token_stats(config, inputs, cls_tokens, s.tau)
        rlt_case("rlt", s.tau, tok)
        if "core" in s.parts:
            masks = host_keep_masks(config, inputs)
            rlt_case("rlt_hostkeep", s.tau, self.token_stats(config, inputs, cls_tokens, s.tau, masks), masks)
        if s.pack_buckets:
            rlt_case(f"rlt_b{s.pack_buckets}", s.tau, tok, buckets=s.pack_buckets)
        if s.proportional_attention:
            rlt_case("rlt_prop", s.tau, tok, proportional=True)
        if real and labels is None and "sweep" in s.parts:
            for tau in s.sweep:
                rlt_case(f"rlt_tau{tau:g}", tau, self.token_stats(config, inputs, cls_tokens, tau))
        if real and labels is None and "backends" in s.parts:
            for backend in s.backends:
                rlt_case(f"rlt_{backend}", s.tau, tok, attention=backend)
        self.set_rlt(config, enabled=True, tau=s.tau)

    @staticmethod
    def set_rlt(config, *, enabled: bool, tau=None, attention="auto", buckets=0, proportional=False) -> None:
        """The RLT settings of one case; those not named go back to their defaults (``tau``: stays)."""
        config.rlt_enabled = enabled
        if tau is not None:
            config.rlt_threshold = float(tau)
        config.rlt_attention = attention
        config.rlt_pack_buckets = buckets
        config.rlt_proportional_attention = proportional

    def parity(self, vanilla, model, factory: InputFactory) -> dict:
        """Largest logit difference between the RLT model with RLT off and the vanilla model (float32)."""
        x = normalize(factory.batch("real", 2, 0).to(self.settings.device), torch.float32)
        self.set_rlt(model.config, enabled=False)
        with torch.inference_mode():
            reference = vanilla.eval()(**_video(vanilla.config, x)).logits.float()
            logits = model.eval()(**_video(model.config, x)).logits.float()
        self.set_rlt(model.config, enabled=True, tau=self.settings.tau)
        return {
            "max_abs_diff": float((logits - reference).abs().max()),
            "rel_norm_diff": float((logits - reference).norm() / reference.norm()),
        }

    def kept_per_video(self, config, clips: dict, spec: ModelSpec) -> dict:
        """Fraction of tubelets kept per video (mean over its windows) at ``tau`` and every sweep value."""
        result = {}
        windows = cut_windows(clips, spec.frames, spec.image_size)  # without overlap: each frame counts once
        for name in clips["videos"]:
            frames = [w.frames for w in windows if w.video == name]
            if not frames:
                continue
            x = normalize(torch.stack(frames).to(self.settings.device), torch.float32)
            taus = [self.settings.tau, *self.settings.sweep]
            result[name] = {f"{tau:g}": float(run_length_tokenize_for(config, x, threshold=tau).kept_fraction.mean())
                            for tau in taus}
        return result
