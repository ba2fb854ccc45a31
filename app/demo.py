"""The Gradio demo: judge one pair in the browser and watch the stages finish.

`deltarubric demo` calls `launch_demo`. `build_demo` takes any judge factory, so tests run the page on the tiny
checkpoint. Every judge the page builds (one per click, for the method, swap and sampling chosen there) runs on ONE
shared backend, so the model is loaded once.

Streaming: the page wraps the shared backend in a tap that reports each `agenerate` call. `Judge.ajudge_batch` makes
exactly one call per stage (all presentation orders batched), so each report is one finished stage: for DeltaRubric
the checklist is shown as soon as the planner answers, then the findings and the verdict. `rm/judge.py` is unchanged.

Bad input never reaches the page as a traceback: missing fields and `JudgeRequest` validation errors, media errors
(`Verdict.error`: corrupt, huge or unreadable images) and unexpected failures all become one message in the page.
"""

from __future__ import annotations

import html
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import gradio as gr
except ImportError as e:  # the CLI prints this one line
    raise ImportError(f"the demo needs gradio ({e}); install it with: pip install 'gradio>=5,<7'") from e
import pandas as pd
from pydantic import ValidationError

from deltarubric.data import shipped
from deltarubric.rm.aggregate import presentation_orders
from deltarubric.rm.backends import Backend, Conversation, Generation, make_backend
from deltarubric.rm.config import JudgeConfig, SamplingConfig
from deltarubric.rm.judge import Judge
from deltarubric.rm.media import describe
from deltarubric.rm.types import JudgeRequest, Verdict
from deltarubric.rubrics.parsing import PARSERS
from deltarubric.rubrics.prompts import available_methods, load_method

log = logging.getLogger(__name__)

DEFAULT_EXAMPLES_DIR = shipped("examples")
MAX_UPLOAD_BYTES = 64 * 1024 * 1024  # larger files are refused by Gradio before they reach the judge
METHOD_CHOICES = [("DeltaRubric", "deltarubric"), ("Direct", "direct"), ("MSRL format", "msrl")]
CHECKLIST_HEADERS = ["#", "checklist item", "finding", "favors"]
USAGE_HEADERS = ["stage", "order", "prompt tokens", "completion tokens", "latency (s)"]
TASK_LABELS = {
    "image_understanding": "Image understanding",
    "image_generation": "Image generation",
    "image_editing": "Image editing",
}

# A factory gets the page's choices as keyword arguments and returns a Judge:
#   factory(judge="deltarubric", swap=False, temperature=0.0, max_tokens=1024, seed=0) -> Judge
JudgeFactory = Callable[..., Judge]


class SharedBackendJudges:
    """The default judge factory: `Judge(config.model_copy(update=...), backend=shared)` for each choice."""

    def __init__(self, config: JudgeConfig, backend: Backend | None = None) -> None:
        self.config = config
        self.backend = backend or make_backend(config)  # loads the model now: a bad --model fails before serving

    def __call__(self, *, judge: str, swap: bool, temperature: float, max_tokens: int, seed: int) -> Judge:
        if judge not in available_methods():
            raise ValueError(f"unknown judge {judge!r}; available: {', '.join(available_methods())}")
        sampling = SamplingConfig.model_validate(
            {**self.config.sampling.model_dump(), "temperature": temperature, "max_tokens": max_tokens, "seed": seed}
        )
        config = self.config.model_copy(update={"judge": judge, "swap": bool(swap), "sampling": sampling})
        return Judge(config, backend=self.backend)


# ---------------------------------------------------------------------------------------------------------------
# The judging flow, free of Gradio: a generator of page states. Tested directly in tests/test_demo.py.


class InputError(ValueError):
    """Input the page can name precisely (a missing image, an empty field); shown as is."""


@dataclass
class StageReport:
    """One finished stage: its generations (one per presentation order, in order) and its wall time."""

    name: str
    produces: str
    generations: list[Generation]
    seconds: float


