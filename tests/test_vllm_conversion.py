"""The vLLM backend's conversions, on objects shaped like vLLM's outputs. The engine itself needs a GPU."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace as NS

import pytest
from PIL import Image

from deltarubric.rm.backends.base import ImagePart, Message, TextPart
from deltarubric.rm.backends.vllm_engine import VLLMBackend, from_vllm_output, to_vllm_messages


def test_messages_carry_pil_images_in_place():
    img = Image.new("RGB", (32, 32))
    conv = [Message.text("system", "s"), Message("user", (ImagePart(img), TextPart("q")))]
    msgs = to_vllm_messages(conv)
    assert msgs[0] == {"role": "system", "content": [{"type": "text", "text": "s"}]}
    assert msgs[1]["content"][0] == {"type": "image_pil", "image_pil": img}


def test_request_output_to_generation():
    lp = lambda tok, val: NS(decoded_token=tok, logprob=val)  # noqa: E731
    completion = NS(
        text="[[A]]",
        token_ids=[7, 3, 8],
        logprobs=[{7: lp("[[", -0.1)}, {3: lp("A", -0.2), 4: lp("B", -1.8)}, {8: lp("]]", -0.01)}],
        finish_reason="stop",
    )
    gen = from_vllm_output(NS(outputs=[completion], prompt_token_ids=list(range(40))))
    assert gen.text == "[[A]]" and [t.token for t in gen.tokens] == ["[[", "A", "]]"]
    assert gen.tokens[1].top == {"A": -0.2, "B": -1.8}
    assert (gen.usage.prompt_tokens, gen.usage.completion_tokens) == (40, 3)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm installed")
def test_missing_vllm_says_how_to_get_it():
    with pytest.raises(ImportError, match="--backend openai"):
        VLLMBackend("any/model")
