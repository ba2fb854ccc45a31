"""The tiny offline Qwen3-VL checkpoint (rm.tiny) and the torchvision-free processor loader (rm.hf_compat).

Random weights produce gibberish, so these tests check files, ids, shapes and wiring, never generated text.
"""

from __future__ import annotations

import hashlib
import socket

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoTokenizer
from transformers.utils import is_torchvision_available

from deltarubric.rm.hf_compat import expose_video_processor_base, load_processor, video_supported
from deltarubric.rm.tiny import SPECIAL_TOKENS, make_tiny_model

EXPECTED_FILES = {
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="module")
def model(ckpt):
    return AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32).eval()


@pytest.fixture
def processor(ckpt):
    # Function-scoped: tests change tokenizer settings such as padding_side.
    return load_processor(ckpt)


def _image(width: int, height: int, color: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", (width, height), color)
    img.paste((255 - color[0], 255 - color[1], 255 - color[2]), (0, 0, width // 2, height // 2))
    return img


def _user_turn(image: Image.Image, text: str) -> dict:
    return {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_has_expected_files(ckpt):
    assert {p.name for p in ckpt.iterdir()} == EXPECTED_FILES


def test_loads_offline_without_network(ckpt, monkeypatch):
    # HF_HUB_OFFLINE is read once at import, so patch the constant as well as the environment.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise AssertionError("loading the tiny checkpoint tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)

    model = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    processor = load_processor(ckpt)

    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert model.dtype == torch.float32
    assert model.config.text_config.vocab_size == len(tokenizer)
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert processor.image_processor.patch_size == model.config.vision_config.patch_size == 16
    assert processor.chat_template == (ckpt / "chat_template.jinja").read_text()


def test_special_tokens_have_documented_ids(ckpt):
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert tokenizer.convert_tokens_to_ids(token) == expected_id, token
        assert token in tokenizer.all_special_tokens, token
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.bos_token is None
    for token in ("<think>", "</think>", "<tool_call>", "</tool_call>"):
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert ids == [tokenizer.convert_tokens_to_ids(token)], token
        assert ids[0] >= len(SPECIAL_TOKENS), token


def test_judge_strings_round_trip(ckpt):
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    text = 'Winner: [[A]]\nFavors: Neither <answer>B</answer> Score: 7/10 {"winner": "A"} déjà vu 🐱'
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    # The corpus makes verdict words single tokens rather than byte soup.
    assert len(tokenizer.tokenize(" Winner")) == 1


def test_rebuild_is_byte_identical(ckpt, tmp_path):
    rebuilt = make_tiny_model(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _sha256(rebuilt / name) == _sha256(ckpt / name), name
    other_seed = make_tiny_model(tmp_path / "seed1", seed=1)
    assert _sha256(other_seed / "model.safetensors") != _sha256(ckpt / "model.safetensors")


def test_single_image_generate_shapes(model, processor):
    conversation = [_user_turn(_image(96, 64, (200, 30, 30)), "Which response is better? Answer [[A]] or [[B]].")]
    inputs = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    # 96x64 -> resized to 96x64 (multiples of 32) -> 6x4 patches of 16 -> 24 patches -> 6 tokens after 2x2 merge.
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 6]]
    assert tuple(inputs["pixel_values"].shape) == (24, 3 * 2 * 16 * 16)
    image_token_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((inputs["input_ids"] == image_token_id).sum()) == 6

    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    prompt_len = inputs["input_ids"].shape[1]
    assert out.shape[0] == 1
    assert prompt_len < out.shape[1] <= prompt_len + 8
    assert torch.equal(out[0, :prompt_len], inputs["input_ids"][0])
    assert isinstance(processor.decode(out[0, prompt_len:], skip_special_tokens=True), str)


def test_batched_left_padding_matches_per_item(model, processor):
    conversations = [
        [_user_turn(_image(64, 64, (10, 200, 10)), "Is the cat on the left? yes or no")],
        [_user_turn(_image(200, 120, (10, 10, 200)), "Count the red shapes. Score: 7/10? Winner: [[B]]")],
    ]
    processor.tokenizer.padding_side = "left"
    batch = processor.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"padding": True},
    )
    assert batch["input_ids"].shape[0] == 2
    assert batch["image_grid_thw"].shape == (2, 3)
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert lengths[0] != lengths[1]
    # Left padding: every row ends with real tokens, the shorter one starts with pads.
    assert batch["attention_mask"][:, -1].tolist() == [1, 1]
    assert batch["attention_mask"][lengths.index(min(lengths)), 0].item() == 0

    with torch.no_grad():
        batched = model.generate(**batch, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    new_batched = batched[:, batch["input_ids"].shape[1] :]
    assert new_batched.shape == (2, 8)

    for row, conversation in enumerate(conversations):
        single = processor.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        assert single["input_ids"].shape[1] == lengths[row]
        with torch.no_grad():
            alone = model.generate(**single, max_new_tokens=8, do_sample=False, min_new_tokens=8)
        assert new_batched[row].tolist() == alone[0, single["input_ids"].shape[1] :].tolist(), row


def test_two_turn_conversation_renders_assistant_turn(processor):
    conversation = [
        _user_turn(_image(96, 64, (0, 0, 0)), "Describe the image."),
        {"role": "assistant", "content": [{"type": "text", "text": "A red cat on the left."}]},
        {"role": "user", "content": "Now judge: Winner: [[A]] or [[B]]?"},
    ]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe the image.<|im_end|>\n"
        "<|im_start|>assistant\nA red cat on the left.<|im_end|>\n"
        "<|im_start|>user\nNow judge: Winner: [[A]] or [[B]]?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    inputs = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert inputs["image_grid_thw"].shape == (1, 3)


def test_chat_template_string_content_and_vision_ids(processor):
    conversation = [
        {"role": "system", "content": "You are a judge."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": "unused"},
                {"type": "video", "video": "unused"},
                {"type": "text", "text": "Compare."},
            ],
        },
    ]
    text = processor.apply_chat_template(conversation, tokenize=False, add_vision_id=True)
    assert text == (
        "<|im_start|>system\nYou are a judge.<|im_end|>\n"
        "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>"
        "Video 1: <|vision_start|><|video_pad|><|vision_end|>Compare.<|im_end|>\n"
    )


def test_load_processor_patch_is_idempotent(ckpt):
    first = load_processor(ckpt)
    second = load_processor(ckpt)
    expose_video_processor_base()
    assert type(first) is type(second)
    assert first.tokenizer.get_vocab() == second.tokenizer.get_vocab()
    if not is_torchvision_available():
        from transformers import processing_utils
        from transformers.video_processing_utils import VideoProcessorMixin

        assert processing_utils.transformers_module.VideoProcessorMixin is VideoProcessorMixin


def test_video_supported_matches_torchvision():
    assert video_supported() is is_torchvision_available()


@pytest.mark.skipif(is_torchvision_available(), reason="video processing works when torchvision is installed")
def test_video_input_raises_without_torchvision(processor):
    frames = np.zeros((4, 64, 64, 3), dtype=np.uint8)
    with pytest.raises(Exception):
        processor(
            text=["<|vision_start|><|video_pad|><|vision_end|>Describe the video."],
            videos=[frames],
            return_tensors="pt",
        )