class _StageTap(Backend):
    """The shared backend, reporting each finished `agenerate` call (= one judge stage) to `on_stage`."""

    def __init__(
        self, inner: Backend, stages: Sequence[tuple[str, str]], on_stage: Callable[[StageReport], None]
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.supports_video = inner.supports_video
        self._stages = list(stages)
        self._on_stage = on_stage
        self._calls = 0

    async def agenerate(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        t0 = time.perf_counter()
        gens = await self.inner.agenerate(conversations, sampling)
        k = self._calls
        self._calls += 1
        name, produces = self._stages[k] if k < len(self._stages) else (f"stage{k + 1}", "")
        self._on_stage(StageReport(name, produces, list(gens), time.perf_counter() - t0))
        return gens


@dataclass
class PageState:
    """Everything the outputs show at one moment of a judgment."""

    status_html: str
    verdict_html: str
    checklist: pd.DataFrame
    justification: str = ""
    raw_html: str = ""
    usage: pd.DataFrame = field(default_factory=lambda: pd.DataFrame([], columns=USAGE_HEADERS))
    verdict_json: dict[str, Any] | None = None
    error: str | None = None  # set: the page shows it as a warning too
    done: bool = False
    progress: float = 0.0
    progress_desc: str = ""

    def outputs(self) -> tuple[Any, ...]:
        return (
            self.status_html,
            self.verdict_html,
            self.checklist,
            self.justification,
            self.raw_html,
            self.usage,
            self.verdict_json,
        )


def build_request(
    task_type: str,
    question: str | None,
    images: dict[str, str | None],
    a: str | None = None,
    b: str | None = None,
) -> JudgeRequest:
    """A JudgeRequest from the form. `images` maps each image field's label to its file path (None: empty).

    Understanding: {"Image": path} with text a/b. Generation: {"Image A": ..., "Image B": ...}. Editing:
    {"Source image": ..., "Edited A": ..., "Edited B": ...}. Raises InputError / ValidationError.
    """
    missing = [label for label, path in images.items() if not path]
    if missing:
        raise InputError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing: upload, paste or pick an example image."
        )
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


def judge_events(factory: JudgeFactory, *args: Any, **kwargs: Any) -> Iterator[PageState]:
    """Judge one pair, yielding the page after each stage; the last state has `done=True`. Never raises.

    Arguments as `_judge_events`. Each judgment's states carry a fresh `data-run` id in the status HTML, so the page
    (and a test driving it) can tell a new result from the previous one even when their text is the same.
    """
    run = uuid.uuid4().hex[:12]
    for state in _judge_events(factory, *args, **kwargs):
        state.status_html = state.status_html.replace('data-run=""', f'data-run="{run}"', 1)
        yield state


def _judge_events(
    factory: JudgeFactory,
    task_type: str,
    question: str | None,
    images: dict[str, str | None],
    a: str | None = None,
    b: str | None = None,
    *,
    method: str = "deltarubric",
    swap: bool = False,
    temperature: float = 0.0,
    max_tokens: int = 1024,
    seed: int | None = 0,
) -> Iterator[PageState]:
    try:
        request = build_request(task_type, question, images, a, b)
    except InputError as e:
        yield error_state(str(e))
        return
    except ValidationError as e:
        yield error_state(f"Cannot judge this input: {validation_message(e)}")
        return
    try:
        defaults = SamplingConfig()  # for fields a client left empty (None)
        judge = factory(
            judge=method,
            swap=bool(swap),
            temperature=defaults.temperature if temperature is None else float(temperature),
            max_tokens=defaults.max_tokens if max_tokens is None else int(max_tokens),
            seed=defaults.seed if seed is None else int(seed),
        )
    except ValidationError as e:
        yield error_state(f"Invalid judge settings: {validation_message(e)}")
        return
    except Exception as e:
        log.exception("demo: building the judge failed")
        yield error_state(f"Cannot build the judge: {type(e).__name__}: {e}")
        return

    stages = [(s.name, s.produces) for s in judge.method.stages]
    cfg = judge.config
    orders = presentation_orders(request.id, cfg.sampling.seed, cfg.swap, cfg.presentation)
    events: queue.Queue[StageReport | tuple[str, Any]] = queue.Queue()
    tapped = Judge(cfg, backend=_StageTap(judge.backend, stages, events.put))

    def work() -> None:
        try:
            events.put(("verdict", tapped.judge(request)))
        except Exception as e:  # the judge returns errors as verdicts; this is for the unexpected
            log.exception("demo: judging failed")
            events.put(("crash", e))

    threading.Thread(target=work, name="demo-judge", daemon=True).start()
    done: list[StageReport] = []
    yield stream_state(cfg.judge, stages, done, orders)
    while True:
        ev = events.get()
        if isinstance(ev, StageReport):
            if not ev.generations:  # nothing left to run (the item failed before this stage)
                continue
            done.append(ev)
            if len(done) < len(stages):  # the last stage is shown with the verdict
                yield stream_state(cfg.judge, stages, done, orders)
            continue
        kind, value = ev
        if kind == "crash":
            yield error_state(f"The judge failed unexpectedly: {type(value).__name__}: {value}")
        else:
            yield final_state(value, stages, done, labels=_path_labels(images))
        return


def _path_labels(images: dict[str, str | None]) -> dict[str, str]:
    """How error messages name each uploaded file (the judge names it by its long cache path, maybe shortened)."""
    out = {}
    for label, path in images.items():
        if path:
            out[describe(path)] = out[path] = f"{label} ({Path(path).name})"
    return dict(sorted(out.items(), key=lambda kv: -len(kv[0])))  # longest first: the full path before its prefix


# ---------------------------------------------------------------------------------------------------------------
# Rendering: HTML fragments and tables. Classes are styled by DEMO_CSS; every fragment stays readable without it.


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _stepper(
    stages: Sequence[tuple[str, str]], done: Sequence[StageReport], *, failed: bool = False, finished: bool = False
) -> str:
    items = []
    for k, (name, _) in enumerate(stages):
        if k < len(done):
            state, mark, note = "done", "✓", f"{done[k].seconds:.2f} s"
        elif failed:
            state, mark, note = "skipped", "–", "not run"
        elif k == len(done) and not finished:
            state, mark, note = "running", "●", "running…"
        else:
            state, mark, note = "waiting", "○", "waiting"
        items.append(
            f'<li class="dr-step dr-step-{state}" data-stage="{_esc(name)}" data-state="{state}">'
            f'<span class="dr-step-mark">{mark}</span> <b>{k + 1}. {_esc(name)}</b> <span class="dr-step-note">{note}</span></li>'
        )
    return f'<ol class="dr-steps">{"".join(items)}</ol>'


def _status(stages, done, message: str, *, kind: str, finished: bool = False) -> str:
    bar = '<div class="dr-indeterminate"><div></div></div>' if kind == "running" else ""
    steps = _stepper(stages, done, failed=kind == "error", finished=finished) if stages else ""
    return (
        f'<div class="dr-status dr-status-{kind}" data-kind="{kind}" data-run="">{steps}{bar}'
        f'<div class="dr-status-msg">{message}</div></div>'
    )


def _card(kind: str, title: str, body: str = "") -> str:
    return f'<div class="dr-verdict dr-verdict-{kind}" data-kind="{kind}"><div class="dr-verdict-title">{title}</div>{body}</div>'


def _table(rows: list[list[Any]], headers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


def _placeholder(text: str) -> pd.DataFrame:
    return _table([["", text, "", ""]], CHECKLIST_HEADERS)


def idle_state() -> PageState:
    return PageState(
        status_html=_status(
            [], [], "Fill in a pair (or pick an example), choose a judge and press <b>Judge</b>.", kind="idle"
        ),
        verdict_html=_card("idle", "No judgment yet"),
        checklist=_placeholder("(the DeltaRubric checklist appears here)"),
        raw_html='<p class="dr-muted">No model output yet.</p>',
    )


def error_state(message: str) -> PageState:
    return PageState(
        status_html=_status([], [], f"⚠ {_esc(message)}", kind="error"),
        verdict_html=_card("error", "Could not judge", f'<div class="dr-verdict-error">{_esc(message)}</div>'),
        checklist=_placeholder("(no judgment)"),
        raw_html='<p class="dr-muted">No model output.</p>',
        error=message,
        done=True,
    )


def stream_state(method: str, stages, done: Sequence[StageReport], orders: Sequence[str]) -> PageState:
    """The page while stages are running: finished stages ticked, the checklist once the planner has answered."""
    n = len(stages)
    running = stages[len(done)][0] if len(done) < n else ""
    msg = f"Judging with <b>{_esc(method)}</b>: stage {len(done) + 1} of {n} (<i>{_esc(running)}</i>)…"
    checklist = _placeholder(
        "(waiting for the planner's checklist…)" if any(p == "checklist" for _, p in stages) else "(judging…)"
    )
    for rep in done:
        if rep.produces == "checklist":
            lead = next((g for g in rep.generations if not g.error), None)
            items = PARSERS["checklist"](lead.text).checklist if lead else []
            checklist = (
                _table([[k, item, "verifying…", "…"] for k, item in enumerate(items, 1)], CHECKLIST_HEADERS)
                if items
                else _placeholder("(the planner's reply held no readable checklist; the verifier compares directly)")
            )
    rows = []
    for rep in done:
        for k, g in enumerate(rep.generations):
            order = orders[k] if len(rep.generations) == len(orders) else f"#{k + 1}"
            rows.append([rep.name, order, g.usage.prompt_tokens, g.usage.completion_tokens, round(rep.seconds, 3)])
    raw = {
        f"{orders[k] if len(rep.generations) == len(orders) else k + 1}/{rep.name}": g.text
        for rep in done
        for k, g in enumerate(rep.generations)
    }
    return PageState(
        status_html=_status(stages, done, msg, kind="running"),
        verdict_html=_card(
            "pending", "Judging…", '<div class="dr-muted">The verdict appears when the last stage finishes.</div>'
        ),
        checklist=checklist,
        raw_html=_raw_html(raw) if raw else '<p class="dr-muted">Waiting for the first stage…</p>',
        usage=_table(rows, USAGE_HEADERS),
        progress=len(done) / max(n, 1),
        progress_desc=f"stage {len(done) + 1}/{n}: {running}",
    )


def final_state(v: Verdict, stages, done: Sequence[StageReport], *, labels: dict[str, str] | None = None) -> PageState:
    if v.error:
        message = v.error
        for path, label in (labels or {}).items():
            message = message.replace(path, label)
        st = error_state(message)
        st.status_html = _status(stages, done, f"⚠ {_esc(message)}", kind="error")
        st.verdict_json = v.model_dump(mode="json")
        if v.raw:
            st.raw_html = _raw_html(v.raw)
        return st
    seconds = {rep.name: rep.seconds for rep in done}
    rank = {name: k for k, (name, _) in enumerate(stages)}
    usage_rows = []
    for key, u in v.usage.items():
        order, _, stage = key.partition("/")
        usage_rows.append(
            [stage, order, u.prompt_tokens, u.completion_tokens, round(seconds.get(stage, float("nan")), 3)]
        )
    usage_rows.sort(key=lambda r: (rank.get(r[0], len(rank)), r[1]))  # stage by stage, as they ran
    usage_rows.append(
        [
            "total",
            "",
            sum(u.prompt_tokens for u in v.usage.values()),
            sum(u.completion_tokens for u in v.usage.values()),
            round(v.latency_s, 3),
        ]
    )
    parsed = "parsed" if v.parse_ok else "unparsable"
    msg = f"Done in {v.latency_s:.2f} s — judge <b>{_esc(v.judge)}</b>, {len(v.orders)} order(s), verdict {parsed}."
    return PageState(
        status_html=_status(stages, done, msg, kind="done", finished=True),
        verdict_html=verdict_card(v),
        checklist=checklist_table(v),
        justification=_justification(v),
        raw_html=_raw_html(v.raw),
        usage=_table(usage_rows, USAGE_HEADERS),
        verdict_json=v.model_dump(mode="json"),
        done=True,
        progress=1.0,
        progress_desc="done",
    )


def verdict_card(v: Verdict) -> str:
    orders = ", ".join(f"{o.order}: {o.winner or 'unparsable'}" for o in v.orders)
    meta = [f"judge: {_esc(v.judge)}", f"orders: {_esc(orders)}"]
    if v.consistent is not None:
        meta.append(f"consistent across orders: {'yes' if v.consistent else 'no'}")
    meta.append(f"{v.latency_s:.2f} s")
    meta_html = f'<div class="dr-meta">{" · ".join(meta)}</div>'
    if v.winner is None:
        body = (
            '<div class="dr-bar dr-bar-na"><span>p(A better): n/a</span></div>'
            '<div class="dr-note">The judge\'s reply had no readable verdict (no <code>Winner: [[A]]</code> / '
            "<code>&lt;answer&gt;</code>), so nothing is guessed. A random-weight test checkpoint "
            "(<code>deltarubric make-tiny-model</code>) always ends here; the raw model outputs below show what it wrote.</div>"
        )
        return _card("unparsable", "No verdict: unparsable", body + meta_html)
    title = {"A": "A is better", "B": "B is better", "tie": "Tie"}[v.winner]
    if v.winner == "tie" and v.consistent is False:
        title = "Tie: the two orders disagree (position bias)"
    if v.p_a is None:
        bar = '<div class="dr-bar dr-bar-na"><span>p(A better): n/a — no logprobs for the verdict token</span></div>'
    else:
        pa = max(0.0, min(1.0, v.p_a))
        bar = (
            f'<div class="dr-bar" title="p(A better) = {pa:.3f}" data-pa="{pa:.4f}">'
            f'<div class="dr-bar-a" style="width:{pa * 100:.1f}%"><span>A {pa * 100:.0f}%</span></div>'
            f'<div class="dr-bar-b" style="width:{(1 - pa) * 100:.1f}%"><span>B {(1 - pa) * 100:.0f}%</span></div></div>'
            f'<div class="dr-pa">p(A better) = {pa:.3f}</div>'
        )
    return _card(f"winner-{v.winner.lower()}", title, bar + meta_html)


def checklist_table(v: Verdict) -> pd.DataFrame:
    rows: list[list[Any]] = []
    n = max(len(v.checklist), len(v.findings))
    for k in range(n):
        item = v.checklist[k] if k < len(v.checklist) else (v.findings[k].item if k < len(v.findings) else "")
        f = v.findings[k] if k < len(v.findings) else None
        rows.append([k + 1, item or "—", f.text if f else "(no finding)", (f.favors or "?") if f else ""])
    if rows:
        return _table(rows, CHECKLIST_HEADERS)
    if any(s.produces == "checklist" for s in load_method(v.judge).stages):
        return _placeholder("(the planner's reply held no readable checklist)")
    return _placeholder(f"(the {v.judge} judge writes no checklist)")


def _justification(v: Verdict) -> str:
    text = v.rationale.strip() or "(none: the reply had no readable justification)"
    if v.task_type_pred:
        text += f"\n\nTask type named by the model: {v.task_type_pred}"
    return text


def _raw_html(raw: dict[str, str]) -> str:
    if not raw:
        return '<p class="dr-muted">No model output.</p>'
    return "".join(
        f'<div class="dr-raw" data-key="{_esc(k)}"><div class="dr-raw-key">{_esc(k)}</div><pre>{_esc(t) or "(empty)"}</pre></div>'
        for k, t in raw.items()
    )


DEMO_CSS = """
.dr-status { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px 14px; background: var(--block-background-fill); }
.dr-status-error { border-color: #d33; background: #fdecec; color: #8a1010; }
.dr-status-error .dr-status-msg { font-weight: 600; }
.dr-steps { list-style: none; display: flex; flex-wrap: wrap; gap: 8px 22px; margin: 0 0 6px 0; padding: 0; }
.dr-step { margin: 0; }
.dr-step-done .dr-step-mark { color: #1a7f37; }
.dr-step-running .dr-step-mark { color: #d97706; animation: dr-pulse 1s infinite; }
.dr-step-waiting, .dr-step-skipped { opacity: 0.55; }
.dr-step-note { color: var(--body-text-color-subdued); font-size: 0.9em; }
@keyframes dr-pulse { 50% { opacity: 0.2; } }
.dr-indeterminate { height: 4px; background: #e5e7eb; border-radius: 2px; overflow: hidden; margin: 4px 0 6px; }
.dr-indeterminate div { width: 35%; height: 100%; background: #6366f1; animation: dr-slide 1.1s infinite ease-in-out; }
@keyframes dr-slide { from { margin-left: -35%; } to { margin-left: 100%; } }
.dr-verdict { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 12px 14px; background: var(--block-background-fill); }
.dr-verdict-title { font-size: 1.35em; font-weight: 700; margin-bottom: 8px; }
.dr-verdict-winner-a .dr-verdict-title { color: #1d4ed8; }
.dr-verdict-winner-b .dr-verdict-title { color: #b45309; }
.dr-verdict-unparsable { border-color: #d97706; background: #fff8eb; }
.dr-verdict-unparsable .dr-verdict-title { color: #b45309; }
.dr-verdict-error { color: #8a1010; }
.dr-verdict.dr-verdict-error { border-color: #d33; background: #fdecec; }
.dr-bar { display: flex; height: 28px; border-radius: 6px; overflow: hidden; font-weight: 600; color: white; }
.dr-bar-a { background: #2563eb; display: flex; align-items: center; padding-left: 8px; white-space: nowrap; }
.dr-bar-b { background: #f59e0b; display: flex; align-items: center; justify-content: flex-end; padding-right: 8px; white-space: nowrap; }
.dr-bar-na { background: repeating-linear-gradient(45deg, #e5e7eb, #e5e7eb 8px, #f3f4f6 8px, #f3f4f6 16px); color: #4b5563; align-items: center; padding-left: 10px; }
.dr-bar span { color: white; }
.dr-bar-na span { color: #374151; }
.dr-pa { margin-top: 4px; font-variant-numeric: tabular-nums; }
.dr-note { margin-top: 8px; font-size: 0.92em; }
.dr-meta { margin-top: 8px; color: var(--body-text-color-subdued); font-size: 0.88em; }
.dr-muted { color: var(--body-text-color-subdued); }
#checklist *, #usage * { font-family: var(--font) !important; font-variant-numeric: tabular-nums; }
.dr-raw { margin-bottom: 10px; }
.dr-raw-key { font-weight: 700; font-family: var(--font-mono); }
.dr-raw pre { white-space: pre-wrap; word-break: break-word; background: var(--background-fill-secondary); padding: 8px; border-radius: 6px; margin: 4px 0 0; max-height: 320px; overflow: auto; }
"""


# ---------------------------------------------------------------------------------------------------------------
# The page


class JudgeImage(gr.Image):
    """gr.Image (upload or paste) that passes the uploaded file's path through untouched.

    gr.Image opens every upload with PIL before the handler runs, so a corrupt file would end the event with a bare
    'Error'. Here such a file still reaches the judge as a path, and its MediaError ('not a readable image') is shown.
    """

    def get_block_name(self) -> str:
        return "image"  # the stock Image front end

    def preprocess(self, payload: Any) -> Any:
        try:
            return super().preprocess(payload)
        except Exception:
            path = getattr(payload, "path", None)
            if path:
                return str(path)
            raise


def _image(label: str, elem_id: str, height: int = 200) -> JudgeImage:
    return JudgeImage(
        label=label,
        type="filepath",
        image_mode=None,
        sources=["upload", "clipboard"],
        height=height,
        elem_id=elem_id,
    )


def _examples(examples_dir: Path, rows: list[list[Any]], image_columns: Sequence[int]) -> list[list[Any]]:
    """The example rows whose image files exist, with absolute paths."""
    kept = []
    for row in rows:
        paths = [examples_dir / row[i] for i in image_columns]
        if all(p.is_file() for p in paths):
            kept.append([str(examples_dir / x) if i in image_columns else x for i, x in enumerate(row)])
    return kept


UNDERSTANDING_EXAMPLES = [
    [
        "cats.png",
        "How many cats are in the picture?",
        "There are two orange cats sitting side by side.",
        "There are three cats: two orange ones and a grey one on the right.",
    ],
    ["shapes.png", "What is the shape on the left, and what colour is it?", "A red circle.", "A blue square."],
]
GENERATION_EXAMPLES = [["A red circle above a blue square on a white background.", "gen_a.png", "gen_b.png"]]
EDITING_EXAMPLES = [
    [
        "edit_source.png",
        "Make it night: turn the sky dark blue and replace the sun with a white moon.",
        "edit_a.png",
        "edit_b.png",
    ]
]


def build_demo(
    judge_factory: JudgeFactory,
    *,
    examples_dir: str | Path | None = DEFAULT_EXAMPLES_DIR,
    defaults: JudgeConfig | None = None,
) -> gr.Blocks:
    """The page. `judge_factory(judge=, swap=, temperature=, max_tokens=, seed=)` returns a Judge for the choices made
    (see SharedBackendJudges). `defaults` (else `judge_factory.config`, if any) sets the initial settings."""
    cfg = defaults or getattr(judge_factory, "config", None)
    sampling = cfg.sampling if cfg else SamplingConfig()
    methods = [(label, m) for label, m in METHOD_CHOICES if m in available_methods()]
    method0 = cfg.judge if cfg and cfg.judge in [m for _, m in methods] else methods[0][1]
    examples_path = Path(examples_dir) if examples_dir else None
    concurrency = cfg.compute.concurrency if cfg and cfg.compute.backend == "openai" else 1
    model_line = ""
    if cfg:
        shown = Path(cfg.model).name if Path(cfg.model).is_dir() else cfg.model  # a local checkpoint: its folder name
        model_line = f'Model <code title="{_esc(cfg.model)}">{_esc(shown)}</code> on the <code>{_esc(cfg.compute.backend)}</code> backend.'

    with gr.Blocks(title="DeltaRubric judge", analytics_enabled=False) as demo:
        gr.HTML(
            f'<div class="dr-header"><h1 style="margin:0 0 4px">DeltaRubric pairwise judge</h1>'
            f"<div>Compare two responses or two images for one visual task. {model_line} DeltaRubric first plans a "
            "checklist of where the two disagree, then verifies each item against the image and decides.</div></div>"
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=420):
                with gr.Row():
                    method = gr.Radio(
                        methods,
                        value=method0,
                        label="Judge",
                        info="DeltaRubric: a checklist (planner), then its verification (verifier)",
                        scale=4,
                        elem_id="judge-method",
                    )
                    swap = gr.Checkbox(
                        value=bool(cfg.swap) if cfg else False,
                        label="Swap A/B",
                        info="judge both orders",
                        scale=1,
                        min_width=150,
                        elem_id="judge-swap",
                    )
                with gr.Accordion("Sampling", open=False, elem_id="sampling"):
                    with gr.Row():
                        temperature = gr.Slider(
                            0.0,
                            2.0,
                            value=sampling.temperature,
                            step=0.05,
                            label="Temperature (0 = greedy)",
                            elem_id="temperature",
                        )
                        max_tokens = gr.Slider(
                            1,
                            max(4096, sampling.max_tokens),
                            value=sampling.max_tokens,
                            step=1,
                            label="Max tokens per stage",
                            elem_id="max-tokens",
                        )
                        seed = gr.Number(value=sampling.seed, precision=0, label="Seed", elem_id="seed")
                settings = [method, swap, temperature, max_tokens, seed]

                with gr.Tabs(elem_id="task-tabs"):
                    with gr.Tab(TASK_LABELS["image_understanding"], id="understanding"):
                        u_image = _image("Image", "u-image", height=220)
                        u_question = gr.Textbox(label="Question", lines=1, elem_id="u-question")
                        with gr.Row():
                            u_a = gr.Textbox(label="Response A", lines=3, elem_id="u-a")
                            u_b = gr.Textbox(label="Response B", lines=3, elem_id="u-b")
                        u_button = gr.Button("Judge", variant="primary", elem_id="judge-understanding")
                        u_inputs = [u_image, u_question, u_a, u_b]
                        if examples_path and (rows := _examples(examples_path, UNDERSTANDING_EXAMPLES, [0])):
                            gr.Examples(rows, u_inputs, label="Examples", cache_examples=False, elem_id="u-examples")
                    with gr.Tab(TASK_LABELS["image_generation"], id="generation"):
                        g_prompt = gr.Textbox(label="Generation prompt", lines=1, elem_id="g-prompt")
                        with gr.Row():
                            g_a = _image("Image A", "g-a")
                            g_b = _image("Image B", "g-b")
                        g_button = gr.Button("Judge", variant="primary", elem_id="judge-generation")
                        g_inputs = [g_prompt, g_a, g_b]
                        if examples_path and (rows := _examples(examples_path, GENERATION_EXAMPLES, [1, 2])):
                            gr.Examples(rows, g_inputs, label="Examples", cache_examples=False, elem_id="g-examples")
                    with gr.Tab(TASK_LABELS["image_editing"], id="editing"):
                        e_source = _image("Source image", "e-source", height=180)
                        e_instruction = gr.Textbox(label="Editing instruction", lines=1, elem_id="e-instruction")
                        with gr.Row():
                            e_a = _image("Edited A", "e-a", height=180)
                            e_b = _image("Edited B", "e-b", height=180)
                        e_button = gr.Button("Judge", variant="primary", elem_id="judge-editing")
                        e_inputs = [e_source, e_instruction, e_a, e_b]
                        if examples_path and (rows := _examples(examples_path, EDITING_EXAMPLES, [0, 2, 3])):
                            gr.Examples(rows, e_inputs, label="Examples", cache_examples=False, elem_id="e-examples")

            with gr.Column(scale=6, min_width=480):
                idle = idle_state()
                status = gr.HTML(idle.status_html, elem_id="status")
                verdict = gr.HTML(idle.verdict_html, elem_id="verdict")
                checklist = gr.Dataframe(
                    idle.checklist,
                    headers=CHECKLIST_HEADERS,
                    label="DeltaRubric checklist: each item's finding and which response it favors",
                    interactive=False,
                    wrap=True,
                    column_widths=["6%", "40%", "42%", "12%"],
                    elem_id="checklist",
                )
                justification = gr.Textbox(label="Justification", lines=2, interactive=False, elem_id="justification")
                usage = gr.Dataframe(
                    idle.usage,
                    headers=USAGE_HEADERS,
                    label="Per-stage latency and tokens (orders of a stage run batched)",
                    interactive=False,
                    elem_id="usage",
                )
                with gr.Accordion("Raw model outputs (per order/stage)", open=False, elem_id="raw-panel"):
                    raw = gr.HTML(idle.raw_html, elem_id="raw")
                with gr.Accordion("Verdict as JSON", open=False, elem_id="json-panel"):
                    verdict_json = gr.JSON(label="Verdict", elem_id="verdict-json")
        outputs = [status, verdict, checklist, justification, raw, usage, verdict_json]

        def stream(task_type: str, question, images: dict[str, str | None], a, b, choices, progress) -> Iterator[tuple]:
            m, sw, temp, mt, sd = choices
            for state in judge_events(
                judge_factory,
                task_type,
                question,
                images,
                a,
                b,
                method=m,
                swap=sw,
                temperature=temp,
                max_tokens=mt,
                seed=sd,
            ):
                if state.error:
                    gr.Warning(state.error)
                elif not state.done:
                    progress(state.progress, desc=state.progress_desc)
                yield state.outputs()

        def judge_understanding(image, question, a, b, m, sw, temp, mt, sd, progress=gr.Progress()):
            yield from stream("image_understanding", question, {"Image": image}, a, b, (m, sw, temp, mt, sd), progress)

        def judge_generation(prompt, img_a, img_b, m, sw, temp, mt, sd, progress=gr.Progress()):
            images = {"Image A": img_a, "Image B": img_b}
            yield from stream("image_generation", prompt, images, None, None, (m, sw, temp, mt, sd), progress)

        def judge_editing(source, instruction, img_a, img_b, m, sw, temp, mt, sd, progress=gr.Progress()):
            images = {"Source image": source, "Edited A": img_a, "Edited B": img_b}
            yield from stream("image_editing", instruction, images, None, None, (m, sw, temp, mt, sd), progress)

        for button, fn, inputs, name in (
            (u_button, judge_understanding, u_inputs, "judge_understanding"),
            (g_button, judge_generation, g_inputs, "judge_generation"),
            (e_button, judge_editing, e_inputs, "judge_editing"),
        ):
            button.click(
                fn,
                inputs + settings,
                outputs,
                api_name=name,
                show_progress="full",
                show_progress_on=[verdict],
                concurrency_limit=concurrency,
                concurrency_id="judge",
            )
    return demo


def serve_demo(
    demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, *, block: bool = True, quiet: bool = False
) -> str:
    """Launch on host:port (never a public share link); returns the local URL. `block=False` returns at once."""
    demo.queue(max_size=64)
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        quiet=quiet,
        show_error=False,
        max_file_size=MAX_UPLOAD_BYTES,
        css=DEMO_CSS,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        theme=gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]),
    )
    return url


def launch_demo(
    config: JudgeConfig, host: str = "127.0.0.1", port: int = 7860, *, examples_dir: str | Path | None = None
) -> None:
    """What `deltarubric demo` runs: load the model once, build the page, serve it until interrupted."""
    judges = SharedBackendJudges(config)
    serve_demo(build_demo(judges, examples_dir=examples_dir or DEFAULT_EXAMPLES_DIR), host, port)
