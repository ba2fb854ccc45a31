"""The demo's judging flow, free of Gradio: the form's values in, the page's states out, stage by stage.

`judge_events` builds the request from the form and a `Judge` for the page's choices, then follows
`Judge.astream`: one state when judging starts, one after each stage that is not the last (DeltaRubric's checklist
as soon as the planner has answered), the last one with the verdict. It never raises: missing fields and
`JudgeRequest` validation errors, bad settings, media errors (`Verdict.error`: corrupt, huge or unreadable images)
and unexpected failures all become one message in the page.

Every judge the page builds (one per click, for the judge, swap and sampling chosen there) runs on ONE shared
backend (`SharedBackendJudges`), so the model is loaded once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from deltarubric.app.demo_render import PageState, error_page, final_page, running_page
from deltarubric.app.errors import InputError
from deltarubric.rm.aggregate import presentation_orders
from deltarubric.rm.backends import Backend, make_backend
from deltarubric.rm.config import JudgeConfig, SamplingConfig
from deltarubric.rm.judge import Judge, StageResult
from deltarubric.rm.media import describe
from deltarubric.rm.types import JudgeRequest
from deltarubric.rubrics.prompts import check_method

log = logging.getLogger(__name__)

# A factory gets the page's choices as keyword arguments and returns a Judge:
#   factory(judge="deltarubric", swap=False, temperature=0.0, max_tokens=1024, seed=0) -> Judge
JudgeFactory = Callable[..., Judge]


class SharedBackendJudges:
    """The default judge factory: `Judge(config.model_copy(update=...), backend=shared)` for each choice."""

    def __init__(self, config: JudgeConfig, backend: Backend | None = None) -> None:
        self.config = config
        self.backend = backend or make_backend(config)  # loads the model now: a bad --model fails before serving

    def __call__(self, *, judge: str, swap: bool, temperature: float, max_tokens: int, seed: int) -> Judge:
        sampling = SamplingConfig.model_validate(
            {**self.config.sampling.model_dump(), "temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        )
        update = {"judge": check_method(judge), "swap": bool(swap), "sampling": sampling}
        return Judge(self.config.model_copy(update=update), backend=self.backend)


def build_request(
    task_type: str,
    question: str | None,
    images: dict[str, str | None],
    a: str | None = None,
    b: str | None = None,
) -> JudgeRequest:
    """A JudgeRequest from the form. `images` maps each image field's label to its file path (None: empty).

    Understanding: {"Image": path} with text a/b. Generation: {"Image A": ..., "Image B": ...}. Editing:
    {"Source image": ..., "Edited A": ..., "Edited B": ...}. Raises InputError naming the empty field, or
    pydantic's ValidationError.
    """
    missing = [label for label, path in images.items() if not path]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise InputError(f"{' and '.join(missing)} {verb} missing: upload, paste or pick an example image.")
    paths = list(images.values())
    if task_type == "image_understanding":
        fields: dict[str, Any] = {"images": paths[:1], "a": a if a is not None else "", "b": b if b is not None else ""}
    elif task_type == "image_generation":
        fields = {"a": {"image": paths[0]}, "b": {"image": paths[1]}}
    elif task_type == "image_editing":
        fields = {"images": paths[:1], "a": {"image": paths[1]}, "b": {"image": paths[2]}}
    else:
        raise InputError(f"the demo does not handle task type {task_type!r}")
    return JudgeRequest(id="demo", task_type=task_type, question=question or "", **fields)


def validation_message(e: ValidationError) -> str:
    """A pydantic error as short sentences in the page's words ('candidate a' is 'Response A')."""
    parts = []
    for err in e.errors():
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("__root__",))
        parts.append(f"{loc}: {msg}" if loc and loc not in msg else msg)
    text = "; ".join(parts)
    for side in "ab":
        text = text.replace(f"candidate {side}: text is empty", f"Response {side.upper()} is empty")
    return text.replace("question is empty", "the question / prompt / instruction is empty")


def name_uploads(message: str, images: dict[str, str | None]) -> str:
    """A media error in the page's words: the judge names an upload by its (maybe shortened) cache path, the page
    by its field and file name, e.g. 'Image B (huge.png)'."""
    names = {}
    for label, path in images.items():
        if path:
            names[describe(path)] = names[path] = f"{label} ({Path(path).name})"
    for path, label in sorted(names.items(), key=lambda kv: -len(kv[0])):  # the full path before its prefix
        message = message.replace(path, label)
    return message


async def judge_events(
    factory: JudgeFactory,
    task_type: str,
    question: str | None,
    images: dict[str, str | None],
    a: str | None = None,
    b: str | None = None,
    *,
    method: str = "deltarubric",
    swap: bool = False,
    temperature: float | None = 0.0,
    max_tokens: int | None = 1024,
    seed: int | None = 0,
) -> AsyncIterator[PageState]:
    """Judge one pair, yielding the page after each stage; the last state has `done=True`. Never raises.

    Each judgment's states carry a fresh run id (`data-run` in the status HTML). Settings a client left empty (None)
    take the sampling defaults.
    """
    run = uuid.uuid4().hex[:12]
    try:
        request = build_request(task_type, question, images, a, b)
    except InputError as e:
        yield error_page(str(e), run=run)
        return
    except ValidationError as e:
        yield error_page(f"Cannot judge this input: {validation_message(e)}", run=run)
        return
    try:
        defaults = SamplingConfig()
        judge = factory(
            judge=method,
            swap=bool(swap),
            temperature=defaults.temperature if temperature is None else float(temperature),
            max_tokens=defaults.max_tokens if max_tokens is None else int(max_tokens),
            seed=defaults.seed if seed is None else int(seed),
        )
    except ValidationError as e:
        yield error_page(f"Invalid judge settings: {validation_message(e)}", run=run)
        return
    except Exception as e:
        log.exception("demo: building the judge failed")
        yield error_page(f"Cannot build the judge: {type(e).__name__}: {e}", run=run)
        return

    stages, cfg = judge.method.stages, judge.config
    # A stage is finished when every order still running has answered it; an order whose backend failed stops.
    running = len(presentation_orders(request.id, cfg.sampling.seed, cfg.swap, cfg.presentation))
    results: list[StageResult] = []
    yield running_page(cfg.judge, stages, results, run=run)
    try:
        async for event in judge.astream(request):
            if not isinstance(event, StageResult):
                if event.error:
                    message = name_uploads(event.error, images)
                    yield error_page(message, stages=stages, results=results, verdict=event, run=run)
                else:
                    yield final_page(event, stages, results, run=run)
                return
            results.append(event)
            answered = [r for r in results if r.stage == event.stage]
            if len(answered) == running:
                running -= sum(r.error is not None for r in answered)
                if event.stage != stages[-1].name:  # the last stage is shown with the verdict
                    yield running_page(cfg.judge, stages, results, run=run)
    except Exception as e:  # the judge returns errors as verdicts; this is for the unexpected
        log.exception("demo: judging failed")
        yield error_page(f"The judge failed unexpectedly: {type(e).__name__}: {e}", run=run)
