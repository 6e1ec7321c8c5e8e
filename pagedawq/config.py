"""Validated engine configuration, built once from the user's ``LLM(...)`` arguments.

Everything that can be wrong with the arguments or the checkpoint is caught here, before a
weight is loaded, with a message that says what to change.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pagedawq.errors import ModelFilesError, PagedAWQError, UnsupportedModelError
from pagedawq.quant.base import QuantConfig

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float": torch.float32, "float16": torch.float16, "half": torch.float16,
           "bfloat16": torch.bfloat16}
LOAD_FORMATS = ("auto", "safetensors", "dummy")
BLOCK_SIZES = (8, 16, 32, 64, 128)


class ConfigError(PagedAWQError, ValueError):
    """An engine argument is invalid."""


def resolve_model_path(model: str | None) -> Path:
    """``None`` / the default model's name -> its cached HF directory; a ``.gguf`` file -> a
    cached HF conversion of it; otherwise a local HF directory, which must exist."""
    from pagedawq.models import default_model
    if model is None or str(model).lower() == default_model.DEFAULT_MODEL_NAME:
        return default_model.ensure_default_model_dir()
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelFilesError(f"GGUF file not found: {path}")
        stat = path.stat()
        out = default_model.cache_root() / "gguf" / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
        if not (out / "config.json").is_file():
            default_model.convert_gguf_to_hf_dir(path, out)
        return out
    if not path.exists():
        raise ModelFilesError(
            f"model {model!r} is neither a local directory, a .gguf file, nor the default model's name "
            f"({default_model.DEFAULT_MODEL_NAME!r}); this engine does not download from a model hub")
    if not (path / "config.json").is_file():
        raise ModelFilesError(f"{path} has no config.json; pass an HF model directory or a .gguf file")
    return path


def read_hf_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelFilesError(f"cannot read {path / 'config.json'}: {e}") from e


def hf_num_kv_heads(hf_config: dict[str, Any]) -> int:
    """KV heads of an HF config (without ``num_key_value_heads``: as many as query heads)."""
    return int(hf_config.get("num_key_value_heads") or hf_config["num_attention_heads"])


def hf_head_dim(hf_config: dict[str, Any]) -> int:
    """Head size of an HF config (without ``head_dim``: hidden size / query heads)."""
    return int(hf_config.get("head_dim") or hf_config["hidden_size"] // hf_config["num_attention_heads"])


@dataclass
class ModelConfig:
    path: Path
    hf_config: dict[str, Any]
    architecture: str
    dtype: torch.dtype
    max_model_len: int
    quant_config: QuantConfig | None
    load_format: str
    tokenizer: Path | None
    seed: int

    @property
    def num_layers(self) -> int:
        return int(self.hf_config["num_hidden_layers"])

    @property
    def num_heads(self) -> int:
        return int(self.hf_config["num_attention_heads"])

    @property
    def num_kv_heads(self) -> int:
        return hf_num_kv_heads(self.hf_config)

    @property
    def hidden_size(self) -> int:
        return int(self.hf_config["hidden_size"])

    @property
    def head_dim(self) -> int:
        return hf_head_dim(self.hf_config)

    @property
    def vocab_size(self) -> int:
        return int(self.hf_config["vocab_size"])


@dataclass
class CacheConfig:
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    kv_cache_memory_bytes: int | None = None
    enable_prefix_caching: bool = True
    num_blocks: int | None = None   # decided by the workers after loading the model


@dataclass
class SchedulerConfig:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 2048


@dataclass
class ParallelConfig:
    tensor_parallel_size: int = 1
    distributed_executor_backend: str | None = None   # "uni", "ray" or "mp"; None = pick by size


@dataclass
class EngineConfig:
    model: ModelConfig
    cache: CacheConfig
    scheduler: SchedulerConfig
    parallel: ParallelConfig
    device: str
    enforce_eager: bool = False
    attention_backend: str | None = None  # None: "triton" on CUDA, "torch" elsewhere
    async_scheduling: bool = False   # resolved by build_engine_config: by default on for CUDA, any TP size
    tune_kernels: bool = False       # time the AWQ GEMV candidates for this model's shapes at start-up (CUDA)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def resolved_attention_backend(self) -> str:
        if self.attention_backend:
            return self.attention_backend
        return "triton" if self.device == "cuda" else "torch"


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' was requested but torch sees no CUDA GPU; use device='cpu'")
    return device


def resolve_dtype(dtype: str | torch.dtype, hf_config: dict[str, Any], device: str, quantized: bool) -> torch.dtype:
    """``"auto"``: float32 on CPU; on GPU the checkpoint's 16-bit dtype (float16 for AWQ, whose
    scales are float16; bfloat16 when the checkpoint is float32)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ConfigError(f"dtype {dtype} is not supported; use float32, float16 or bfloat16")
        return dtype
    if dtype != "auto":
        if dtype not in _DTYPES:
            raise ConfigError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")
        return _DTYPES[dtype]
    if device == "cpu":
        return torch.float32
    if quantized:
        return torch.float16
    declared = _DTYPES.get(str(hf_config.get("torch_dtype") or hf_config.get("dtype") or "float32"))
    return declared if declared in (torch.float16, torch.bfloat16) else torch.bfloat16


