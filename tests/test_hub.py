"""Hub-ready checkpoints: the converted folder, its model card, the planned cards, and the upload.

The Hub is never contacted: uploads go to a local HTTP server that answers like the Hub.
"""

import base64
import filecmp
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from conftest import IMAGENET_PROCESSOR, TINY_VIDEOMAE, noise_clips, run_without_rlt
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import validate_repo_id
from transformers import VideoMAEConfig, VideoMAEForVideoClassification
from transformers.pipelines import SUPPORTED_TASKS

import rlt
from rlt import RLTVideoMAEForVideoClassification
from rlt.cli import main
from rlt.hub import PAPER_URL, HubTokenError, check_checkpoint_folder, push_to_hub, write_model_card

ROOT = Path(__file__).resolve().parents[1]
MODEL_CARDS = ROOT / "model_cards"
BASE_ID = "test-org/tiny-videomae"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny vanilla VideoMAE laid out like a Hub cache snapshot (with its own card), and its RLT conversion."""
    root = tmp_path_factory.mktemp("hub")
    vanilla = root / "hub" / f"models--{BASE_ID.replace('/', '--')}" / "snapshots" / "0123abcd"
    vanilla.mkdir(parents=True)
    torch.manual_seed(0)
    model = VideoMAEForVideoClassification(VideoMAEConfig(**TINY_VIDEOMAE)).eval()
    model.save_pretrained(vanilla)
    (vanilla / "preprocessor_config.json").write_text(json.dumps(IMAGENET_PROCESSOR))
    (vanilla / "README.md").write_text("---\nlicense: apache-2.0\ndatasets:\n- kinetics-400\n---\n# tiny\n")
    clips = noise_clips(2)
    with torch.no_grad():
        logits = model(clips).logits
    torch.save({"clips": clips, "logits": logits}, root / "reference.pt")
    converted = root / "converted"
    rlt.convert(vanilla, converted, threshold=0.05)
    return {"vanilla": vanilla, "converted": converted, "reference": root / "reference.pt"}


def test_converted_folder_is_complete_and_loads_without_rlt(checkpoints, tmp_path):
    out = checkpoints["converted"]
    files = set(check_checkpoint_folder(out))
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "video_preprocessor_config.json",
        "modeling_rlt_videomae.py",
        "configuration_rlt_videomae.py",
        "video_processing_rlt.py",
        "video_decoding.py",
        "packing.py",
        "attention_kernels.py",
        "token_choice.py",
    } <= files
    code = f"""
        import numpy as np, torch
        from transformers import AutoModelForVideoClassification, AutoProcessor
        reference = torch.load({str(checkpoints["reference"])!r})
        model = AutoModelForVideoClassification.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        with torch.no_grad():
            logits = model(reference["clips"]).logits
        torch.testing.assert_close(logits, reference["logits"], atol=1e-5, rtol=1e-5)
        processor = AutoProcessor.from_pretrained({str(out)!r}, trust_remote_code=True)
        video = np.random.default_rng(0).integers(0, 256, (12, 40, 48, 3), dtype=np.uint8)
        with torch.no_grad():
            out = model(**processor(video, return_tensors="pt"))
        print("ok", type(processor).__name__, tuple(out.logits.shape))
    """
    stdout = run_without_rlt(code, cwd=tmp_path)
    assert "ok RLTVideoProcessor (1, 5)" in stdout


def _check_card_metadata(card: ModelCard) -> dict:
    """Offline checks of what the Hub's metadata validation checks; returns the metadata."""
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "video-classification" and data["pipeline_tag"] in SUPPORTED_TASKS
    assert data["library_name"] == "transformers"
    validate_repo_id(data["base_model"])
    assert "rlt" in data["tags"]
    # Strict re-parse: an invalid model-index raises here.
    reparsed = ModelCardData(**data)
    for result in reparsed.eval_results or []:
        assert result.task_type == "video-classification"
        assert result.source_url and result.source_name, "every reported number names its source"
    text = card.content
    assert not re.search(r"\{\{\s*\w+\s*\}\}", text), "an unfilled template placeholder"
    assert "trust_remote_code=True" in text and "AutoModelForVideoClassification" in text
    assert "## Limitations" in text and "output_attentions" in text
    return data


