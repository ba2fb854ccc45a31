"""A tiny random-weight Qwen3-VL checkpoint, built offline for tests.

The model hubs are unreachable from CI, so tests cannot download a tiny model the way TRL's do. This module builds one
in a few seconds from nothing but the installed libraries: a locally trained byte-level BPE tokenizer with the Qwen
special tokens, a two-layer Qwen3-VL config, the Qwen3-VL instruct chat template and the matching image/video
processors. The weights are random, so generations are gibberish; tests should check shapes and plumbing only.
docs/tiny-model.md says what it holds and how to use it in a test suite.
"""

from __future__ import annotations

import json
import os
import pathlib
import random

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import GenerationConfig, Qwen2Tokenizer, Qwen3VLConfig, Qwen3VLForConditionalGeneration
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

from deltarubric.rm.hf_compat import expose_video_processor_base

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "make_tiny_model"]

# Same order as the tail of the real Qwen vocabulary, so relative layouts match; here they take ids 0..13.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Real Qwen3 vocabularies carry these as ordinary (non-special) added tokens; judges that think emit them.
_ADDED_TOKENS = ("<tool_call>", "</tool_call>", "<think>", "</think>")

# Qwen3-VL instruct layout without the tool branches. Assistant turns whose content is a list of text parts must
# render too, because conversations are continued with a new user turn after an assistant reply.
CHAT_TEMPLATE = """\
{%- set image_count = namespace(value=0) -%}
{%- set video_count = namespace(value=0) -%}
{%- for message in messages -%}
{{- '<|im_start|>' + message['role'] + '\\n' -}}
{%- if message['content'] is string -%}
{{- message['content'] -}}
{%- else -%}
{%- for part in message['content'] -%}
{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}
{%- set image_count.value = image_count.value + 1 -%}
{%- if add_vision_id -%}{{- 'Picture ' ~ image_count.value ~ ': ' -}}{%- endif -%}
{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
{%- elif part['type'] == 'video' or 'video' in part -%}
{%- set video_count.value = video_count.value + 1 -%}
{%- if add_vision_id -%}{{- 'Video ' ~ video_count.value ~ ': ' -}}{%- endif -%}
{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
{%- elif 'text' in part -%}
{{- part['text'] -}}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{{- '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{- '<|im_start|>assistant\\n' -}}
{%- endif -%}
"""

# Words and verdict strings a judge reads and writes, so they become single or few tokens.
_WORDS = (
    "image picture photo cat dog car tree house person man woman child one two three four five six seven eight "
    "nine ten left right top bottom middle red green blue yellow black white color shape count many few the a an "
    "is are was of in on with and or not this that which what how why response answer question better worse "
    "winner favors neither both tie checklist rubric criterion item yes no true false correct incorrect score "
    "judge reason because accurate helpful detail describes shows contains missing wrong image's"
).split()
_PHRASES = (
    "Winner: [[A]]",
    "Winner: [[B]]",
    "[[A]]",
    "[[B]]",
    "Favors: A",
    "Favors: B",
    "Favors: Neither",
    "<answer>A</answer>",
    "<answer>B</answer>",
    "Score: 7/10",
    "Score: 3/10",
    '{"winner": "A", "score": 8}',
    '{"item": 1, "met": true}',
    "1. yes\n2. no\n3. yes",
    "Response A:",
    "Response B:",
)


def make_tiny_model(
    out_dir: str | os.PathLike,
    seed: int = 0,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    corpus: list[str] | None = None,
    vocab_size: int = 1024,
    initializer_range: float = 0.2,
) -> pathlib.Path:
    """Write a tiny random-weight Qwen3-VL checkpoint into `out_dir` and return its path.

    The checkpoint loads offline with `AutoModelForImageTextToText`, `AutoTokenizer` and
    `deltarubric.rm.hf_compat.load_processor`. Building is deterministic: the same `seed` gives a byte-identical
    `model.safetensors`. `corpus` adds lines the tokenizer learns merges from (the training testbed passes its task
    text and rendered prompts, so they encode in few tokens); `hidden_size`/`num_layers` size the text model.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = _build_tokenizer(seed, corpus or [], vocab_size)
    config = _build_config(tokenizer, hidden_size, num_layers, initializer_range)
    # Seed inside a forked RNG so building a checkpoint does not reset the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config)
    model.generation_config = _build_generation_config(tokenizer)
    model.save_pretrained(out, safe_serialization=True)

    expose_video_processor_base()
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(**_vision_processing_kwargs()),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(**_vision_processing_kwargs(), fps=2, min_frames=2, max_frames=8),
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    return out


def _corpus(seed: int, n_lines: int = 3000) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        sentence = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
        if rng.random() < 0.4:
            sentence = f"{sentence.capitalize()}. {rng.choice(_PHRASES)}"
        if rng.random() < 0.2:
            sentence += f" {rng.randint(0, 100)}"
        lines.append(sentence)
    return lines


def _build_tokenizer(seed: int, extra: list[str], vocab_size: int) -> Qwen2Tokenizer:
    bpe = Tokenizer(models.BPE())
    # Train with the same normalizer and pre-tokenization that Qwen2Tokenizer rebuilds at load time, so the learned
    # merges fit how text is split in use.
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,  # an upper bound: a small corpus yields fewer merges
        special_tokens=list(SPECIAL_TOKENS),
        # All 256 byte symbols up front, so any text encodes without an unknown token.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(seed) + list(extra), trainer=trainer)

    trained = json.loads(bpe.to_str())["model"]
    tokenizer = Qwen2Tokenizer(
        vocab=trained["vocab"],
        merges=[tuple(m) for m in trained["merges"]],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")],
        model_max_length=4096,
    )
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in _ADDED_TOKENS])
    return tokenizer


def _build_config(tokenizer: Qwen2Tokenizer, hidden: int, layers: int, init: float) -> Qwen3VLConfig:
    ids = tokenizer.convert_tokens_to_ids
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // 16,
        "num_key_value_heads": max(1, hidden // 32),
        "head_dim": 16,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "tie_word_embeddings": True,
        # With the usual 0.02 a model this small emits one token forever; 0.2 gives varied text, which exercises
        # parsers and looks like output in demos.
        "initializer_range": init,
        "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": ids("<|endoftext|>"),
        "bos_token_id": None,
        # mrope_section must sum to head_dim / 2.
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
    }
    vision_config = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": hidden,  # must equal the text hidden size
        "num_position_embeddings": 64,  # an 8x8 learned grid; must be a perfect square
        "deepstack_visual_indexes": [0, 1],  # each index must be < depth
        "hidden_act": "gelu_pytorch_tanh",
        "initializer_range": init,
    }
    return Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )


def _build_generation_config(tokenizer: Qwen2Tokenizer) -> GenerationConfig:
    ids = tokenizer.convert_tokens_to_ids
    return GenerationConfig(
        eos_token_id=[ids("<|im_end|>"), ids("<|endoftext|>")],
        pad_token_id=ids("<|endoftext|>"),
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
    )


def _vision_processing_kwargs() -> dict[str, object]:
    # patch_size must match the vision tower (the processors default to 14); the small pixel range keeps images at
    # 1..64 tokens so tests stay fast.
    return {
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "size": {"shortest_edge": 32 * 32, "longest_edge": 256 * 256},
    }
