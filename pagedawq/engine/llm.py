"""``LLM``: the offline API (vLLM's), a thin loop over :class:`LLMEngine`."""
from __future__ import annotations

import logging
import weakref
from typing import Any, Sequence

from tqdm.auto import tqdm

from pagedawq.engine.llm_engine import LLMEngine, PromptType
from pagedawq.errors import InvalidPromptError, InvalidSamplingParamsError
from pagedawq.outputs import RequestOutput
from pagedawq.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


def _shutdown(engine: LLMEngine) -> None:
    engine.shutdown()


class LLM:
    """Generate text from a model: ``LLM(model).generate(prompts, SamplingParams(...))``.

    ``model``: ``None`` or ``"smollm2-135m-instruct"`` for the default model, a local HF directory
    (config.json + safetensors + tokenizer) or a ``.gguf`` file. Other arguments as in vLLM.
    """

    def __init__(self, model: str | None = None, *, tokenizer: str | None = None, quantization: str | None = None,
                 dtype: str = "auto", device: str = "auto", tensor_parallel_size: int = 1,
                 max_model_len: int | None = None, max_num_seqs: int = 256, max_num_batched_tokens: int | None = None,
                 block_size: int = 16, gpu_memory_utilization: float = 0.9, kv_cache_memory_bytes: int | None = None,
                 enable_prefix_caching: bool = True, load_format: str = "auto", skip_tokenizer_init: bool = False,
                 seed: int = 0, enforce_eager: bool = False, distributed_executor_backend: str | None = None,
                 attention_backend: str | None = None, async_scheduling: bool | None = None,
                 tune_kernels: bool = False) -> None:
        self.llm_engine = LLMEngine.from_args(
            model, tokenizer=tokenizer, quantization=quantization, dtype=dtype, device=device,
            tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens, block_size=block_size,
            gpu_memory_utilization=gpu_memory_utilization, kv_cache_memory_bytes=kv_cache_memory_bytes,
            enable_prefix_caching=enable_prefix_caching, load_format=load_format,
            skip_tokenizer_init=skip_tokenizer_init, seed=seed, enforce_eager=enforce_eager,
            distributed_executor_backend=distributed_executor_backend, attention_backend=attention_backend,
            async_scheduling=async_scheduling, tune_kernels=tune_kernels)
        self._finalizer = weakref.finalize(self, _shutdown, self.llm_engine)

    def get_tokenizer(self):
        return self.llm_engine.tokenizer

    def close(self) -> None:
        """Release the workers and their devices (also done when the object is collected)."""
        self._finalizer()

    def start_profile(self) -> None:
        """Profile every rank (torch.profiler) until :meth:`stop_profile`."""
        self.llm_engine.start_profile()

    def stop_profile(self, trace_dir: str | None = None) -> list[dict]:
        """Per-rank summaries (``device_time_us``, ``table``); Chrome traces into ``trace_dir``."""
        return self.llm_engine.stop_profile(trace_dir)

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def generate(self, prompts: PromptType | Sequence[PromptType],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """Generate for every prompt; outputs come back in input order. Every prompt and parameter
        set is validated before any request starts, so a bad one leaves the engine untouched."""
        if isinstance(prompts, (str, dict)) or (isinstance(prompts, list) and prompts
                                                and all(isinstance(t, int) for t in prompts)):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise InvalidPromptError("generate() got no prompts")
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = [sampling_params] * len(prompts) if isinstance(sampling_params, SamplingParams) else list(sampling_params)
        if len(params) != len(prompts):
            raise InvalidSamplingParamsError(f"got {len(params)} SamplingParams for {len(prompts)} prompts")
        engine = self.llm_engine
        processed = []
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            try:
                processed.append((*engine.process_prompt(prompt), engine.prepare_params(p)))
            except (InvalidPromptError, InvalidSamplingParamsError) as e:
                raise type(e)(f"prompt {i}: {e}") from e
        ids = [engine.new_request_id() for _ in processed]
        for rid, (text, token_ids, p) in zip(ids, processed):
            engine.add_processed_request(rid, text, token_ids, p)
        return self._run(ids, use_tqdm)

    def chat(self, messages, sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
             use_tqdm: bool = True, add_generation_prompt: bool = True,
             chat_template_kwargs: dict[str, Any] | None = None) -> list[RequestOutput]:
        """Apply the tokenizer's chat template to one conversation (a list of ``{"role", "content"}``)
        or a list of conversations, then generate."""
        tokenizer = self.get_tokenizer()
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise InvalidPromptError("chat() needs a tokenizer with a chat template")
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        prompts = []
        for conv in conversations:
            if not all(isinstance(m, dict) and "role" in m and "content" in m for m in conv):
                raise InvalidPromptError("each chat message must be a dict with 'role' and 'content'")
            ids = tokenizer.apply_chat_template(conv, tokenize=True, add_generation_prompt=add_generation_prompt,
                                                **(chat_template_kwargs or {}))
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
            prompts.append({"prompt_token_ids": list(ids),
                            "prompt": tokenizer.decode(ids, skip_special_tokens=False)})
        return self.generate(prompts, sampling_params, use_tqdm)

    def _run(self, request_ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        engine = self.llm_engine
        wanted = set(request_ids)
        finished: dict[str, RequestOutput] = {}
        bar = tqdm(total=len(request_ids), desc="Processed prompts", disable=not use_tqdm)
        try:
            while len(finished) < len(request_ids):
                for out in engine.step():
                    if out.finished and out.request_id in wanted:
                        finished[out.request_id] = out
                        bar.update(1)
        except BaseException:
            engine.abort_request([rid for rid in request_ids if rid not in finished])
            raise
        finally:
            bar.close()
        return [finished[rid] for rid in request_ids]
