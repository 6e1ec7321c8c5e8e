"""AutoAWQ GEMM checkpoints on disk: the writer, and a reader that dequantizes back to floats.

The directory is what vLLM, transformers and AutoAWQ load: ``config.json`` with a
``quantization_config`` (``quant_method: awq``, ``version: gemm``), safetensors with HF tensor
names (``...q_proj.qweight`` int32, ``qzeros`` int32, ``scales`` fp16; everything else fp16),
a ``model.safetensors.index.json`` when sharded, the tokenizer files and ``generation_config.json``.
It is written in a temporary sibling directory and renamed into place, so a crash never leaves a
half-written checkpoint under the final name.

The reader exists for evaluation: it rebuilds a plain transformers model whose linear weights are
``(q - z) * s`` of the checkpoint, i.e. numerically the function the int4 kernels compute.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from pagedawq.quant.calibrate.errors import OutputExistsError
from pagedawq.quant.pack import dequantize_awq

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 5_000_000_000  # what transformers and AutoAWQ use ("5GB")
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Files copied verbatim from the source model directory, when present.
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
              "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
              "generation_config.json")


def check_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Refuse a non-empty output directory unless ``overwrite`` (checked before any calibration)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputExistsError(f"{output_dir} exists and is not a directory; choose another output path")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise OutputExistsError(f"{output_dir} already exists and is not empty; pass overwrite=True "
                                "(--overwrite) to replace it, or choose another output directory")


def awq_quantization_config(w_bit: int, group_size: int, zero_point: bool,
                            modules_to_not_convert: list[str] | None) -> dict[str, Any]:
    return {"quant_method": "awq", "bits": w_bit, "group_size": group_size, "zero_point": zero_point,
            "version": "gemm", "modules_to_not_convert": modules_to_not_convert}


def checkpoint_config(source_config: dict[str, Any], quantization_config: dict[str, Any]) -> dict[str, Any]:
    """The source ``config.json`` with the quantization config and an fp16 dtype.

    Both spellings of the dtype key are written: transformers 5 reads ``dtype``, 4.x and older
    vLLM read ``torch_dtype``.
    """
    config = dict(source_config)
    config["quantization_config"] = quantization_config
    config["torch_dtype"] = "float16"
    config["dtype"] = "float16"
    return config


def _shards(tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Split tensors, in name order, into shards of at most ``max_shard_bytes`` (a lone larger tensor
    gets its own shard)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name in sorted(tensors):
        t = tensors[name]
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    return shards


def _write_tensors(directory: Path, tensors: dict[str, torch.Tensor], max_shard_bytes: int) -> None:
    from safetensors.torch import save_file

    shards = _shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        save_file({k: v.contiguous() for k, v in shards[0].items()}, directory / SINGLE_FILE,
                  metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        filename = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: v.contiguous() for k, v in shard.items()}, directory / filename, metadata={"format": "pt"})
        weight_map.update({name: filename for name in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")


def write_checkpoint(output_dir: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict[str, Any],
                     source_dir: str | os.PathLike, *, overwrite: bool = False,
                     max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> Path:
    """Write the checkpoint directory atomically; return its path."""
    output_dir, source_dir = Path(output_dir), Path(source_dir)
    check_output_dir(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        tmp.chmod(0o755)
        _write_tensors(tmp, tensors, max_shard_bytes)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for name in SIDE_FILES:
            if (source_dir / name).is_file():
                shutil.copy2(source_dir / name, tmp / name)
        _replace_dir(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote AWQ checkpoint %s", output_dir)
    return output_dir


def _replace_dir(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``, moving an existing ``target`` aside first and deleting it after."""
    if not target.exists():
        new.rename(target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        old.rename(target)
        raise
    shutil.rmtree(old)


def read_tensors(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors checkpoint."""
    from safetensors.torch import load_file

    index = checkpoint_dir / INDEX_FILE
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file()
             else [SINGLE_FILE])
    tensors: dict[str, torch.Tensor] = {}
    for filename in files:
        tensors.update(load_file(checkpoint_dir / filename))
    return tensors


def dequantized_state_dict(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Replace each ``qweight/qzeros/scales`` triple by the float ``weight [out, in]`` it encodes."""
    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name.endswith(".qweight"):
            base = name[: -len(".qweight")]
            w = dequantize_awq(t, tensors[base + ".qzeros"], tensors[base + ".scales"], torch.float32)
            out[base + ".weight"] = w.t().contiguous().to(dtype)
        elif not name.endswith((".qzeros", ".scales")):
            out[name] = t.to(dtype)
    return out


def load_dequantized(checkpoint_dir: str | os.PathLike, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A transformers model computing exactly what the AWQ checkpoint encodes, in ``dtype``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    checkpoint_dir = Path(checkpoint_dir)
    config = AutoConfig.from_pretrained(checkpoint_dir)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the rebuilt model holds plain float weights
    model = AutoModelForCausalLM.from_config(config).to(dtype)
    state = dequantized_state_dict(read_tensors(checkpoint_dir), dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if model.get_output_embeddings() is not None and \
        model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr() else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{checkpoint_dir} does not match its config: missing {sorted(set(missing) - tied)}, "
                         f"unexpected {sorted(unexpected)}")
    return model.eval()
