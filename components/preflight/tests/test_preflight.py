"""Bad run parameters fail in the CPU preflight step, before any GPU is asked for, with one clear message."""

import os
import re
import socket

import pytest

from latent_verbalizer.components.common import storage
from latent_verbalizer.components.preflight.preflight import check_run, parse_gpu_count
from tests.images import jpeg_shard

GOOD = dict(model="tiny-random-coca", layers="all", llm_model="smollm2-135m", llm_gpus="1")


@pytest.fixture
def shard_on_s3(s3_bucket, tmp_path):
    path = jpeg_shard(str(tmp_path / "p-000000.tar"), 2)
    storage.write_bytes(s3_bucket + "/in/p-000000.tar", open(path, "rb").read())
    return s3_bucket + "/in/p-{000000..000000}.tar"


def test_good_parameters_list_the_shards(shard_on_s3, s3_bucket):
    assert check_run(shard_on_s3, s3_bucket + "/run", **GOOD) == [shard_on_s3.replace("{000000..000000}", "000000")]
    assert storage.list_uris(s3_bucket + "/run") == [], "the write probe is cleaned up"


@pytest.mark.parametrize("change,message", [
    ({"model": "coca_ViT-Z-1"}, "unknown model 'coca_ViT-Z-1'"),
    ({"layers": "0,9"}, "layer 9 is out of range: the model has 6 blocks"),
    ({"llm_gpus": "0"}, r"categorize_gpus='0' is not a GPU count: give a whole number of GPUs, at least 1"),
    ({"llm_gpus": "-1"}, r"categorize_gpus='-1' is not a GPU count"),
    ({"llm_gpus": "eight"}, r"categorize_gpus='eight' is not a GPU count.*in digits \(e.g. 8\)"),
    ({"llm_gpus": "1.5"}, r"categorize_gpus='1.5' is not a GPU count"),
    ({"llm_gpus": ""}, r"categorize_gpus='' is not a GPU count"),
    ({"llm_model": " "}, "categorize_model is empty"),
    ({"partitions": 0}, "categorize_partitions=0 is not a partition count: give a whole number, at least 1"),
    ({"partitions": 2.5}, "categorize_partitions=2.5 is not a partition count"),
])
def test_bad_parameters(shard_on_s3, s3_bucket, change, message):
    with pytest.raises(ValueError, match=message):
        check_run(shard_on_s3, s3_bucket + "/run", **dict(GOOD, **change))


