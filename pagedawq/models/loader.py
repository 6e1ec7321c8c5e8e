"""Build a native model on its device and fill its weights: safetensors (sharded or not) or
random "dummy" weights of the right shapes for benchmarking without files."""
from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from pagedawq.config import ModelConfig
from pagedawq.distributed.parallel_state import get_tp_size
from pagedawq.errors import InsufficientMemoryError, ModelFilesError
from pagedawq.models.registry import get_model_class

logger = logging.getLogger(__name__)


def safetensors_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise ModelFilesError(f"cannot read {index}: {e}") from e
        files = [path / n for n in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelFilesError(f"{path} is missing weight shards listed in its index: {missing}")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelFilesError(f"no *.safetensors weights in {path} (use load_format='dummy' for random weights)")
    return files


def iterate_safetensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open
    for file in tqdm(files, desc="Loading weights", disable=len(files) < 2):
        try:
            with safe_open(str(file), framework="pt") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)
        except ModelFilesError:
            raise
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
            raise ModelFilesError(f"cannot read weights from {file}: {e}") from e


def fill_dummy_weights(model: nn.Module, seed: int) -> None:
    """Random weights, drawn on the parameters' device (a 7B model fills in a second on a GPU):
    floats uniform in ±1e-3 so activations stay finite, norms at 1, int4 codes uniform, small
    positive AWQ scales."""
    generators: dict[torch.device, torch.Generator] = {}
    for name, param in model.named_parameters():
        gen = generators.get(param.device)
        if gen is None:
            gen = generators[param.device] = torch.Generator(device=param.device)
            gen.manual_seed(seed)
        data = param.data
        if data.dtype == torch.int32:
            data.random_(-2**31, 2**31 - 1, generator=gen)
        elif name.endswith("norm.weight"):
            data.fill_(1.0)
        elif name.endswith("scales"):
            data.uniform_(1e-4, 1.1e-3, generator=gen)
        else:
            data.uniform_(-1e-3, 1e-3, generator=gen)


def weight_bytes(model: nn.Module) -> int:
    """The bytes of a model's parameters and buffers (each shared tensor once)."""
    return sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))


def check_weights_fit(cls: type[nn.Module], config: ModelConfig, device: torch.device) -> None:
    """Refuse, before anything is allocated, weights (this rank's shard) larger than the GPU's free
    memory: building the model would otherwise stop with an out-of-memory error from inside some
    layer's constructor. The model is built on the meta device to count them."""
    with torch.device("meta"):
        need = weight_bytes(cls(config.hf_config, config.quant_config, config.dtype))
    free, total = torch.cuda.mem_get_info(device)
    if need > free:
        tp = get_tp_size()
        raise InsufficientMemoryError(
            f"the model's weights take {need / 2**30:.1f} GiB{' a rank' if tp > 1 else ''} in {config.dtype}, "
            f"but {device} has {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB: use an AWQ checkpoint "
            f"(quantization='awq'), a tensor_parallel_size larger than {tp}, or a GPU with more free memory")


def load_model(config: ModelConfig, device: str) -> nn.Module:
    """Instantiate the model directly on ``device`` (on a GPU, once its weights are known to fit)
    and load its weights."""
    cls = get_model_class(config.architecture)
    if torch.device(device).type == "cuda":
        check_weights_fit(cls, config, torch.device(device))
    with torch.device(device):
        model = cls(config.hf_config, config.quant_config, config.dtype)
    if config.load_format == "dummy":
        fill_dummy_weights(model, config.seed)
    else:
        loaded = model.load_weights(iterate_safetensors(safetensors_files(config.path)))
        expected = {n for n, _ in model.named_parameters(remove_duplicate=False)}
        missing = sorted(expected - loaded)
        if missing:
            raise ModelFilesError(f"checkpoint {config.path} lacks {len(missing)} tensors the model needs, "
                                  f"e.g. {missing[:3]} (is quantization={config.quant_config and config.quant_config.name!r} right?)")
    for module in model.modules():
        method = getattr(module, "linear_method", None)
        if method is not None:
            method.process_weights_after_loading(module)
    return model.eval()
