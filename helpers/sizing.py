"""Back-of-the-envelope sizing: parameter counts, memory, FLOPs and GPU counts.

Every function here is pure arithmetic on numbers, so it runs instantly for a
70B model on a laptop. Memory is in bytes, compute in floating-point
operations (FLOPs, one multiply or one add each), time in seconds.

Sources of the rules used below:

* 6·N·D training FLOPs for a transformer with N parameters on D tokens, and
  2·N forward FLOPs per token: Kaplan et al., "Scaling Laws for Neural
  Language Models", 2020, section 2.1.
* 16 bytes per parameter for mixed-precision Adam (fp16/bf16 weights and
  gradients, fp32 master weights and two fp32 moments) and the per-GPU
  memory of ZeRO stages 1-3: Rajbhandari et al., "ZeRO: Memory Optimizations
  Toward Training Trillion Parameter Models", 2019, section 3.1 and figure 1.
* Transformer activation memory s·b·h·(34 + 5·a·s/h) bytes per layer with
  16-bit activations: Korthikanti et al., "Reducing Activation Recomputation
  in Large Transformer Models", 2022, equation 1.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

# Bytes per stored value. int4 packs two values per byte.
DTYPE_BYTES = {
    "fp32": 4.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "int8": 1.0,
    "int4": 0.5,
}
DTYPE_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}

# Bytes per parameter of optimizer state kept in fp32.
OPTIMIZER_STATE_BYTES = {"adam": 8, "sgd_momentum": 4, "sgd": 0}

# Memory of one "80 GB" accelerator (A100 80GB, H100 80GB) in decimal bytes.
# NOTE: the cards hold 80 GiB (85.9e9 bytes), but the CUDA context and the
# framework reserve a few GB, so 80e9 usable bytes is a round, slightly
# optimistic figure.
GPU_80GB = 80e9


def _check_number(name: str, value) -> None:
    """Raise ValueError unless ``value`` is a finite real number (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}. Pass a finite value")


