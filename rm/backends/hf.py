"""Local Hugging Face `transformers` backend: true batched generation with left padding, CPU or GPU."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, StoppingCriteria, StoppingCriteriaList

from deltarubric.rm.backends.base import Conversation, Generation, ThreadedBackend, TokenLogprob, to_chat_dicts
from deltarubric.rm.config import SamplingConfig
from deltarubric.rm.hf_compat import check_model_name, load_processor, video_supported
from deltarubric.rm.types import Usage

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class _Cancelled(StoppingCriteria):
    """Stops generate() at the next token once the call is cancelled (its request timed out)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


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
        check_model_name(model)
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
        self.supports_video = video_supported()

    @classmethod
    def from_model(cls, model: Any, processor: Any, *, batch_size: int = 8) -> TransformersBackend:
        """A backend over a model already in memory (e.g. one being trained), sharing its weights."""
        self = cls.__new__(cls)
        ThreadedBackend.__init__(self)
        self.device, self.model, self.processor, self.batch_size = str(model.device), model, processor, batch_size
        self.processor.tokenizer.padding_side = "left"
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.supports_video = video_supported()
        return self

    @torch.inference_mode()
    def generate_blocking(self, chunk: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
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
            stopping_criteria=StoppingCriteriaList([_Cancelled(self.cancelled)]),
        )
        prompt_len = inputs["input_ids"].shape[1]
        new_tokens = gen.sequences[:, prompt_len:]
        top = self._top_logprobs(gen.logits, new_tokens, sampling.top_logprobs) if sampling.top_logprobs else None
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        tok = self.processor.tokenizer
        results = []
        for row, ids in enumerate(new_tokens.tolist()):
            n = next((i + 1 for i, t in enumerate(ids) if t in self.eos_ids), len(ids))
            ids = ids[:n]
            tokens = []
            if top is not None:
                chosen, values, alt_ids = top[0][row].tolist(), top[1][row].tolist(), top[2][row].tolist()
                for i, t in enumerate(ids):
                    alternatives = {tok.decode([a]): v for a, v in zip(alt_ids[i], values[i])}
                    tokens.append(TokenLogprob(tok.decode([t]), chosen[i], alternatives))
            results.append(
                Generation(
                    text=tok.decode(ids, skip_special_tokens=True),
                    tokens=tokens,
                    usage=Usage(prompt_tokens=int(prompt_tokens[row]), completion_tokens=n),
                    finish_reason="stop" if ids and ids[-1] in self.eos_ids else "length",
                )
            )
        return results

    @staticmethod
    def _top_logprobs(
        logits: tuple[torch.Tensor, ...], tokens: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(chosen-token logprob, top-k logprobs, top-k ids), each (batch, steps[, k]).

        Step by step, so memory stays at one (batch, vocab) row in fp32 rather than the whole (batch, steps, vocab)
        cube, which is gigabytes with Qwen's 152k vocabulary. Raw logits give the model's own distribution, as vLLM
        reports logprobs.
        """
        chosen, values, ids = [], [], []
        for step, step_logits in enumerate(logits):
            lp = step_logits.float().log_softmax(-1)
            chosen.append(lp.gather(1, tokens[:, step : step + 1]).squeeze(1))
            v, i = lp.topk(k, dim=-1)
            values.append(v)
            ids.append(i)
        return torch.stack(chosen, 1).cpu(), torch.stack(values, 1).cpu(), torch.stack(ids, 1).cpu()
