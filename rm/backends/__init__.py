"""Backends: `openai` (any OpenAI-compatible server), `vllm` (in-process, GPU), `transformers` (local, CPU or GPU)."""

from __future__ import annotations

from deltarubric.rm.backends.base import (
    Backend,
    Conversation,
    Generation,
    ImagePart,
    Message,
    TextPart,
    TokenLogprob,
    VideoPart,
)
from deltarubric.rm.config import JudgeConfig

__all__ = [
    "Backend",
    "Conversation",
    "Generation",
    "ImagePart",
    "Message",
    "TextPart",
    "TokenLogprob",
    "VideoPart",
    "make_backend",
]


def make_backend(config: JudgeConfig) -> Backend:
    """Build the configured backend. Engines are imported only here, so `import rm` stays light."""
    compute = config.compute
    if compute.backend == "openai":
        from deltarubric.rm.backends.openai_api import OpenAIBackend

        return OpenAIBackend(
            config.model,
            compute.base_urls,
            api_key=compute.api_key,
            concurrency=compute.concurrency,
            timeout_s=compute.timeout_s,
            max_retries=compute.max_retries,
            min_pixels=config.min_pixels,
            max_pixels=config.max_pixels,
        )
    if compute.backend == "vllm":
        from deltarubric.rm.backends.vllm_engine import VLLMBackend

        return VLLMBackend(
            config.model,
            seed=config.sampling.seed,
            min_pixels=config.min_pixels,
            max_pixels=config.max_pixels,
            **compute.vllm_kwargs,
        )
    from deltarubric.rm.backends.hf import TransformersBackend

    return TransformersBackend(
        config.model,
        device=compute.device,
        dtype=config.dtype,
        batch_size=compute.batch_size,
        min_pixels=config.min_pixels,
        max_pixels=config.max_pixels,
    )