def _check_positive(name: str, value, allow_zero: bool = False) -> None:
    _check_number(name, value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = "zero or positive" if allow_zero else "positive"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def _check_count(name: str, value, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    _check_positive(name, value, allow_zero)


def _check_config(config) -> None:
    if not isinstance(config, TransformerConfig):
        raise TypeError(
            f"config must be a TransformerConfig, got {type(config).__name__}. "
            "Pass one of KNOWN_CONFIGS or build a TransformerConfig"
        )


def dtype_bytes(dtype: str) -> float:
    """Return the bytes per value of a dtype name such as "bf16" or "int4"."""
    key = DTYPE_ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if key not in DTYPE_BYTES:
        known = ", ".join(sorted(DTYPE_BYTES) + sorted(DTYPE_ALIASES))
        raise ValueError(f"unknown dtype {dtype!r}. Use one of: {known}")
    return DTYPE_BYTES[key]


# ---------------------------------------------------------------- parameters


def linear_parameters(in_features: int, out_features: int, bias: bool = True) -> int:
    """Return the parameter count of ``nn.Linear(in_features, out_features)``."""
    _check_count("in_features", in_features)
    _check_count("out_features", out_features)
    return in_features * out_features + (out_features if bias else 0)


def mlp_widths(hidden: Sequence[int], in_features: int = 28 * 28, num_classes: int = 10) -> list[int]:
    """Return the layer widths of an MLP, input and output included."""
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        raise TypeError(f"hidden must be a sequence of layer widths such as (512, 256), got {hidden!r}")
    if not hidden:
        raise ValueError("hidden must list at least one layer width, got an empty sequence")
    for index, width in enumerate(hidden):
        _check_count(f"hidden[{index}]", width)
    _check_count("in_features", in_features)
    _check_count("num_classes", num_classes)
    return [in_features, *hidden, num_classes]


def mlp_parameters(hidden: Sequence[int] = (512, 256), in_features: int = 28 * 28, num_classes: int = 10) -> int:
    """Return the parameter count of ``helpers.models.MLP(hidden)``: weights plus biases."""
    widths = mlp_widths(hidden, in_features, num_classes)
    return sum(linear_parameters(a, b) for a, b in zip(widths, widths[1:]))


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of a decoder-only transformer, as in a model's published config.

    ``n_positions`` counts learned position embeddings (GPT-2); models with
    rotary embeddings (Llama) have none and use 0. ``gated_mlp`` means a
    SwiGLU block with three ``d_model x d_ff`` matrices instead of two.
    ``n_kv_heads`` below ``n_heads`` is grouped-query attention (GQA).
    """

    name: str
    n_layers: int
    d_model: int
    n_heads: int
    vocab_size: int
    d_ff: int
    n_kv_heads: int | None = None
    n_positions: int = 0
    gated_mlp: bool = False
    bias: bool = True
    norm: str = "layernorm"
    tied_embeddings: bool = True

    def __post_init__(self):
        for field in ("n_layers", "d_model", "n_heads", "vocab_size", "d_ff"):
            _check_count(field, getattr(self, field))
        _check_count("n_positions", self.n_positions, allow_zero=True)
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        kv_heads = self.kv_heads
        _check_count("n_kv_heads", kv_heads)
        if self.n_heads % kv_heads:
            raise ValueError(
                f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({kv_heads})"
            )
        if self.norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {self.norm!r}")

    @property
    def kv_heads(self) -> int:
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


# Configurations as published. GPT-2: the configs released with the model
# (n_layer, n_embd, n_head, n_positions 1024, vocab 50257; d_ff = 4 * n_embd,
# tied input and output embeddings). Llama 2: Touvron et al., "Llama 2: Open
# Foundation and Fine-Tuned Chat Models", 2023, with the layer shapes of the
# released checkpoints (no biases, RMSNorm, SwiGLU, untied output layer).
GPT2_SMALL = TransformerConfig("GPT-2 small", 12, 768, 12, 50257, 3072, n_positions=1024)
GPT2_XL = TransformerConfig("GPT-2 XL", 48, 1600, 25, 50257, 6400, n_positions=1024)
_LLAMA = dict(gated_mlp=True, bias=False, norm="rmsnorm", tied_embeddings=False)
LLAMA2_7B = TransformerConfig("Llama 2 7B", 32, 4096, 32, 32000, 11008, **_LLAMA)
LLAMA2_70B = TransformerConfig("Llama 2 70B", 80, 8192, 64, 32000, 28672, n_kv_heads=8, **_LLAMA)
KNOWN_CONFIGS = {c.name: c for c in (GPT2_SMALL, GPT2_XL, LLAMA2_7B, LLAMA2_70B)}


def transformer_parameter_breakdown(config: TransformerConfig) -> dict[str, int]:
    """Return parameter counts per part (embeddings, attention, mlp, norms, lm_head) and the total."""
    _check_config(config)
    d, bias = config.d_model, config.bias
    kv_width = config.kv_heads * config.head_dim
    norm_size = 2 * d if config.norm == "layernorm" else d

    query_and_output = 2 * linear_parameters(d, d, bias)
    keys_and_values = 2 * linear_parameters(d, kv_width, bias)
    attention = query_and_output + keys_and_values

    up_matrices = 2 if config.gated_mlp else 1
    mlp = up_matrices * linear_parameters(d, config.d_ff, bias) + linear_parameters(config.d_ff, d, bias)

    parts = {
        "embeddings": (config.vocab_size + config.n_positions) * d,
        "attention": config.n_layers * attention,
        "mlp": config.n_layers * mlp,
        # Two norms per layer plus the final one.
        "norms": (2 * config.n_layers + 1) * norm_size,
        "lm_head": 0 if config.tied_embeddings else config.vocab_size * d,
    }
    parts["total"] = sum(parts.values())
    return parts


def transformer_parameters(config: TransformerConfig) -> int:
    """Return the total parameter count of a decoder-only transformer."""
    return transformer_parameter_breakdown(config)["total"]


# -------------------------------------------------------------------- memory


def weight_bytes(n_params: int | float, dtype: str = "bf16") -> float:
    """Return the bytes needed to store ``n_params`` weights in ``dtype``.

    NOTE: real int8/int4 formats also store scales (for example one fp16
    scale per group of 128 values adds 1/64 byte per weight); this ignores them.
    """
    _check_positive("n_params", n_params)
    return n_params * dtype_bytes(dtype)


def training_state_bytes(n_params: int | float, precision: str = "mixed", optimizer: str = "adam") -> dict[str, float]:
    """Return bytes of weights, gradients, fp32 master weights and optimizer state.

    ``precision="mixed"`` is the ZeRO paper's mixed-precision recipe: 16-bit
    weights and gradients, plus fp32 master weights and fp32 optimizer
    state (16 bytes per parameter with Adam). ``precision="fp32"`` keeps
    everything in fp32 and needs no master copy (also 16 bytes with Adam).
    """
    _check_positive("n_params", n_params)
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise ValueError(f"unknown optimizer {optimizer!r}. Use one of {sorted(OPTIMIZER_STATE_BYTES)}")
    if precision == "mixed":
        per_param = {"weights": 2, "gradients": 2, "master_weights": 4}
    elif precision == "fp32":
        per_param = {"weights": 4, "gradients": 4, "master_weights": 0}
    else:
        raise ValueError(f"precision must be 'mixed' or 'fp32', got {precision!r}")
    per_param["optimizer_state"] = OPTIMIZER_STATE_BYTES[optimizer]
    state = {name: n_params * value for name, value in per_param.items()}
    state["total"] = sum(state.values())
    return state


def mlp_activation_bytes(
    batch_size: int,
    hidden: Sequence[int] = (512, 256),
    in_features: int = 28 * 28,
    num_classes: int = 10,
    dropout: bool = True,
    bytes_per_value: float = 4,
) -> float:
    """Estimate the bytes autograd saves for backward in one ``MLP`` training step.

    Per sample: the input of the first layer, per hidden layer the ReLU
    output plus (with dropout) the dropout mask and the dropout output, and
    the log-softmax of the logits, plus one int64 label. Without dropout
    the ReLU output is also the next layer's input, so it is stored once.
    """
    _check_count("batch_size", batch_size)
    _check_positive("bytes_per_value", bytes_per_value)
    widths = mlp_widths(hidden, in_features, num_classes)
    copies_per_hidden = 3 if dropout else 1
    values = in_features + copies_per_hidden * sum(widths[1:-1]) + num_classes
    return batch_size * (values * bytes_per_value + 8)


def transformer_activation_bytes(
    config: TransformerConfig, batch_size: int, seq_len: int, attention_scores: bool = True
) -> float:
    """Estimate activation bytes for backward: ``L * s*b*h * (34 + 5*a*s/h)``.

    The Korthikanti et al. (2022) formula for 16-bit activations, no
    recomputation and no tensor parallelism, where ``a`` is the number of
    heads. The ``5*a*s/h`` term is the stored attention-score matrices.
    Fused attention kernels such as FlashAttention do not store them, so
    pass ``attention_scores=False`` for those.
    """
    _check_config(config)
    _check_count("batch_size", batch_size)
    _check_count("seq_len", seq_len)
    s, b, h, a = seq_len, batch_size, config.d_model, config.n_heads
    per_value = 34 + (5 * a * s / h if attention_scores else 0)
    return config.n_layers * s * b * h * per_value


def kv_cache_bytes(config: TransformerConfig, batch_size: int, seq_len: int, dtype: str = "bf16") -> float:
    """Return the bytes of the key/value cache of ``batch_size`` sequences of ``seq_len`` tokens."""
    _check_config(config)
    _check_count("batch_size", batch_size)
    _check_count("seq_len", seq_len)
    per_token = 2 * config.n_layers * config.kv_heads * config.head_dim
    return per_token * seq_len * batch_size * dtype_bytes(dtype)


def zero_state_bytes_per_gpu(n_params: int | float, n_gpus: int, stage: int, optimizer_bytes: float = 12) -> float:
    """Return per-GPU bytes of mixed-precision training state under ZeRO ``stage`` (0-3).

    Stage 0 is plain data parallelism (every GPU stores ``(2 + 2 + K)·N``
    bytes); stage 1 shards the ``K·N`` optimizer bytes, stage 2 also the
    gradients, stage 3 also the weights. ``optimizer_bytes`` is K: 12 for
    Adam (fp32 master weights and two moments).
    """
    _check_positive("n_params", n_params)
    _check_count("n_gpus", n_gpus)
    _check_positive("optimizer_bytes", optimizer_bytes, allow_zero=True)
    if isinstance(stage, bool) or not isinstance(stage, numbers.Integral) or stage not in range(4):
        raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {stage!r}")
    weights, gradients, optimizer = 2 * n_params, 2 * n_params, optimizer_bytes * n_params
    if stage == 0:
        return weights + gradients + optimizer
    if stage == 1:
        return weights + gradients + optimizer / n_gpus
    if stage == 2:
        return weights + (gradients + optimizer) / n_gpus
    if stage == 3:
        return (weights + gradients + optimizer) / n_gpus


def gpus_needed(total_bytes: float, gpu_bytes: float = GPU_80GB) -> int:
    """Return how many GPUs of ``gpu_bytes`` hold ``total_bytes`` if split evenly.

    A lower bound: it assumes perfect sharding and no memory for
    communication buffers or fragmentation.
    """
    _check_positive("total_bytes", total_bytes, allow_zero=True)
    _check_positive("gpu_bytes", gpu_bytes)
    return max(1, math.ceil(total_bytes / gpu_bytes))


# ------------------------------------------------------------------- compute


def mlp_forward_flops(hidden: Sequence[int] = (512, 256), in_features: int = 28 * 28, num_classes: int = 10) -> int:
    """Return forward FLOPs per sample of an MLP: 2 per weight (multiply and add).

    Biases and activation functions add about one FLOP per unit and are
    left out, as in the 2·N rule.
    """
    widths = mlp_widths(hidden, in_features, num_classes)
    return sum(2 * a * b for a, b in zip(widths, widths[1:]))


def training_flops_per_sample(forward_flops: float) -> float:
    """Return forward plus backward FLOPs: backward costs about twice the forward."""
    _check_positive("forward_flops", forward_flops)
    return 3 * forward_flops


def transformer_training_flops(n_params: float, tokens: float) -> float:
    """Return the 6·N·D estimate of training FLOPs for ``n_params`` on ``tokens``.

    NOTE: it leaves out attention over the context (about 6·L·s·d per
    token), which matters for long sequences and small models.
    """
    _check_positive("n_params", n_params)
    _check_positive("tokens", tokens)
    return 6 * n_params * tokens


def compute_seconds(flops: float, peak_flops_per_s: float, utilization: float = 0.4) -> float:
    """Return seconds to run ``flops`` on hardware of ``peak_flops_per_s`` at ``utilization``.

    ``utilization`` is the model FLOPs utilization (MFU), a fraction in (0, 1].
    """
    _check_positive("flops", flops, allow_zero=True)
    _check_positive("peak_flops_per_s", peak_flops_per_s)
    _check_number("utilization", utilization)
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {utilization!r}. Pass 0.4 for 40%")
    return flops / (peak_flops_per_s * utilization)
