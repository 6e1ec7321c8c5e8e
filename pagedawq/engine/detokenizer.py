"""Incremental detokenization and stop strings.

Decoding a growing id list from scratch every step is quadratic; instead each new token is
decoded together with a few preceding ones (so multi-byte characters and leading spaces come out
right) and only the new characters are appended.
"""
from __future__ import annotations

_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    def __init__(self, tokenizer, prompt_token_ids: list[int], skip_special_tokens: bool,
                 stop: list[str], include_stop_str_in_output: bool) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.stop = stop
        self.include_stop = include_stop_str_in_output
        self.ids = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.text = ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add_token(self, token_id: int, check_stop: bool) -> str | None:
        """Append one token's text; returns the stop string that matched (text is then cut), if any."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        full = self._decode(self.ids[self.prefix_offset:])
        if len(full) <= len(prefix) or full.endswith("\ufffd"):
            return None   # an incomplete UTF-8 sequence: wait for the next token
        delta = full[len(prefix):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        before = len(self.text)
        self.text += delta
        if not check_stop or not self.stop:
            return None
        return self._find_stop(before, len(delta))

    def _find_stop(self, before: int, delta_len: int) -> str | None:
        for stop in self.stop:
            start = max(0, before - len(stop) + 1)
            idx = self.text.find(stop, start)
            if idx != -1:
                self.text = self.text[: idx + len(stop)] if self.include_stop else self.text[:idx]
                return stop
        return None
