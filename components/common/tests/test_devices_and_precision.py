"""Device resolution (a GPU step that sees no GPU fails loudly) and the one dtype vocabulary."""

from __future__ import annotations

import argparse

import pytest
import torch

from latent_verbalizer.components.common import devices
from latent_verbalizer.components.common.devices import REQUIRE_GPU_ENV, GpuNotVisibleError, resolve_device, usable_gpus
from latent_verbalizer.components.common.precision import dtype_argument, exact_float32_math, float32_math, parse_dtype


@pytest.fixture
def no_gpu(monkeypatch):
    """A process that sees no CUDA device (also on a GPU machine)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


def test_cpu_and_auto_without_gpu_keep_working_outside_gpu_steps(no_gpu, monkeypatch):
    monkeypatch.delenv(REQUIRE_GPU_ENV, raising=False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu" and usable_gpus(8) == 0


def test_a_gpu_step_that_sees_no_gpu_fails_with_what_it_sees(no_gpu, monkeypatch):
    monkeypatch.setenv(REQUIRE_GPU_ENV, "1")
    with pytest.raises(GpuNotVisibleError) as e:
        resolve_device("auto")
    message = str(e.value)
    assert "given a GPU (LVERB_REQUIRE_GPU=1)" in message
    assert "CUDA_VISIBLE_DEVICES=," in message and "torch.cuda.device_count()=0" in message and "NVIDIA driver:" in message
    with pytest.raises(GpuNotVisibleError, match="given 8 GPU"):
        usable_gpus(8)
    assert resolve_device("cpu") == "cpu"  # asked for by name: laptops and the demo


def test_explicit_cuda_without_gpu_and_bad_names(no_gpu, monkeypatch):
    monkeypatch.delenv(REQUIRE_GPU_ENV, raising=False)
    with pytest.raises(GpuNotVisibleError, match="--device cuda:1 asked for, but this process sees 0"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")


def test_fewer_gpus_than_given_is_an_error_in_a_gpu_step(monkeypatch):
    monkeypatch.setattr(devices, "visible_gpu_count", lambda: 2)
    monkeypatch.setenv(REQUIRE_GPU_ENV, "1")
    assert usable_gpus(2) == 2
    with pytest.raises(GpuNotVisibleError, match="given 4 GPU"):
        usable_gpus(4)
    monkeypatch.delenv(REQUIRE_GPU_ENV)
    assert usable_gpus(4) == 2


def test_one_dtype_vocabulary():
    assert [parse_dtype(v) for v in ("float32", "FP32", "bf16", "bfloat16", "fp16", "float16")] == [
        "float32", "float32", "bfloat16", "bfloat16", "float16", "float16"]
    with pytest.raises(ValueError, match=r"--precision 'float16': use one of float32, bfloat16 \(or fp32, bf16\)"):
        parse_dtype("float16", ("float32", "bfloat16"), what="--precision")
    with pytest.raises(ValueError, match="--dtype 'auto'"):
        parse_dtype("auto")
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", type=dtype_argument())
    assert parser.parse_args(["--dtype", "bf16"]).dtype == "bfloat16"


def test_exact_float32_turns_tf32_off():
    previous = {name: getattr(b, "fp32_precision") for name, b in
                (("m", torch.backends.cuda.matmul), ("c", torch.backends.cudnn.conv), ("r", torch.backends.cudnn.rnn))}
    try:
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
        assert float32_math()["tf32"] is True
        math = exact_float32_math()
        assert math == {"tf32": False, "fp32_precision": {"matmul": "ieee", "cudnn_conv": "ieee", "cudnn_rnn": "ieee"}}
        assert torch.backends.cuda.matmul.fp32_precision == "ieee" and torch.backends.cudnn.conv.fp32_precision == "ieee"
    finally:
        torch.backends.cuda.matmul.fp32_precision = previous["m"]
        torch.backends.cudnn.conv.fp32_precision = previous["c"]
        torch.backends.cudnn.rnn.fp32_precision = previous["r"]
