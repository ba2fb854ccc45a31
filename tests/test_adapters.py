"""Trainer adapters (rm/adapters) against a real HTTP server on loopback, and TRL's GRPOTrainer using one.

The server behind `reward_server_url` is the real reward server (app/) over a scripted judge: the candidate that
mentions "cat" wins; when both or neither do, the judge picks the one shown first, so after both orders the pair is a
tie (reward 0.5); a pair involving "???" gets no parsable verdict. Logprobs are off, so rewards come from the votes:
1.0, 0.5 or 0.0. A recording wrapper keeps every body posted to /v1/rewards and can answer 503.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from starlette.responses import Response

from deltarubric.app.routes import BODIES
from deltarubric.app.server import build_app
from deltarubric.app.settings import ServerSettings
from deltarubric.rm.adapters.client import RewardClient, RewardServerError
from deltarubric.rm.adapters.swift import JudgeORM
from deltarubric.rm.adapters.trl import AsyncJudgeReward, JudgeReward, make_judge_reward
from deltarubric.rm.adapters.verl import compute_score, compute_score_async
from deltarubric.rm.config import JudgeConfig
from deltarubric.rm.judge import Judge
from deltarubric.rm.media import image_to_data_url
from deltarubric.rm.retry import RetryPolicy
from deltarubric.rm.reward_protocol import RewardDetail, RewardItem, RewardsRequest, RewardsResponse
from tests.conftest import LoopbackServer, free_port
from tests.scripted import ScriptedBackend, all_text


def cat_judge(conv) -> str:
    text = all_text(conv)
    first = text.split("[Response A]\n", 1)[1].split("\n[End of Response A]", 1)[0]
    second = text.split("[Response B]\n", 1)[1].split("\n[End of Response B]", 1)[0]
    if "???" in (first, second):
        return "I cannot tell."
    return "Winner: [[B]]" if ("cat" in second.lower()) > ("cat" in first.lower()) else "Winner: [[A]]"


def reward_app() -> Any:
    config = JudgeConfig(model="scripted", judge="direct", sampling={"top_logprobs": 0})
    settings = ServerSettings(allowed_media_dirs=[Path(tempfile.gettempdir())])  # verl may send file paths
    return build_app(Judge(config, backend=ScriptedBackend(cat_judge)), settings)


class Recorder:
    """ASGI wrapper: records the JSON bodies posted to /v1/rewards; answers the next `fail_next` of them with 503."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.fail_next = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/rewards":
            return await self.app(scope, receive, send)
        self.attempts += 1
        if self.fail_next:
            self.fail_next -= 1
            return await Response(status_code=503, headers={"Retry-After": "0"})(scope, receive, send)
        chunks: list[bytes] = []

        async def recording_receive() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.bodies.append(json.loads(b"".join(chunks)))
            return message

        await self.app(scope, recording_receive, send)

    def reset(self) -> None:
        self.bodies.clear()
        self.attempts = self.fail_next = 0

    def items(self) -> list[dict[str, Any]]:
        return [item for body in self.bodies for item in body["items"]]


@pytest.fixture(scope="module")
def _stand_in() -> Iterator[tuple[LoopbackServer, Recorder]]:
    recorder = Recorder(reward_app())
    with LoopbackServer(recorder) as server:
        yield server, recorder


@pytest.fixture
def recorder(_stand_in: tuple[LoopbackServer, Recorder]) -> Recorder:
    _stand_in[1].reset()
    return _stand_in[1]


@pytest.fixture
def reward_server_url(_stand_in: tuple[LoopbackServer, Recorder], recorder: Recorder) -> str:
    return _stand_in[0].url


def picture(seed: int) -> Image.Image:
    return Image.new("RGB", (24, 16), (40 * seed % 256, 100, 200))


def decode(data_url: str) -> Image.Image:
    header, _, payload = data_url.partition(",")
    assert header == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(payload)))


def same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and a.convert("RGB").tobytes() == b.convert("RGB").tobytes()


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": list(parts)}]


