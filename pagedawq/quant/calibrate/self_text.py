"""``calib_data="self"``: the model writes its own calibration text.

Sampling at temperature 1 from a handful of generic openings yields text from the model's own
distribution, so the activation statistics match what it sees at inference without any corpus
(the idea behind data-free calibration). The engine is imported lazily: the rest of the
quantization package works without it.
"""
from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

OPENINGS = (
    "The",
    "In the beginning,",
    "Here is a short story:",
    "The history of",
    "Scientists have discovered that",
    "Dear friend,",
    "How to",
    "Chapter 1\n\n",
    "The following article explains",
    "Once upon a time,",
    "def main():",
    "Question:",
)
_MAX_ROUNDS = 4


def generate_calibration_texts(model_dir: str | Path, n_tokens: int, seq_len: int, *,
                               device: str = "cpu", seed: int = 0) -> list[str]:
    """Sample documents (opening + continuation) until they hold about ``n_tokens`` tokens.

    Each request asks for ``seq_len`` new tokens with its own sampling seed, so documents that
    share an opening still differ. Requests that stop early at EOS are made up for in further
    rounds (at most a few, after which the caller's length check reports the shortfall).
    """
    from pagedawq import LLM, SamplingParams  # lazy: the engine is optional for quantization

    texts: list[str] = []
    produced = 0
    with LLM(str(model_dir), dtype="float32" if device == "cpu" else "float16", device=device) as llm:
        for round_ in range(_MAX_ROUNDS):
            first, count = len(texts), -(-(n_tokens - produced) // seq_len)
            prompts = [OPENINGS[i % len(OPENINGS)] for i in range(first, first + count)]
            params = [SamplingParams(temperature=1.0, top_p=1.0, max_tokens=seq_len, seed=seed + i,
                                     ignore_eos=False) for i in range(first, first + count)]
            for prompt, result in zip(prompts, llm.generate(prompts, params)):
                completion = result.outputs[0]
                texts.append(prompt + completion.text)
                produced += len(completion.token_ids)
            logger.info("self-calibration round %d: %d documents, %d generated tokens",
                        round_ + 1, len(texts), produced)
            if produced >= n_tokens:
                break
    return texts