def test_hugging_face_models_are_checked_from_their_config(shard_on_s3, s3_bucket, tmp_path, monkeypatch):
    """A family's layers come from its config alone: a tiny name, a local folder, or an hf: name whose files
    are on S3 (an air-gapped cluster: only the config is fetched, never the weights)."""
    from latent_verbalizer.components.common.model_families.hf_loading import CONFIG_DIR

    monkeypatch.setenv("LVERB_MODEL_CACHE", str(tmp_path / "cache"))
    run = s3_bucket + "/run"
    assert check_run(shard_on_s3, run, **dict(GOOD, model="tiny-random-blip", layers="0,3"))
    with pytest.raises(ValueError, match="layer 4 is out of range: the model has 4 blocks"):
        check_run(shard_on_s3, run, **dict(GOOD, model="tiny-random-vit-gpt2", layers="4"))
    folder = os.path.join(CONFIG_DIR, "tiny-random-llava")
    assert check_run(shard_on_s3, run, **dict(GOOD, model=folder, layers="-1"))
    for name in os.listdir(folder):
        storage.write_bytes(f"{s3_bucket}/models/llava/{name}", open(os.path.join(folder, name), "rb").read())
    storage.write_bytes(f"{s3_bucket}/models/llava/model.safetensors", b"not fetched by preflight")
    assert check_run(shard_on_s3, run, **dict(GOOD, model="hf:acme/llava", layers="all"), pretrained=f"{s3_bucket}/models/llava")
    fetched = {p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    assert "config.json" in fetched and "model.safetensors" not in fetched and "tokenizer.json" not in fetched
    with pytest.raises(ValueError, match="open_clip pretrained tags are for CoCa models only"):
        check_run(shard_on_s3, run, **dict(GOOD, model="hf:acme/llava"), pretrained="mscoco_finetuned_laion2B-s13B-b90k")


@pytest.mark.parametrize("text,count", [("1", 1), ("8", 8), (" 4 ", 4), ("16", 16)])
def test_gpu_counts_in_digits_are_accepted(text, count):
    assert parse_gpu_count(text) == count


def test_pattern_matching_nothing(s3_bucket):
    with pytest.raises(ValueError, match="matches no shard"):
        check_run(s3_bucket + "/in/none-{000..009}.tar", s3_bucket + "/run", **GOOD)


def test_wrong_credentials(shard_on_s3, s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    storage._client_for.cache_clear()
    with pytest.raises(storage.StorageError, match="refused the credentials"):
        check_run(shard_on_s3, s3_bucket + "/run", **GOOD)


def test_missing_secret_means_no_credentials(shard_on_s3, s3_bucket, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    storage._client_for.cache_clear()
    with pytest.raises(storage.StorageError, match="no S3 credentials.*s3-credentials secret"):
        check_run(shard_on_s3, s3_bucket + "/run", **GOOD)


def test_unreachable_endpoint(s3_bucket, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(storage, "MAX_ATTEMPTS", 2)
    storage._client_for.cache_clear()
    with pytest.raises(storage.StorageError, match="unreachable.*AWS_ENDPOINT_URL"):
        check_run(s3_bucket + "/in/p-{000000..000000}.tar", s3_bucket + "/run", **GOOD)


def test_shards_sharing_a_name_are_refused(s3_bucket, tmp_path):
    path = jpeg_shard(str(tmp_path / "x-000000.tar"), 1)
    for split in ("train", "val"):
        storage.write_bytes(f"{s3_bucket}/{split}/x-000000.tar", open(path, "rb").read())
    with pytest.raises(ValueError, match="same name 'x-000000'"):
        check_run(s3_bucket + "/*/x-000000.tar", s3_bucket + "/run", **GOOD)


@pytest.fixture
def weights_volume(tmp_path, monkeypatch):
    """A cluster run's pods: the pipeline mounts one volume in every step and says so (LVERB_POD_MOUNTS)."""
    from latent_verbalizer.components.preflight.preflight import MOUNTS_ENV

    volume = tmp_path / "models"
    volume.mkdir()
    monkeypatch.setenv(MOUNTS_ENV, str(volume))
    return volume


def test_paths_on_the_mounted_volume_work_in_every_parameter(weights_volume, tmp_path):
    """An HF model folder, shards and the storage prefix on the weights volume (the folder of the prefix need
    not exist yet: the run makes it)."""
    import shutil

    from latent_verbalizer.components.common.model_families.hf_loading import CONFIG_DIR

    shutil.copytree(os.path.join(CONFIG_DIR, "tiny-random-blip"), weights_volume / "blip")
    (weights_volume / "shards").mkdir()
    jpeg_shard(str(weights_volume / "shards" / "m-000000.tar"), 1)
    uris = check_run(str(weights_volume / "shards" / "m-{000000..000000}.tar"), str(weights_volume / "runs" / "r1"),
                     **dict(GOOD, model=str(weights_volume / "blip"), layers="0"))
    assert uris == [str(weights_volume / "shards" / "m-000000.tar")]


@pytest.mark.parametrize("parameter,message", [
    ("shards", "shards='{outside}/s-{{0..1}}.tar' is a path on a pod's own disk"),
    ("storage_prefix", "storage_prefix='{outside}/run' is a path on a pod's own disk"),
    ("model", "extract_model='{outside}/blip' is a path on a pod's own disk"),
    ("llm_model", "categorize_model='{outside}/llama' is a path on a pod's own disk"),
    ("compare_prefix", "report_compare_prefix='{outside}/old-run' is a path on a pod's own disk"),
])
def test_a_path_that_no_other_step_can_see_is_refused(shard_on_s3, s3_bucket, weights_volume, tmp_path, parameter, message):
    outside = tmp_path / "node-disk"
    values = {"shards": f"{outside}/s-{{0..1}}.tar", "storage_prefix": f"{outside}/run", "model": f"{outside}/blip",
              "llm_model": f"{outside}/llama", "compare_prefix": f"{outside}/old-run"}
    kwargs = dict(GOOD, shards=shard_on_s3, storage_prefix=s3_bucket + "/run")
    kwargs[parameter] = values[parameter]
    with pytest.raises(ValueError, match=re.escape(message.format(outside=outside))) as e:
        check_run(**kwargs)
    assert f"every step mounts only {weights_volume} (the lverb-model-weights volume)" in str(e.value)


def test_a_folder_missing_from_the_volume_is_named(shard_on_s3, s3_bucket, weights_volume):
    """Before: the missing folder fell through to the CoCa names check ("unknown model")."""
    with pytest.raises(ValueError, match=f"extract_model='{weights_volume}/blip': {weights_volume}/blip does not exist "
                                         "on the volume mounted at"):
        check_run(shard_on_s3, s3_bucket + "/run", **dict(GOOD, model=f"{weights_volume}/blip"))


def test_memory_sizes_are_checked_before_any_pod_asks_for_them(shard_on_s3, s3_bucket):
    assert check_run(shard_on_s3, s3_bucket + "/run", **GOOD, memory={"extract_memory": "64Gi", "caption_memory": "500Mi"})
    with pytest.raises(ValueError, match="caption_memory='64 GB' is not a memory size: write a Kubernetes quantity"):
        check_run(shard_on_s3, s3_bucket + "/run", **GOOD, memory={"caption_memory": "64 GB"})