def answer(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def run(reward: JudgeReward | AsyncJudgeReward, *args: Any, **kwargs: Any) -> list[float | None]:
    result = reward(*args, **kwargs)
    return asyncio.run(result) if asyncio.iscoroutine(result) else result


# ------------------------------------------------------------------------------------------------ TRL adapter


def test_trl_reward_pickles(reward_server_url: str) -> None:
    for asynchronous in (False, True):
        reward = make_judge_reward(reward_server_url, asynchronous=asynchronous, api_key="k")
        copy = pickle.loads(pickle.dumps(reward))
        assert type(copy) is type(reward) and copy.__name__ == "deltarubric_judge"
        assert run(copy, ["Q?"], ["a cat"], reference=["a dog"]) == [1.0]


@pytest.mark.parametrize("asynchronous", [False, True])
def test_trl_standard_prompts(reward_server_url: str, recorder: Recorder, asynchronous: bool) -> None:
    reward = make_judge_reward(reward_server_url, asynchronous=asynchronous)
    assert isinstance(reward, AsyncJudgeReward if asynchronous else JudgeReward)
    rewards = run(
        reward,
        prompts=["What animal?", "What animal?"],
        completions=["A cat.", "A dog."],
        completion_ids=[[1], [2]],
        reference=["a cat", "a cat"],
        trainer_state=None,
    )
    assert rewards == [0.5, 0.0]  # both mention a cat: a tie; a dog against a cat loses
    assert recorder.bodies[0]["mode"] == "reference" and recorder.bodies[0]["group_scoring"] == "win_rate"
    assert recorder.items() == [
        {"question": "What animal?", "images": [], "response": "A cat.", "reference": "a cat"},
        {"question": "What animal?", "images": [], "response": "A dog.", "reference": "a cat"},
    ]


@pytest.mark.parametrize("asynchronous", [False, True])
@pytest.mark.parametrize("column", ["image", "images"])
def test_trl_conversational_images_from_kwargs(
    reward_server_url: str, recorder: Recorder, asynchronous: bool, column: str
) -> None:
    reward = make_judge_reward(reward_server_url, asynchronous=asynchronous, reference_column="answer")
    prompt = user({"type": "image"}, {"type": "text", "text": "What is"}, {"type": "text", "text": "shown?"})
    images = [picture(1), picture(2)]
    kwargs = {"image": images} if column == "image" else {"images": [[image] for image in images]}
    rewards = run(reward, [prompt, prompt], [answer("my cat"), answer("a hat")], answer=["cat", "cat"], **kwargs)
    assert rewards == [0.5, 0.0]
    items = recorder.items()
    assert [item["question"] for item in items] == ["What is\nshown?"] * 2  # last user message, text parts joined
    assert [item["response"] for item in items] == ["my cat", "a hat"]
    assert [item["reference"] for item in items] == ["cat", "cat"]
    assert [len(item["images"]) for item in items] == [1, 1]
    assert all(same_pixels(decode(item["images"][0]), image) for item, image in zip(items, images, strict=True))


def test_trl_group_mode_images_from_prompt_blocks(reward_server_url: str, recorder: Recorder) -> None:
    reward = make_judge_reward(reward_server_url, mode="group", group_scoring="bradley_terry")

    def prompt(seed: int) -> list[dict[str, Any]]:
        return user({"type": "image", "image": picture(seed)}, {"type": "text", "text": "Describe."})

    # two rollouts each of two prompts that differ only in their image; no reference column in group mode
    rewards = run(
        reward,
        [prompt(1), prompt(1), prompt(2), prompt(2)],
        [answer("cat"), answer("dog"), answer("cat"), answer("???")],
    )
    # group 1: cat beats dog -> opposite Bradley-Terry strengths; group 2: '???' never parses -> no valid reward
    assert rewards[0] > 0 > rewards[1] and rewards[0] == pytest.approx(-rewards[1]) and rewards[2:] == [None, None]
    body = recorder.bodies[0]
    assert body["mode"] == "group" and body["group_scoring"] == "bradley_terry"
    groups = [item["group_id"] for item in body["items"]]
    assert groups[0] == groups[1] != groups[2] == groups[3]
    assert all("reference" not in item for item in body["items"])
    assert same_pixels(decode(body["items"][2]["images"][0]), picture(2))


def test_trl_invalid_verdicts_become_none_and_are_logged(reward_server_url: str) -> None:
    logged: list[tuple[str, float]] = []
    reward = make_judge_reward(reward_server_url)
    rewards = reward(
        ["Q"] * 4,
        ["???", "cat", "???", "dog"],
        reference=["cat"] * 4,
        log_metric=lambda name, value: logged.append((name, value)),
    )
    assert rewards == [None, 0.5, None, 0.0]
    assert logged == [("deltarubric_judge/judge_valid_frac", 0.5)]


def test_trl_reference_mode_needs_the_column(reward_server_url: str, recorder: Recorder) -> None:
    with pytest.raises(KeyError, match="'reference'.*'solution'"):
        make_judge_reward(reward_server_url)(["Q"], ["A"], solution=["A"])
    assert recorder.attempts == 0


# ------------------------------------------------------------------------------------------------ verl, ms-swift


def test_verl_compute_score(
    reward_server_url: str, recorder: Recorder, monkeypatch: pytest.MonkeyPatch, image_file: Path
) -> None:
    # parquet rows arrive with numpy arrays and {"bytes": ...} image dicts
    png = base64.b64decode(image_to_data_url(picture(3)).partition(",")[2])
    extra_info = {"question": "Which animal?", "images": np.array([{"bytes": png, "path": None}, str(image_file)])}
    assert compute_score("geo", "a cat", "dog", extra_info, reward_url=reward_server_url) == {
        "score": 1.0,
        "judge_valid": True,
    }
    monkeypatch.setenv("DELTARUBRIC_REWARD_URL", reward_server_url)
    assert asyncio.run(compute_score_async("geo", "???", "cat", {"question": "Which?"})) == {
        "score": 0.5,
        "judge_valid": False,
    }
    first, second = recorder.items()
    assert first["question"] == "Which animal?" and first["reference"] == "dog" and first["response"] == "a cat"
    assert same_pixels(decode(first["images"][0]), picture(3)) and first["images"][1] == str(image_file)
    assert second["images"] == []


def test_verl_needs_a_question(reward_server_url: str) -> None:
    with pytest.raises(ValueError, match="extra_info"):
        compute_score("geo", "a cat", "cat", {"images": []}, reward_url=reward_server_url)


def test_swift_orm(reward_server_url: str, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELTARUBRIC_REWARD_URL", reward_server_url)
    orm = JudgeORM(args=None)
    messages = [
        [{"role": "user", "content": "<image>What is it?"}, {"role": "assistant", "content": text}]
        for text in ("cat", "???")
    ]
    rewards = orm(
        ["cat", "???"],
        messages=messages,
        images=[[picture(4)], []],
        solution=["a cat", "a cat"],
        trainer_state=None,
        prompt_id=["p0", "p0"],
    )
    assert rewards == [0.5, None]  # 'cat' against 'a cat' is a tie
    first, second = recorder.items()
    assert first["question"] == "What is it?" and first["reference"] == "a cat" and first["response"] == "cat"
    assert same_pixels(decode(first["images"][0]), picture(4)) and second["images"] == []


# ------------------------------------------------------------------------------------------------ client


@pytest.mark.parametrize("asynchronous", [False, True])
def test_client_retries_503_then_succeeds(reward_server_url: str, recorder: Recorder, asynchronous: bool) -> None:
    client = RewardClient(reward_server_url)
    items = [{"question": "Q", "response": "cat", "reference": "dog"}]
    recorder.fail_next = 2
    result = asyncio.run(client.arewards(items)) if asynchronous else client.rewards(items)
    assert result == [1.0] and recorder.attempts == 3
    recorder.fail_next = 3
    with pytest.raises(RewardServerError, match="503"):
        client.rewards(items)


def test_client_gives_up_on_connection_errors() -> None:
    client = RewardClient(f"http://127.0.0.1:{free_port()}", retry=RetryPolicy(backoff_s=0.01))
    with pytest.raises(RewardServerError, match="ConnectError.*after 3 tries"):
        client.rewards([{"question": "Q", "response": "A", "reference": "R"}])


def test_client_refuses_what_the_server_would_refuse_before_sending(reward_server_url: str, recorder: Recorder) -> None:
    client = RewardClient(reward_server_url)
    with pytest.raises(ValueError, match=r"items\[0\]: mode 'reference' needs a non-empty 'reference'"):
        client.rewards([{"question": "Q", "response": "A"}])
    with pytest.raises(ValueError, match="respnse"):  # a misspelt field is named
        client.rewards([{"question": "Q", "respnse": "A", "reference": "R"}])
    assert recorder.attempts == 0


def test_client_does_not_retry_bad_requests(reward_server_url: str, recorder: Recorder) -> None:
    not_an_image = "data:image/png;base64,bm90IGFuIGltYWdl"  # well-formed for the schema; the server reads it
    item = RewardItem(question="Q", images=[not_an_image], response="A", reference="R")
    with pytest.raises(RewardServerError, match=r"HTTP 400.*not a readable image"):
        RewardClient(reward_server_url).rewards([item])
    assert recorder.attempts == 1


def test_one_wire_schema_adapter_payloads_validate_and_server_answers_parse(
    reward_server_url: str, recorder: Recorder
) -> None:
    assert RewardsRequest in BODIES  # the server validates /v1/rewards bodies with the adapters' model
    run(make_judge_reward(reward_server_url, mode="group"), ["Q", "Q"], ["a cat", "a dog"])
    compute_score("geo", "a cat", "a dog", {"question": "Which?"}, reward_url=reward_server_url)
    group, reference = (RewardsRequest.model_validate(body) for body in recorder.bodies)
    assert group.mode == "group" and [item.response for item in group.items] == ["a cat", "a dog"]
    assert reference.mode == "reference" and reference.items[0].reference == "a dog"
    answer = httpx.post(reward_server_url + "/v1/rewards", json=recorder.bodies[0], timeout=30)
    parsed = RewardsResponse.model_validate_json(answer.content)
    assert parsed.valid_rewards() == [1.0, 0.0]
    assert parsed.details == [RewardDetail(comparisons=1, parsed=1)] * 2


# ------------------------------------------------------------------------------------------------ TRL GRPOTrainer


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")  # TRL 1.16 sets the old name
@pytest.mark.parametrize("asynchronous", [False, True])
def test_trl_grpo_trainer_trains_with_the_judge_reward(
    reward_server_url: str, recorder: Recorder, tiny_model_dir: Path, tmp_path: Path, asynchronous: bool
) -> None:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from deltarubric.rm.hf_compat import load_processor

    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What animal is this?"}]}]
    dataset = Dataset.from_dict(
        {
            "prompt": [prompt] * 4,
            "image": [picture(seed) for seed in range(4)],
            "reference": ["a cat", "a dog", "a bird", "a fish"],
        }
    )
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        num_generations=2,
        max_completion_length=8,
        per_device_train_batch_size=4,
        max_steps=2,
        logging_steps=1,
        beta=0.0,
        gradient_checkpointing=False,
        dataloader_pin_memory=False,
        seed=0,
    )
    reward = make_judge_reward(reward_server_url, asynchronous=asynchronous)
    trainer = GRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=[reward],
        args=args,
        train_dataset=dataset,
        processing_class=load_processor(tiny_model_dir),
    )
    trainer.train()

    assert trainer.state.global_step == 2
    items = recorder.items()
    assert len(recorder.bodies) == 2 and len(items) == 8  # one call per step: 2 prompts x 2 generations
    assert {item["question"] for item in items} == {"What animal is this?"}
    assert {item["reference"] for item in items} <= {"a cat", "a dog", "a bird", "a fish"}
    assert all(len(item["images"]) == 1 and decode(item["images"][0]).size == (24, 16) for item in items)
    logged = [entry for entry in trainer.state.log_history if "rewards/deltarubric_judge/mean" in entry]
    assert len(logged) == 2
    assert all(0.0 <= entry["rewards/deltarubric_judge/mean"] <= 1.0 for entry in logged)
    assert all(entry["deltarubric_judge/judge_valid_frac"] == 1.0 for entry in logged)
