"""Sizing arithmetic against known counts, real modules and measured memory."""

import math

import pytest
import torch
from torch import nn

from helpers import memory, sizing
from helpers.models import MLP, count_parameters


def test_mlp_parameters_classic():
    assert sizing.mlp_parameters((512, 256)) == 535_818


@pytest.mark.parametrize("hidden", [(32,), (512, 256), (1024, 1024, 64)])
def test_mlp_parameters_match_module(hidden):
    assert sizing.mlp_parameters(hidden) == count_parameters(MLP(hidden=hidden))


def test_gpt2_small_parameters():
    # Count of the released GPT-2 small checkpoint (often quoted as 124M).
    assert sizing.transformer_parameters(sizing.GPT2_SMALL) == 124_439_808


def test_gpt2_xl_parameters():
    assert sizing.transformer_parameters(sizing.GPT2_XL) == 1_557_611_200


def test_llama2_parameters_near_published():
    assert sizing.transformer_parameters(sizing.LLAMA2_7B) == 6_738_415_616
    assert round(sizing.transformer_parameters(sizing.LLAMA2_70B) / 1e9) == 69


def _gpt_blocks(config):
    return nn.ModuleList(
        nn.TransformerEncoderLayer(config.d_model, config.n_heads, config.d_ff, norm_first=True)
        for _ in range(config.n_layers)
    )


def test_transformer_blocks_match_torch_layers():
    # nn.TransformerEncoderLayer has exactly GPT-2's block: biased QKV and
    # output projections, a two-layer MLP and two LayerNorms. The meta
    # device builds the shapes without allocating memory.
    config = sizing.GPT2_XL
    with torch.device("meta"):
        blocks = _gpt_blocks(config)
    parts = sizing.transformer_parameter_breakdown(config)
    per_layer_norms = 2 * config.n_layers * 2 * config.d_model
    assert count_parameters(blocks) == parts["attention"] + parts["mlp"] + per_layer_norms


def test_gqa_shrinks_attention():
    mha = sizing.TransformerConfig("mha", 2, 64, 8, 100, 256)
    gqa = sizing.TransformerConfig("gqa", 2, 64, 8, 100, 256, n_kv_heads=2)
    mha_attention = sizing.transformer_parameter_breakdown(mha)["attention"]
    gqa_attention = sizing.transformer_parameter_breakdown(gqa)["attention"]
    assert mha_attention - gqa_attention == 2 * 2 * (64 * 48 + 48)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_layers=0), "n_layers must be positive"),
        (dict(d_model=-8), "d_model must be positive"),
        (dict(n_heads=5), "divisible by n_heads"),
        (dict(n_kv_heads=3), "multiple of n_kv_heads"),
        (dict(norm="batchnorm"), "norm must be"),
    ],
)
def test_config_rejects_bad_shape(kwargs, message):
    args = dict(name="bad", n_layers=2, d_model=64, n_heads=8, vocab_size=100, d_ff=256) | kwargs
    with pytest.raises(ValueError, match=message):
        sizing.TransformerConfig(**args)


@pytest.mark.parametrize(
    "dtype, expected",
    [("fp32", 4e9), ("float32", 4e9), ("bf16", 2e9), ("fp16", 2e9), ("int8", 1e9), ("int4", 0.5e9)],
)
def test_weight_bytes_per_dtype(dtype, expected):
    assert sizing.weight_bytes(1e9, dtype) == expected


def test_weight_bytes_unknown_dtype():
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        sizing.weight_bytes(1e9, "fp8")


def test_weight_bytes_negative_count():
    with pytest.raises(ValueError, match="n_params must be positive, got -1"):
        sizing.weight_bytes(-1)


def test_training_state_mixed_adam_is_16_bytes():
    state = sizing.training_state_bytes(1, "mixed", "adam")
    assert state["total"] == 16
    assert state["master_weights"] == 4


def test_training_state_fp32_adam_is_16_bytes():
    state = sizing.training_state_bytes(1, "fp32", "adam")
    assert state["total"] == 16
    assert state["master_weights"] == 0


def test_training_state_sgd_needs_no_state():
    assert sizing.training_state_bytes(10, "fp32", "sgd")["total"] == 80


def test_training_state_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        sizing.training_state_bytes(10, optimizer="lion")
    with pytest.raises(ValueError, match="precision must be"):
        sizing.training_state_bytes(10, precision="fp8")


