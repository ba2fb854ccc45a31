"""In-process vLLM engine (GPU only, optional extra). Kept thin: vLLM does the batching and prefix caching."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deltarubric.rm.backends.base import Conversation, Generation, ThreadedBackend, TokenLogprob, to_chat_dicts
from deltarubric.rm.config import SamplingConfig
from deltarubric.rm.media import pixel_limits, video_to_url
from deltarubric.rm.types import Usage


def to_vllm_messages(conv: Conversation) -> list[dict[str, Any]]:
    return to_chat_dicts(
        conv,
        lambda img: {"type": "image_pil", "image_pil": img},
        lambda v: {"type": "video_url", "video_url": {"url": video_to_url(v)}},
    )


def from_vllm_output(out: Any) -> Generation:
    """A vllm RequestOutput -> Generation (first completion only)."""
    completion = out.outputs[0]
    tokens = []
    for token_id, alternatives in zip(completion.token_ids, completion.logprobs or []):
        chosen = alternatives[token_id]
        top = {lp.decoded_token: lp.logprob for lp in alternatives.values()}
        tokens.append(TokenLogprob(chosen.decoded_token, chosen.logprob, top))
    return Generation(
        text=completion.text,
        tokens=tokens,
        usage=Usage(prompt_tokens=len(out.prompt_token_ids or []), completion_tokens=len(completion.token_ids)),
        finish_reason=completion.finish_reason or "stop",
    )


class VLLMBackend(ThreadedBackend):
    name = "vllm"
    supports_video = True

    def __init__(
        self,
        model: str,
        *,
        seed: int = 0,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        **engine_kwargs: Any,
    ) -> None:
        super().__init__()
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError(
                "backend 'vllm' needs vLLM on a GPU machine: pip install 'deltarubric[vllm]' in its own environment "
                "(see docs/backends.md), or serve the model with `vllm serve` and use --backend openai"
            ) from e
        mm = pixel_limits(min_pixels, max_pixels)
        engine_kwargs.setdefault("limit_mm_per_prompt", {"image": 4, "video": 2})
        engine_kwargs.setdefault("enable_prefix_caching", True)  # the verifier stage reuses the planner's prefix
        self.llm = LLM(model=model, seed=seed, mm_processor_kwargs=mm or None, **engine_kwargs)

    def generate_blocking(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
            logprobs=sampling.top_logprobs or None,
        )
        outputs = self.llm.chat([to_vllm_messages(c) for c in conversations], params, use_tqdm=False)
        return [from_vllm_output(o) for o in outputs]
