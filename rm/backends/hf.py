"""Local Hugging Face `transformers` backend: true batched generation with left padding, CPU or GPU."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoModelForImageTextToText
from transformers.utils import is_torchvision_available

from rm.backends.base import Conversation, Generation, ThreadedBackend, TokenLogprob, to_chat_dicts
from rm.config import SamplingConfig
from rm.hf_compat import load_processor
from rm.types import Usage

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _to_hf(conv: Conversation) -> list[dict[str, Any]]:
    return to_chat_dicts(conv, lambda img: {"type": "image", "image": img}, lambda v: {"type": "video", "video": v})


class TransformersBackend(ThreadedBackend):
    name = "transformers"

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ) -> None:
        super().__init__()
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        torch_dtype = _DTYPES.get(dtype) or (torch.bfloat16 if self.device.startswith("cuda") else torch.float32)
        self.processor = load_processor(model)
        self.processor.tokenizer.padding_side = "left"  # generation continues from the right edge of every row
        if min_pixels or max_pixels:
            size = dict(self.processor.image_processor.size)
            size.update({k: v for k, v in (("shortest_edge", min_pixels), ("longest_edge", max_pixels)) if v})
            self.processor.image_processor.size = size
        self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=torch_dtype).to(self.device).eval()
        self.batch_size = batch_size
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.supports_video = is_torchvision_available()

    def generate_blocking(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        out: list[Generation] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            try:
                out.extend(self._generate_batch(chunk, sampling))
            except Exception:  # one bad conversation must not sink its batch-mates: retry them one by one
                out.extend(self._generate_alone(conv, sampling) for conv in chunk)
        return out

    def _generate_alone(self, conv: Conversation, sampling: SamplingConfig) -> Generation:
        try:
            return self._generate_batch([conv], sampling)[0]
        except Exception as e:  # recorded on this item's verdict; the server and eval runs keep going
            log.warning("generation failed: %s: %s", type(e).__name__, e)
            return Generation(error=f"{type(e).__name__}: {e}")

    @torch.inference_mode()
    def _generate_batch(self, chunk: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        inputs = self.processor.apply_chat_template(
            [_to_hf(c) for c in chunk],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        ).to(self.device)
        greedy = sampling.temperature == 0
        if not greedy:
            torch.manual_seed(sampling.seed)
        gen = self.model.generate(
            **inputs,
            max_new_tokens=sampling.max_tokens,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None,
            output_logits=sampling.top_logprobs > 0,
            return_dict_in_generate=True,
        )
        prompt_len = inputs["input_ids"].shape[1]
        new_tokens = gen.sequences[:, prompt_len:].tolist()
        # Raw (unprocessed) logits give the model's own distribution, as vLLM reports logprobs.
        logprobs = torch.stack(gen.logits, dim=1).float().log_softmax(-1) if sampling.top_logprobs > 0 else None
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        tok = self.processor.tokenizer
        results = []
        for row, ids in enumerate(new_tokens):
            n = next((i + 1 for i, t in enumerate(ids) if t in self.eos_ids), len(ids))
            ids = ids[:n]
            tokens = []
            if logprobs is not None:
                top_lp, top_ids = logprobs[row, :n].topk(sampling.top_logprobs, dim=-1)
                for i, t in enumerate(ids):
                    top = {tok.decode([a]): b for a, b in zip(top_ids[i].tolist(), top_lp[i].tolist())}
                    tokens.append(TokenLogprob(tok.decode([t]), logprobs[row, i, t].item(), top))
            results.append(
                Generation(
                    text=tok.decode(ids, skip_special_tokens=True),
                    tokens=tokens,
                    usage=Usage(prompt_tokens=int(prompt_tokens[row]), completion_tokens=n),
                    finish_reason="stop" if ids and ids[-1] in self.eos_ids else "length",
                )
            )
        return results
