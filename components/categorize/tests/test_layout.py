"""Multi-GPU planning for Llama-3.1-70B on 80 GB GPUs, on the meta device (no weights)."""

from __future__ import annotations

import functools
from collections import Counter

import pytest
import torch

from latent_verbalizer.components.categorize.llm.layout import device_map_on_meta, plan_layout
from latent_verbalizer.components.categorize.llm.offline_llms import llama31_config
from latent_verbalizer.components.categorize.llm.sizing import model_bytes
from latent_verbalizer.components.common.memory_budget import config_kv_bytes_per_token

GB = 10**9


@pytest.fixture(scope="module")
def llama70b():
    config = llama31_config("70b")
    seq = config_kv_bytes_per_token(config, torch.bfloat16) * (768 + 256) + config.vocab_size * 8
    return config, model_bytes(config, torch.bfloat16), seq


def test_70b_size_from_meta(llama70b):
    config, size, _ = llama70b
    assert size == pytest.approx(141.1e9, rel=0.002)                # 70.55B parameters in bf16
    assert config_kv_bytes_per_token(config, torch.bfloat16) == 80 * 2 * 8 * 128 * 2       # 320 KiB per token


@pytest.mark.parametrize("n_gpus, replicas, per_replica", [(2, 1, 2), (4, 1, 4), (8, 2, 4)])
def test_70b_layout(llama70b, n_gpus, replicas, per_replica):
    config, size, seq = llama70b
    lay = plan_layout(size, n_gpus, 80 * GB, seq)
    assert (lay.replicas, lay.gpus_per_replica, lay.mode) == (replicas, per_replica, "sharded")
    assert sorted(g for grp in lay.groups for g in grp) == list(range(n_gpus))
    assert 8 <= lay.batch_size <= 256
    # the device_map accelerate derives from max_memory puts every layer on the group's GPUs, evenly
    for grp, mm in zip(lay.groups, lay.max_memory):
        dm = device_map_on_meta(config, mm)
        per_gpu = Counter(dm.values())
        assert set(per_gpu) == set(grp), dm
        layers = Counter(v for k, v in dm.items() if ".layers." in k)
        assert max(layers.values()) - min(layers.values()) <= 6
    assert "sharded" in lay.describe()


def test_70b_on_two_gpus_leaves_little_room_for_the_cache(llama70b):
    _, size, seq = llama70b
    two, four = plan_layout(size, 2, 80 * GB, seq), plan_layout(size, 4, 80 * GB, seq)
    assert two.batch_size < 64 and four.batch_size == 256 and two.kv_budget_bytes < 16 * GB


def test_70b_does_not_fit_one_gpu(llama70b):
    _, size, seq = llama70b
    with pytest.raises(ValueError, match="does not fit 1 GPU"):
        plan_layout(size, 1, 80 * GB, seq)


def test_8b_replica_per_gpu():
    config = llama31_config("8b")
    seq = config_kv_bytes_per_token(config, torch.bfloat16) * 1024 + config.vocab_size * 8
    lay = plan_layout(model_bytes(config), 8, 80 * GB, seq)
    assert (lay.mode, lay.replicas, lay.gpus_per_replica, lay.batch_size) == ("replicas", 8, 1, 256)
    assert plan_layout(model_bytes(config), 0, 0, seq).mode == "cpu"


def test_model_sources(tmp_path):
    from latent_verbalizer.components.categorize.llm.model_source import resolve_model_source

    assert resolve_model_source("meta-llama/Llama-3.1-70B-Instruct") == "meta-llama/Llama-3.1-70B-Instruct"   # hub id
    assert resolve_model_source(str(tmp_path)) == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="model directory"):
        resolve_model_source(str(tmp_path / "missing"))


def test_cpu_replicas_one_per_core_that_the_work_keeps_busy():
    from latent_verbalizer.components.categorize.llm.layout import MIN_CPU_REPLICA_WORK_BYTES, cpu_replica_count

    per_replica = -(-MIN_CPU_REPLICA_WORK_BYTES // GB)          # captions of a 1 GB model that pay for a replica
    enough = 4 * per_replica
    assert cpu_replica_count(enough, model_bytes=GB, cores=2, available_bytes=None) == 2
    assert cpu_replica_count(enough, model_bytes=GB, cores=8, available_bytes=None) == 4      # the captions bound it
    assert cpu_replica_count(per_replica - 1, GB, cores=8, available_bytes=None) == 1
    # The same captions of a model a hundred times smaller are not worth a second process.
    assert cpu_replica_count(enough, model_bytes=GB // 100, cores=8, available_bytes=None) == 1
    assert cpu_replica_count(enough, model_bytes=GB, cores=8, available_bytes=5 * GB) == 2    # half of 5 GB: 2 copies
    assert cpu_replica_count(enough, model_bytes=100 * GB, cores=8, available_bytes=GB) == 1


def test_a_cpu_layout_of_replicas_has_a_group_per_replica():
    lay = plan_layout(GB, 0, 0, 1, cpu_replicas=2)
    assert (lay.mode, lay.replicas, lay.groups, lay.max_memory) == ("cpu", 2, [[], []], [{}, {}])
    assert "2 replica process(es)" in lay.describe()


def test_the_plan_runs_a_replica_per_usable_core_on_the_cpu(monkeypatch):
    """run_categorize's plan without GPUs: by default (``auto``) one replica per usable core that the
    work keeps busy; as many as asked otherwise."""
    from latent_verbalizer.components.categorize import categorize

    monkeypatch.setattr(categorize, "usable_cpu_cores", lambda: 2)
    plan = functools.partial(categorize.plan_for_model, "tiny-random-llama", 0, 0, torch.float32, 768, 100)
    lay = plan(n_captions=200, cpu_replicas="auto")
    assert (lay.mode, lay.replicas, lay.groups) == ("cpu", 2, [[], []])
    assert plan(n_captions=10, cpu_replicas="auto").replicas == 1
    assert plan(n_captions=200).replicas == 2                        # the default: auto
    assert plan(n_captions=200, cpu_replicas=1).replicas == 1
    assert plan(n_captions=200, cpu_replicas=3).replicas == 3        # as asked
    assert plan(n_captions=2, cpu_replicas=3).replicas == 2          # no idle replica


def test_the_old_tiny_random_name_says_the_new_ones():
    from latent_verbalizer.components.categorize.llm.model_source import load_config

    with pytest.raises(ValueError, match="renamed: use tiny-random-coca .* or tiny-random-llama"):
        load_config("tiny-random")
