"""``quantize()``: validate everything cheap first, then calibrate, then write the checkpoint.

Options are checked before any model weights are read or text generated, so a typo costs seconds,
not a calibration run. transformers is imported only when it is needed.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

import torch

from pagedawq.quant.calibrate.data import calibration_blocks, read_calibration_texts
from pagedawq.quant.calibrate.driver import CalibrationOptions, calibrate_model
from pagedawq.quant.calibrate.errors import QuantizeOptionError
from pagedawq.quant.calibrate.rtn import WeightQuant
from pagedawq.quant.calibrate.walk import LAYERS_PREFIX, load_model, read_config, scale_groups_for
from pagedawq.quant.checkpoint import (awq_quantization_config, check_output_dir, checkpoint_config,
                                       write_checkpoint)

logger = logging.getLogger(__name__)

SUPPORTED_GROUP_SIZES = (32, 64, 128, -1)
SUPPORTED_VERSIONS = ("gemm",)


def resolve_model_dir(model: str | os.PathLike | None) -> Path:
    """A local HF directory; ``None`` or the default model's name mean the default model."""
    from pagedawq.models.default_model import DEFAULT_MODEL_NAME, ensure_default_model_dir

    if model is None or str(model) == DEFAULT_MODEL_NAME:
        return ensure_default_model_dir()
    path = Path(model)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json); pass a "
                                f"local model directory, or None / {DEFAULT_MODEL_NAME!r} for the default model")
    return path


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def validate_options(w_bit: int, group_size: int, version: str) -> None:
    if version.lower() not in SUPPORTED_VERSIONS:
        raise QuantizeOptionError(f"unknown AWQ version {version!r}: only 'gemm' checkpoints are written")
    if w_bit != 4:
        raise QuantizeOptionError(f"w_bit={w_bit} is not supported: the GEMM format packs 4-bit codes (use 4)")
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise QuantizeOptionError(f"group_size={group_size} is not supported; use one of {SUPPORTED_GROUP_SIZES} "
                                  "(-1 means one group per output channel)")


def check_linear_shapes(model_dir: Path, group_size: int) -> None:
    """Every decoder linear must split into whole groups along its input and pack 8 codes along its output.

    The model is instantiated on the meta device (no weights read) to see the real shapes.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    layer = skeleton.get_submodule(LAYERS_PREFIX)[0]
    for name, m in layer.named_modules():
        if not isinstance(m, torch.nn.Linear):
            continue
        if group_size != -1 and m.in_features % group_size:
            fits = [g for g in SUPPORTED_GROUP_SIZES if g == -1 or m.in_features % g == 0]
            raise QuantizeOptionError(
                f"group_size={group_size} does not divide the input dimension {m.in_features} of {name}; "
                f"group sizes that fit this model: {fits}")
        if m.out_features % 8:
            raise QuantizeOptionError(f"{name} has {m.out_features} output features, not a multiple of 8: "
                                      "the GEMM format cannot pack it")


def quantize(model: str | os.PathLike | None, output_dir: str | os.PathLike, *, w_bit: int = 4,
             group_size: int = 128, zero_point: bool = True, version: str = "gemm",
             calib_data: str | os.PathLike | Sequence[str] = "self", n_samples: int = 128, seq_len: int = 512,
             duo_scaling: bool = True, clip: bool = True, modules_to_not_convert: Sequence[str] | None = None,
             device: str | torch.device = "auto", overwrite: bool = False) -> Path:
    """Quantize a Llama/Mistral/Qwen2 HF model with AWQ and write an AutoAWQ GEMM checkpoint.

    ``model``: local HF directory, or None / "smollm2-135m-instruct" for the default model.
    ``calib_data``: a .txt / .jsonl (field "text") path, a list of strings, or "self" (the model
    samples its own calibration text with the pagedawq engine). ``n_samples`` blocks of
    ``seq_len`` tokens are used. Returns the checkpoint directory.
    """
    started = time.perf_counter()
    validate_options(w_bit, group_size, version)
    model_dir = resolve_model_dir(model)
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite)
    source_config = read_config(model_dir)
    groups = scale_groups_for(source_config)
    check_linear_shapes(model_dir, group_size)
    dev = resolve_device(device)
    skip = list(modules_to_not_convert) if modules_to_not_convert else None

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if isinstance(calib_data, str) and calib_data == "self":
        from pagedawq.quant.calibrate.self_text import generate_calibration_texts

        texts = generate_calibration_texts(model_dir, n_samples * seq_len, seq_len, device=dev.type)
    else:
        texts = read_calibration_texts(calib_data)
    blocks = calibration_blocks(texts, tokenizer, n_samples, seq_len)
    logger.info("calibrating %s on %d x %d tokens (w%d g%d, device %s)", model_dir, n_samples, seq_len,
                w_bit, group_size, dev)

    # fp16 is what the checkpoint holds and halves device memory; CPUs compute fp16 slowly.
    hf_model = load_model(model_dir, torch.float16 if dev.type == "cuda" else torch.float32)
    options = CalibrationOptions(WeightQuant(w_bit, group_size, zero_point), duo_scaling, clip, tuple(skip or ()))
    tensors = calibrate_model(hf_model, blocks, groups, options, dev)
    config = checkpoint_config(source_config, awq_quantization_config(w_bit, group_size, zero_point, skip))
    path = write_checkpoint(output_dir, tensors, config, model_dir, overwrite=overwrite)
    logger.info("AWQ done in %.1f s", time.perf_counter() - started)
    return path