def test_converted_card_carries_the_checkpoint_facts(checkpoints):
    card = ModelCard.load(checkpoints["converted"] / "README.md")
    data = _check_card_metadata(card)
    assert data["base_model"] == BASE_ID  # from the Hub cache layout of the source
    assert data["license"] == "apache-2.0" and data["datasets"] == ["kinetics-400"]  # from the source's card
    assert "model-index" not in data  # the paper reports nothing for this base model; we measured nothing
    text = card.content
    assert "| Threshold `rlt_threshold` | 0.05 " in text
    assert "| Labels | 5 |" in text
    assert "`RLTVideoMAEForVideoClassification`" in text
    assert "plain mean of the clip's kept tokens" in text
    assert "all zeros: training-free" in text
    assert "8 frames of 32x32, tubelets of 2x16x16: 16 tokens without RLT" in text
    assert "**Measured on this checkpoint**: no accuracy measurement has been made yet." in text


def test_card_records_own_results_and_marks_a_fine_tuned_length_table(checkpoints, tmp_path):
    folder = tmp_path / "finetuned"
    model = RLTVideoMAEForVideoClassification.from_pretrained(checkpoints["converted"])
    with torch.no_grad():
        model.videomae.embeddings.length_embeddings.weight.normal_()
    model.save_pretrained(folder)
    result = EvalResult(
        task_type="video-classification",
        dataset_type="my-clips",
        dataset_name="My clips",
        dataset_split="test",
        metric_type="accuracy",
        metric_value=0.75,
    )
    card = write_model_card(folder, base_model=BASE_ID, eval_results=[result])
    assert ModelCard.load(folder / "README.md").content == card.content
    data = card.data.to_dict()
    assert data["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.75
    assert "learned (fine-tuned with RLT)" in card.content and "fine-tuned from" in card.content
    assert "| My clips (test) | accuracy | 0.75 |" in card.content


def test_planned_cards_parse_attribute_the_paper_and_are_current():
    sys.path.insert(0, str(MODEL_CARDS))
    try:
        import make_cards
    finally:
        sys.path.remove(str(MODEL_CARDS))
    assert filecmp.cmp(MODEL_CARDS / "TEMPLATE.md", ROOT / "src" / "rlt" / "model_card_template.md", shallow=False)
    cards = sorted(path for path in MODEL_CARDS.glob("*.md") if path.name not in ("TEMPLATE.md", "README.md"))
    assert [path.stem for path in cards] == sorted(make_cards.PLANNED)
    for path in cards:
        card = ModelCard.load(path)
        data = _check_card_metadata(card)
        assert data["base_model"] == make_cards.PLANNED[path.stem][0]
        assert data["license"] and data["datasets"] == make_cards.PLANNED[path.stem][4][0]
        assert card.content == make_cards.planned_card(path.stem).content, f"{path.name} is stale: run make_cards.py"
        results = ModelCardData(**data).eval_results or []
        if path.stem.startswith("videomae"):
            assert [r.source_url for r in results] == [PAPER_URL] and "Reported by the RLT paper" in card.content
        else:
            assert results == [] and "reports no result" in card.content


class FakeHub(BaseHTTPRequestHandler):
    """Answers create_repo, validate-yaml, preupload and commit like the Hub; records every request."""

    requests: ClassVar[list] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.requests.append({"path": self.path, "headers": headers, "body": body})
        base = f"http://{self.headers['Host']}"
        if self.path == "/api/repos/create":
            repo = json.loads(body)
            return self._json({"url": f"{base}/{repo['organization']}/{repo['name']}", "name": repo["name"]})
        if self.path == "/api/validate-yaml":  # the Hub's metadata check, done here with huggingface_hub's parser
            try:
                ModelCardData(**ModelCard(json.loads(body)["content"]).data.to_dict())
            except ValueError as error:
                return self._json({"errors": [{"message": str(error)}]}, status=400)
            return self._json({"warnings": []})
        if "/preupload/" in self.path:
            files = json.loads(body)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]
            return self._json({"files": modes, "commitOid": "0" * 40})
        if "/commit/" in self.path:
            repo_id = self.path.split("/api/models/")[1].split("/commit/")[0]
            return self._json({"commitUrl": f"{base}/{repo_id}/commit/{'1' * 40}", "commitOid": "1" * 40})
        self.send_error(404, f"fake hub: unexpected {self.path}")

    def _json(self, payload, status=200):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_hub():
    FakeHub.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeHub.requests
    server.shutdown()
    server.server_close()