def test_zero_stages_match_paper_example():
    # ZeRO paper, figure 1: 7.5B parameters on 64 GPUs with Adam (K = 12)
    # need 120 GB, 31.4 GB, 16.6 GB and 1.9 GB per GPU for stages 0-3.
    expected_gb = [120, 31.4, 16.6, 1.9]
    for stage, gb in enumerate(expected_gb):
        got = sizing.zero_state_bytes_per_gpu(7.5e9, 64, stage) / 1e9
        assert got == pytest.approx(gb, rel=0.02), stage


def test_zero_rejects_stage_four():
    with pytest.raises(ValueError, match="stage must be 0, 1, 2 or 3"):
        sizing.zero_state_bytes_per_gpu(1e9, 8, 4)


def test_gpus_needed_rounds_up():
    assert sizing.gpus_needed(80e9) == 1
    assert sizing.gpus_needed(80e9 + 1) == 2
    assert sizing.gpus_needed(0) == 1


def test_gpus_needed_llama70b_training():
    state = sizing.training_state_bytes(sizing.transformer_parameters(sizing.LLAMA2_70B))["total"]
    assert sizing.gpus_needed(state) == 14


def test_kv_cache_gqa_is_eighth_of_mha():
    mha_like = sizing.TransformerConfig("70B-MHA", 80, 8192, 64, 32000, 28672, gated_mlp=True)
    ratio = sizing.kv_cache_bytes(mha_like, 1, 4096) / sizing.kv_cache_bytes(sizing.LLAMA2_70B, 1, 4096)
    assert ratio == 8


def test_activations_without_attention_scores():
    # Llama 2 7B, one 4096-token sequence: 32 * 4096 * 4096 * 34 bytes.
    flash = sizing.transformer_activation_bytes(sizing.LLAMA2_7B, 1, 4096, attention_scores=False)
    full = sizing.transformer_activation_bytes(sizing.LLAMA2_7B, 1, 4096)
    assert flash == 32 * 4096 * 4096 * 34
    assert full == 32 * 4096 * 4096 * (34 + 5 * 32)


def test_kv_cache_llama7b_per_token():
    # 2 (K and V) * 32 layers * 4096 values * 2 bytes = 0.5 MiB per token.
    assert sizing.kv_cache_bytes(sizing.LLAMA2_7B, 1, 1) == 2**19


def test_six_nd_rule():
    assert sizing.transformer_training_flops(7e9, 2e12) == pytest.approx(8.4e22)


def test_mlp_forward_flops_is_twice_weights():
    weights = 784 * 512 + 512 * 256 + 256 * 10
    assert sizing.mlp_forward_flops((512, 256)) == 2 * weights
    assert sizing.training_flops_per_sample(2 * weights) == 6 * weights


def test_compute_seconds_rejects_bad_utilization():
    with pytest.raises(ValueError, match="utilization must be in"):
        sizing.compute_seconds(1e12, 1e12, utilization=40)


def test_compute_seconds_scales_with_utilization():
    assert sizing.compute_seconds(1e15, 1e15, utilization=0.5) == 2.0


def test_counts_reject_floats_and_bools():
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        sizing.mlp_activation_bytes(2.5)
    with pytest.raises(ValueError, match="in_features must be an integer"):
        sizing.linear_parameters(True, 3)


def test_activation_estimate_matches_saved_tensors():
    torch.manual_seed(0)
    model = MLP(hidden=(128, 64))
    images, labels = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    with memory.SavedTensorMeter(exclude=model.parameters()) as meter:
        loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    estimate = sizing.mlp_activation_bytes(32, (128, 64))
    # The meter also sees the 4-byte scalar loss of the mean reduction.
    assert math.isclose(meter.bytes, estimate, rel_tol=0.01), (meter.bytes, estimate)


def test_activation_estimate_without_dropout():
    model = MLP(hidden=(128, 64), dropout=0.0)
    images, labels = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    with memory.SavedTensorMeter(exclude=model.parameters()) as meter:
        nn.functional.cross_entropy(model(images), labels)
    estimate = sizing.mlp_activation_bytes(32, (128, 64), dropout=False)
    assert math.isclose(meter.bytes, estimate, rel_tol=0.01), (meter.bytes, estimate)