def derive_max_model_len(hf_config: dict[str, Any], requested: int | None) -> int:
    limit = int(hf_config.get("max_position_embeddings") or 2048)
    window = hf_config.get("sliding_window") if hf_config.get("use_sliding_window", True) else None
    if window and int(window) < limit:
        # Attention here has no sliding-window masking: stay inside the window, where it is exact.
        logger.warning("model has a %d-token sliding window; capping max_model_len to it", window)
        limit = int(window)
    if requested is None:
        return limit
    if not isinstance(requested, int) or requested < 1:
        raise ConfigError(f"max_model_len must be a positive integer, got {requested!r}")
    if requested > limit:
        raise ConfigError(f"max_model_len={requested} exceeds what the model supports ({limit} tokens)")
    return requested


def _check_linear_splits(architecture: str, hf_config: dict[str, Any], quant_config: QuantConfig | None,
                         tp_size: int) -> None:
    """Refuse, before any rank starts, a tensor-parallel split that a linear layer or its weight
    format cannot take: a rank would otherwise fail inside its worker while building the model."""
    from pagedawq.models.registry import get_model_class

    for prefix, size, per_rank in get_model_class(architecture).linear_input_splits(hf_config, tp_size):
        if per_rank != size and size % tp_size:
            raise UnsupportedModelError(
                f"tensor_parallel_size={tp_size} does not divide {prefix}'s {size} input features; "
                f"use a tensor_parallel_size that divides {size}")
        if quant_config is not None:
            quant_config.check_input_split(prefix, size, per_rank)


