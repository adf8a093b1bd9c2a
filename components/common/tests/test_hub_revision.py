"""Hub models read at one commit: ``hf:ORG/NAME`` pinned to ``hf:ORG/NAME@<sha>`` once (preflight writes
it under the run's prefix, extract loads and records it, caption loads what the features record), the
commit in the features' and captions' model name and so in their re-run identity.

No network here: the hub side is the real ``huggingface_hub`` cache layout (``models--ORG--NAME/refs``
and ``snapshots/<sha>``) read with ``HF_HUB_OFFLINE=1``, in a subprocess (the library reads that
setting when imported); the model is a tiny random VisionEncoderDecoder saved at two commits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from latent_verbalizer.components.caption.caption import CaptionSettings, run_caption
from latent_verbalizer.components.common.features import read_manifest
from latent_verbalizer.components.common.model_families import load_model
from latent_verbalizer.components.extract.extract import ExtractSettings, run_extract
from tests.images import jpeg_shard
from tests.model_folders import save_model_folder

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OLD, NEW = "a" * 40, "b" * 40
HUB_NAME = "hf:acme/tiny-vit-gpt2"


def save_folder(folder, **generation) -> str:
    """tiny-random-vit-gpt2 as a model folder, its generation config updated with ``generation``."""
    return save_model_folder(load_model("tiny-random-vit-gpt2"), folder, **generation)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A Hugging Face cache holding acme/tiny-vit-gpt2 at two commits; its main branch at the newer one,
    whose generation config differs (so which commit was loaded shows in the captions' parameters)."""
    cache = tmp_path_factory.mktemp("hf-cache")
    repo = cache / "models--acme--tiny-vit-gpt2"
    save_folder(repo / "snapshots" / OLD)
    save_folder(repo / "snapshots" / NEW, repetition_penalty=1.3)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(NEW)
    return cache


RUN_SCRIPT = r'''
import json, sys
from kfp.dsl import Artifact
from latent_verbalizer.components.caption.caption import CaptionSettings, run_caption
from latent_verbalizer.components.common.model_families import load_model
from latent_verbalizer.components.extract.component import make_extract_op
from latent_verbalizer.components.preflight.preflight import check_run

cache, shard, prefix, old = sys.argv[1:5]
result = {}
loaded = load_model("hf:acme/tiny-vit-gpt2")
result["latest"] = [loaded.name, loaded.model.generation_config.repetition_penalty]
loaded = load_model("hf:acme/tiny-vit-gpt2@" + old)
result["old"] = [loaded.name, loaded.model.generation_config.repetition_penalty]
check_run(shard, prefix, model="hf:acme/tiny-vit-gpt2", layers="0", llm_model="smollm2-135m", llm_gpus="1")
result["resolved"] = json.load(open(prefix + "/resolved-models.json"))
# the hub's main branch moves during the run: the steps still load the commit preflight pinned
open(cache + "/models--acme--tiny-vit-gpt2/refs/main", "w").write(old)
features = Artifact(name="features", uri=prefix + "/features.json", metadata={})
make_extract_op("unused").python_func(shard=shard, storage_prefix=prefix, model="hf:acme/tiny-vit-gpt2", pretrained="",
                                      layers="0", dtype="fp32", batch_size="2", features=features)
pointer = json.load(open(features.path))
result["features_model"] = pointer["model"]
(manifest,) = run_caption(pointer["features"], prefix + "/captions",
                          CaptionSettings(device="cpu", seq_len=8, pretrained="hf:acme/tiny-vit-gpt2"))
result["captions"] = {k: manifest["parameters"].get(k) for k in ("model", "pretrained", "generation_settings")}
try:
    load_model("hf:acme/not-in-the-cache")
except RuntimeError as e:
    result["unresolvable"] = str(e)
print("RESULT " + json.dumps(result))
'''


def test_hub_model_is_pinned_once_and_every_step_loads_that_commit(hub_cache, tmp_path):
    shard = jpeg_shard(str(tmp_path / "h-000000.tar"), 2)
    prefix = str(tmp_path / "run")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache), HF_HOME=str(tmp_path / "hf-home"),
               PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-c", RUN_SCRIPT, str(hub_cache), shard, prefix, OLD], env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    pinned = f"{HUB_NAME}@{NEW}"
    assert result["latest"] == [pinned, 1.3]                 # the branch's commit, its files
    assert result["old"] == [f"{HUB_NAME}@{OLD}", None]      # an explicit commit: that commit's files
    assert result["resolved"] == {HUB_NAME: pinned}
    assert result["features_model"] == pinned                # preflight's commit, though main moved since
    assert result["captions"] == {"model": pinned, "pretrained": pinned,
                                  "generation_settings": {"repetition_penalty": 1.3}}
    message = result["unresolvable"]
    assert "hf:acme/not-in-the-cache" in message and "HF_HUB_OFFLINE" in message
    assert "pretrained (extract_pretrained)" in message


def test_unresolvable_hub_name_says_what_to_do(monkeypatch):
    """No network here: asking the hub fails, and the message names the ways out."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub

    if huggingface_hub.is_offline_mode():
        pytest.skip("HF_HUB_OFFLINE was set when huggingface_hub was imported: the hub is not asked")
    with pytest.raises(RuntimeError) as error:
        load_model("hf:acme/no-such-model-here")
    message = str(error.value)
    assert "could not resolve hf:acme/no-such-model-here to a commit" in message
    assert "HF_TOKEN" in message and "extract_pretrained" in message and "--pretrained" in message


def test_commit_is_in_the_features_and_captions_identity(tmp_path):
    """An air-gapped copy (``pretrained`` a folder) of a named commit: the commit is recorded, and features
    of another commit under the same prefix are not taken as done."""
    folder = save_folder(tmp_path / "copy")
    shard = jpeg_shard(str(tmp_path / "c-000000.tar"), 2)
    features, captions = str(tmp_path / "f"), str(tmp_path / "c")
    run_extract([shard], features, ExtractSettings(model=f"{HUB_NAME}@{OLD}", pretrained=folder, device="cpu",
                                                   layers="0"))
    manifest = read_manifest(f"{features}/c-000000")
    assert manifest.model == f"{HUB_NAME}@{OLD}"
    (done,) = run_caption(features, captions, CaptionSettings(device="cpu", seq_len=8, pretrained=folder,
                                                              model=HUB_NAME))
    assert done["parameters"]["model"] == f"{HUB_NAME}@{OLD}"
    # refused, as a bad shard is (it fails alone, with the reason)
    result = run_extract([shard], features, ExtractSettings(model=f"{HUB_NAME}@{NEW}", pretrained=folder, device="cpu",
                                                            layers="0"))
    assert re.search(f"already holds features made with .*{OLD}.*not .*{NEW}", result.failed[shard]), result.failed
