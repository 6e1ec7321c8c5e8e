"""Calibration data: text from a file or a list, cut into ``n_samples`` blocks of ``seq_len`` tokens.

AWQ only needs activation statistics, so the text is treated as one token stream: documents are
tokenized, joined with a blank line, and the stream is cut into non-overlapping blocks. When the
stream holds more blocks than needed, evenly spaced ones are kept so that the statistics cover the
whole corpus rather than its first pages (deterministic, no seed to carry around).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from pagedawq.quant.calibrate.errors import CalibrationDataError

_DOC_SEPARATOR = "\n\n"


def read_calibration_texts(source: str | os.PathLike | Sequence[str]) -> list[str]:
    """Documents from a ``.txt`` file (one document), a ``.jsonl`` file (field ``"text"``) or a list."""
    if isinstance(source, (str, os.PathLike)):
        return _read_file(Path(source))
    texts = list(source)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise CalibrationDataError("calib_data as a list must be a non-empty list of strings")
    return texts


def _read_file(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} does not exist; pass a .txt/.jsonl path, "
                                "a list of strings, or 'self'")
    if path.suffix == ".txt":
        return [path.read_text(encoding="utf-8-sig")]  # utf-8-sig drops a leading BOM
    if path.suffix == ".jsonl":
        texts = []
        with path.open(encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record: Any = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CalibrationDataError(f"{path}:{lineno} is not valid JSON ({e.msg})") from e
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise CalibrationDataError(f"{path}:{lineno} has no string field \"text\"")
                texts.append(record["text"])
        return texts
    raise CalibrationDataError(f"calibration file {path} must end in .txt or .jsonl")


def token_stream(texts: Sequence[str], tokenizer) -> list[int]:
    """Token ids of all documents, joined by the ids of a blank line.

    Documents are tokenized line by line (lines keep their newline) so that a whole book does not
    go through the tokenizer as one sequence; BPE pre-tokenization splits at newlines anyway.
    """
    separator = tokenizer(_DOC_SEPARATOR, add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    for i, text in enumerate(texts):
        if i:
            ids.extend(separator)
        lines = text.splitlines(keepends=True)
        if lines:
            for line_ids in tokenizer(lines, add_special_tokens=False)["input_ids"]:
                ids.extend(line_ids)
    return ids


def calibration_blocks(texts: Sequence[str], tokenizer, n_samples: int, seq_len: int) -> torch.Tensor:
    """``[n_samples, seq_len]`` int64 token blocks taken evenly from the joined token stream."""
    if n_samples < 1 or seq_len < 2:
        raise CalibrationDataError(f"need n_samples >= 1 and seq_len >= 2, got {n_samples} and {seq_len}")
    ids = token_stream(texts, tokenizer)
    needed = n_samples * seq_len
    if len(ids) < needed:
        raise CalibrationDataError(
            f"calibration text has {len(ids)} tokens but n_samples x seq_len = {n_samples} x {seq_len} "
            f"= {needed} are needed: pass more text, or lower n_samples / seq_len")
    stream = torch.tensor(ids[: (len(ids) // seq_len) * seq_len], dtype=torch.int64).view(-1, seq_len)
    keep = torch.linspace(0, stream.shape[0] - 1, n_samples).round().long()
    return stream[keep].contiguous()