def build_engine_config(model: str | None, *, tokenizer: str | None = None, quantization: str | None = None,
                        dtype: str | torch.dtype = "auto", device: str = "auto", tensor_parallel_size: int = 1,
                        max_model_len: int | None = None, max_num_seqs: int = 256,
                        max_num_batched_tokens: int | None = None, block_size: int = 16,
                        gpu_memory_utilization: float = 0.9, kv_cache_memory_bytes: int | None = None,
                        enable_prefix_caching: bool = True, load_format: str = "auto",
                        skip_tokenizer_init: bool = False, seed: int = 0, enforce_eager: bool = False,
                        distributed_executor_backend: str | None = None,
                        attention_backend: str | None = None, async_scheduling: bool | None = None,
                        tune_kernels: bool = False) -> EngineConfig:
    from pagedawq.models.registry import check_architecture
    from pagedawq.quant.registry import resolve_quant_config

    if async_scheduling not in (None, True, False):
        raise ConfigError(f"async_scheduling must be True, False or None (auto), got {async_scheduling!r}")
    if load_format not in LOAD_FORMATS:
        raise ConfigError(f"load_format must be one of {LOAD_FORMATS}, got {load_format!r}")
    if block_size not in BLOCK_SIZES:
        raise ConfigError(f"block_size must be one of {BLOCK_SIZES}, got {block_size!r}")
    if not isinstance(max_num_seqs, int) or max_num_seqs < 1:
        raise ConfigError(f"max_num_seqs must be a positive integer, got {max_num_seqs!r}")
    if not 0 < gpu_memory_utilization <= 1:
        raise ConfigError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    if kv_cache_memory_bytes is not None and (not isinstance(kv_cache_memory_bytes, int) or kv_cache_memory_bytes <= 0):
        raise ConfigError(f"kv_cache_memory_bytes must be a positive integer, got {kv_cache_memory_bytes!r}")
    if not isinstance(tensor_parallel_size, int) or tensor_parallel_size < 1:
        raise ConfigError(f"tensor_parallel_size must be a positive integer, got {tensor_parallel_size!r}")
    if distributed_executor_backend not in (None, "uni", "ray", "mp"):
        raise ConfigError("distributed_executor_backend must be 'uni', 'ray' or 'mp', got "
                          f"{distributed_executor_backend!r}")

    device = resolve_device(device)
    if async_scheduling is None:
        # On CUDA a step's host work would otherwise leave the GPU idle; every rank and the engine
        # read this one decision (rank 0 then shares its sampled tokens on the device).
        async_scheduling = device == "cuda"
    if device == "cuda" and torch.cuda.device_count() < tensor_parallel_size:
        raise ConfigError(f"tensor_parallel_size={tensor_parallel_size} needs {tensor_parallel_size} GPUs but "
                          f"{torch.cuda.device_count()} are visible; lower tensor_parallel_size or expose more "
                          "GPUs (CUDA_VISIBLE_DEVICES)")
    path = resolve_model_path(model)
    hf_config = read_hf_config(path)
    architecture = check_architecture(hf_config)
    if quantization is not None and load_format == "dummy" and "quantization_config" not in hf_config:
        # Random int4 weights for benchmarking: the default AWQ layout.
        hf_config["quantization_config"] = {"quant_method": quantization, "bits": 4, "group_size": 128,
                                            "zero_point": True, "version": "gemm"}
    try:
        quant_config = resolve_quant_config(quantization, hf_config)
    except PagedAWQError:
        raise
    except ValueError as e:
        raise ConfigError(str(e)) from e
    torch_dtype = resolve_dtype(dtype, hf_config, device, quant_config is not None)
    if quant_config is not None and torch_dtype not in quant_config.supported_dtypes():
        raise ConfigError(f"{quant_config.name} does not support dtype {torch_dtype}")
    max_len = derive_max_model_len(hf_config, max_model_len)
    tokenizer_path = None if skip_tokenizer_init else Path(tokenizer).expanduser() if tokenizer else path
    if tokenizer_path is not None and not tokenizer_path.exists():
        raise ModelFilesError(f"tokenizer path {tokenizer_path} does not exist")

    if max_num_batched_tokens is None:
        max_num_batched_tokens = 8192 if device == "cuda" else 2048
    if not isinstance(max_num_batched_tokens, int) or max_num_batched_tokens < 1:
        raise ConfigError(f"max_num_batched_tokens must be a positive integer, got {max_num_batched_tokens!r}")

    num_heads = int(hf_config["num_attention_heads"])
    num_kv_heads = hf_num_kv_heads(hf_config)
    if num_heads % tensor_parallel_size:
        raise UnsupportedModelError(
            f"tensor_parallel_size={tensor_parallel_size} does not divide the model's {num_heads} attention "
            f"heads; use a tensor_parallel_size that divides {num_heads}")
    if num_kv_heads % tensor_parallel_size and tensor_parallel_size % num_kv_heads:
        raise UnsupportedModelError(
            f"tensor_parallel_size={tensor_parallel_size} neither divides nor is a multiple of the model's "
            f"{num_kv_heads} KV heads")
    _check_linear_splits(architecture, hf_config, quant_config, tensor_parallel_size)

    model_config = ModelConfig(path=path, hf_config=hf_config, architecture=architecture, dtype=torch_dtype,
                               max_model_len=max_len, quant_config=quant_config, load_format=load_format,
                               tokenizer=tokenizer_path, seed=seed)
    return EngineConfig(
        model=model_config,
        cache=CacheConfig(block_size=block_size, gpu_memory_utilization=gpu_memory_utilization,
                          kv_cache_memory_bytes=kv_cache_memory_bytes, enable_prefix_caching=enable_prefix_caching),
        scheduler=SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                                  max_model_len=max_len),
        parallel=ParallelConfig(tensor_parallel_size=tensor_parallel_size,
                                distributed_executor_backend=distributed_executor_backend),
        device=device, enforce_eager=enforce_eager, attention_backend=attention_backend,
        async_scheduling=async_scheduling, tune_kernels=bool(tune_kernels))