def test_push_uploads_every_file_of_the_folder(checkpoints, fake_hub, tmp_path):
    endpoint, requests = fake_hub
    folder = shutil.copytree(checkpoints["converted"], tmp_path / "upload")
    info = push_to_hub(
        folder, "test-user/tiny-rlt", token="hf_fake", private=True, commit_message="Add tiny", endpoint=endpoint
    )
    assert info.oid == "1" * 40
    paths = [request["path"].split("?")[0] for request in requests]
    assert paths[:2] == ["/api/repos/create", "/api/validate-yaml"]
    assert all(p.startswith("/api/models/test-user/tiny-rlt/preupload/main") for p in paths[2:-1]) and paths[2:-1]
    assert paths[-1] == "/api/models/test-user/tiny-rlt/commit/main"
    assert all(request["headers"].get("authorization") == "Bearer hf_fake" for request in requests)
    create = json.loads(requests[0]["body"])
    assert create["visibility"] == "private" and create["name"] == "tiny-rlt" and create["organization"] == "test-user"

    lines = [json.loads(line) for line in requests[-1]["body"].splitlines()]
    assert lines[0]["key"] == "header" and lines[0]["value"]["summary"] == "Add tiny"
    uploaded = {line["value"]["path"]: base64.b64decode(line["value"]["content"]) for line in lines[1:]}
    local = {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}
    assert set(uploaded) == set(local)
    assert {"README.md", "config.json", "model.safetensors", "video_preprocessor_config.json"} <= set(uploaded)
    for name, content in local.items():
        assert hashlib.sha256(uploaded[name]).digest() == hashlib.sha256(content).digest(), name
    # The card was rewritten for the repo it went to, keeping its metadata.
    assert b'from_pretrained("test-user/tiny-rlt", trust_remote_code=True)' in uploaded["README.md"]
    assert ModelCard(uploaded["README.md"].decode()).data.base_model == BASE_ID


def test_push_refuses_an_incomplete_folder_before_any_request(checkpoints, fake_hub, tmp_path):
    endpoint, requests = fake_hub
    folder = shutil.copytree(checkpoints["converted"], tmp_path / "incomplete")
    (folder / "tokenizer.py").unlink()  # imported by modeling_rlt.py
    with pytest.raises(ValueError, match=r"missing \['tokenizer.py'\]"):
        push_to_hub(folder, "test-user/tiny-rlt", token="hf_fake", endpoint=endpoint)
    assert requests == []


def test_no_token_is_a_clear_error_before_any_request(checkpoints, fake_hub, tmp_path, monkeypatch, capsys):
    endpoint, requests = fake_hub
    empty_home = tmp_path / "hf_home"
    empty_home.mkdir()
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(empty_home / "token"))
    with pytest.raises(HubTokenError, match="no Hugging Face token found"):
        push_to_hub(checkpoints["converted"], "test-user/tiny-rlt", endpoint=endpoint)

    message = "no Hugging Face token found: run `hf auth login`, set HF_TOKEN, or pass token=... to push_to_hub"
    # The command, in a fresh process whose HF_HOME is empty.
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HOME=str(empty_home), HF_ENDPOINT=endpoint)
    result = subprocess.run(
        [sys.executable, "-m", "rlt", "push", str(checkpoints["converted"]), "test-user/tiny-rlt"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"rlt push: error: {message}"]
    # convert --push-to-hub checks the token before converting.
    never = tmp_path / "never"
    assert main(["convert", str(checkpoints["vanilla"]), str(never), "--push-to-hub", "test-user/tiny-rlt"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"rlt convert: error: {message}"]
    assert not never.exists()
    assert requests == []


def test_a_vanilla_checkpoint_loads_with_defaults_and_says_so_once(checkpoints, caplog):
    with caplog.at_level(logging.WARNING, logger="rlt.models.modeling_rlt"):
        model = RLTVideoMAEForVideoClassification.from_pretrained(checkpoints["vanilla"])
    said = [record for record in caplog.records if record.name == "rlt.models.modeling_rlt"]
    assert len(said) == 1 and "lacks RLT settings" in said[0].getMessage()
    assert "rlt_threshold=0.1" in said[0].getMessage()
    assert model.config.rlt_threshold == 0.1 and model.config.rlt_length_encoding_init == "zeros"

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rlt.models.modeling_rlt"):
        RLTVideoMAEForVideoClassification.from_pretrained(checkpoints["converted"])
        settings = {name: value for name, value in model.config.to_dict().items() if name.startswith("rlt_")}
        RLTVideoMAEForVideoClassification.from_pretrained(checkpoints["vanilla"], **settings)
    assert [record for record in caplog.records if record.name == "rlt.models.modeling_rlt"] == []