def test_measured_state_matches_16_bytes_per_param():
    images, labels = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    result = memory.measure_training_step(lambda: MLP(hidden=(256,)), images, labels, steps=1)
    n_params = sizing.mlp_parameters((256,))
    state = result.parameter_bytes + result.gradient_bytes + result.optimizer_bytes
    assert state == sizing.training_state_bytes(n_params, "fp32")["total"]


def test_measured_peak_rss_is_reported():
    images, labels = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    result = memory.measure_training_step(lambda: MLP(hidden=(2048,)), images, labels, steps=1)
    assert result.peak_method == "rss_peak"
    # The model state alone is 16 bytes per parameter; RSS cannot be below
    # what the tensors need, give or take pages touched before the reset.
    assert result.peak_bytes > 0.5 * (result.parameter_bytes + result.optimizer_bytes)


def test_measure_rejects_zero_steps():
    images, labels = torch.randn(4, 784), torch.randint(0, 10, (4,))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        memory.measure_training_step(MLP, images, labels, steps=0)


def test_storage_bytes_counts_views_once():
    tensor = torch.zeros(100)
    assert memory.storage_bytes([tensor, tensor[:10], tensor.view(10, 10)]) == 400


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: sizing.mlp_forward_flops([-5]), r"hidden\[0\] must be positive, got -5"),
        (lambda: sizing.mlp_parameters((512, 0)), r"hidden\[1\] must be positive, got 0"),
        (lambda: sizing.mlp_forward_flops([math.nan]), r"hidden\[0\] must be an integer, got nan"),
        (lambda: sizing.mlp_forward_flops((512,), in_features=-1), "in_features must be positive, got -1"),
        (lambda: sizing.mlp_forward_flops((512,), num_classes=0), "num_classes must be positive, got 0"),
        (lambda: sizing.mlp_activation_bytes(10, bytes_per_value=-4), "bytes_per_value must be positive, got -4"),
        (lambda: sizing.mlp_activation_bytes(10, bytes_per_value=math.nan), "bytes_per_value must be a finite number"),
        (lambda: sizing.weight_bytes(math.inf), "n_params must be a finite number, got inf"),
        (lambda: sizing.weight_bytes(math.nan), "n_params must be a finite number, got nan"),
        (lambda: sizing.gpus_needed(math.inf), "total_bytes must be a finite number, got inf"),
        (lambda: sizing.gpus_needed(1e9, gpu_bytes=math.inf), "gpu_bytes must be a finite number, got inf"),
        (lambda: sizing.transformer_training_flops(7e9, -math.inf), "tokens must be a finite number"),
        (lambda: sizing.compute_seconds(1e12, 1e12, utilization="0.4"), "utilization must be a number, got '0.4'"),
        (lambda: sizing.compute_seconds(1e12, 1e12, utilization=math.nan), "utilization must be a finite number"),
        (lambda: sizing.zero_state_bytes_per_gpu(1e9, 8, True), "stage must be 0, 1, 2 or 3, got True"),
        (lambda: sizing.zero_state_bytes_per_gpu(1e9, 8, 1.5), "stage must be 0, 1, 2 or 3, got 1.5"),
    ],
)
def test_sizing_rejects_bad_number(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_mlp_widths_rejects_bare_int():
    with pytest.raises(TypeError, match="hidden must be a sequence of layer widths"):
        sizing.mlp_parameters(512)


def test_mlp_widths_rejects_string():
    with pytest.raises(TypeError, match="hidden must be a sequence"):
        sizing.mlp_forward_flops("512")


def test_kv_cache_rejects_non_config():
    with pytest.raises(TypeError, match="config must be a TransformerConfig, got str"):
        sizing.kv_cache_bytes("Llama 2 7B", 1, 1)


def test_sizing_accepts_numpy_counts():
    numpy = pytest.importorskip("numpy")
    assert sizing.mlp_parameters((numpy.int64(512), 256)) == 535_818


def test_gpus_needed_zero_total_still_one():
    assert sizing.gpus_needed(0.0) == 1


@pytest.mark.parametrize("kwargs", [dict(repeats=-5), dict(repeats=0), dict(size=0), dict(size=2.5), dict(repeats=True)])
def test_matmul_rate_rejects_bad_counts(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
        memory.matmul_flops_per_second(**kwargs)


def test_matmul_rate_small_is_positive():
    assert memory.matmul_flops_per_second(size=16, repeats=1) > 0
