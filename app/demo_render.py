"""The demo's rendering: pure functions from a judgment's data (stages, stage results, the verdict) to the page.

Each function returns the HTML fragments and tables one page state shows; nothing here imports Gradio or runs a
judge, so every output is tested on hand-made data. Classes are styled by the page's CSS (`app/demo.py`); every
fragment stays readable without it. `run` is the judgment's id, written into the status as `data-run`, so the page
(and a test driving it) can tell a new result from the previous one even when their text is the same.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from deltarubric.rm.judge import StageResult
from deltarubric.rm.types import Verdict
from deltarubric.rubrics.prompts import Stage

CHECKLIST_HEADERS = ["#", "checklist item", "finding", "favors"]
USAGE_HEADERS = ["stage", "order", "prompt tokens", "completion tokens", "latency (s)"]


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


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def stage_seconds(results: Sequence[StageResult]) -> dict[str, float]:
    """Each finished stage's wall time (its orders ran in one batched call, so they share it)."""
    seconds: dict[str, float] = {}
    for r in results:
        seconds[r.stage] = max(seconds.get(r.stage, 0.0), r.seconds)
    return seconds


def stepper(
    stages: Sequence[Stage], results: Sequence[StageResult], *, failed: bool = False, finished: bool = False
) -> str:
    """The stages as a row of steps: done (✓ and its time), running, waiting, or skipped after a failure."""
    seconds = stage_seconds(results)
    running = next((k for k, s in enumerate(stages) if s.name not in seconds), len(stages))
    items = []
    for k, s in enumerate(stages):
        if s.name in seconds:
            state, mark, note = "done", "✓", f"{seconds[s.name]:.2f} s"
        elif failed:
            state, mark, note = "skipped", "–", "not run"
        elif k == running and not finished:
            state, mark, note = "running", "●", "running…"
        else:
            state, mark, note = "waiting", "○", "waiting"
        items.append(
            f'<li class="dr-step dr-step-{state}" data-stage="{esc(s.name)}" data-state="{state}">'
            f'<span class="dr-step-mark">{mark}</span> <b>{k + 1}. {esc(s.name)}</b> '
            f'<span class="dr-step-note">{note}</span></li>'
        )
    return f'<ol class="dr-steps">{"".join(items)}</ol>'


def status(
    message: str,
    *,
    kind: str,
    stages: Sequence[Stage] = (),
    results: Sequence[StageResult] = (),
    run: str = "",
    finished: bool = False,
) -> str:
    """The status box: the stepper, a moving bar while running, and `message` (HTML)."""
    bar = '<div class="dr-indeterminate"><div></div></div>' if kind == "running" else ""
    steps = stepper(stages, results, failed=kind == "error", finished=finished) if stages else ""
    return (
        f'<div class="dr-status dr-status-{kind}" data-kind="{kind}" data-run="{esc(run)}">{steps}{bar}'
        f'<div class="dr-status-msg">{message}</div></div>'
    )


def card(kind: str, title: str, body: str = "") -> str:
    return (
        f'<div class="dr-verdict dr-verdict-{kind}" data-kind="{kind}">'
        f'<div class="dr-verdict-title">{title}</div>{body}</div>'
    )


def table(rows: list[list[Any]], headers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=headers)


def placeholder(text: str) -> pd.DataFrame:
    return table([["", text, "", ""]], CHECKLIST_HEADERS)


def raw_html(raw: dict[str, str]) -> str:
    """The model's text per '<order>/<stage>', escaped."""
    if not raw:
        return '<p class="dr-muted">No model output.</p>'
    return "".join(
        f'<div class="dr-raw" data-key="{esc(k)}"><div class="dr-raw-key">{esc(k)}</div>'
        f"<pre>{esc(t) or '(empty)'}</pre></div>"
        for k, t in raw.items()
    )


def idle_page() -> PageState:
    return PageState(
        status_html=status("Fill in a pair (or pick an example), choose a judge and press <b>Judge</b>.", kind="idle"),
        verdict_html=card("idle", "No judgment yet"),
        checklist=placeholder("(the DeltaRubric checklist appears here)"),
        raw_html='<p class="dr-muted">No model output yet.</p>',
    )


def error_page(
    message: str,
    *,
    stages: Sequence[Stage] = (),
    results: Sequence[StageResult] = (),
    verdict: Verdict | None = None,
    run: str = "",
) -> PageState:
    """A judgment that could not be made: bad input, bad settings, or a verdict with `error` (its raw text kept)."""
    return PageState(
        status_html=status(f"⚠ {esc(message)}", kind="error", stages=stages, results=results, run=run),
        verdict_html=card("error", "Could not judge", f'<div class="dr-verdict-error">{esc(message)}</div>'),
        checklist=placeholder("(no judgment)"),
        raw_html=raw_html(verdict.raw) if verdict and verdict.raw else '<p class="dr-muted">No model output.</p>',
        verdict_json=verdict.model_dump(mode="json") if verdict else None,
        error=message,
        done=True,
    )


def running_page(judge: str, stages: Sequence[Stage], results: Sequence[StageResult], *, run: str = "") -> PageState:
    """The page while stages run: finished stages ticked, the checklist once its stage has answered."""
    n, done = len(stages), len(stage_seconds(results))
    current = stages[done].name if done < n else ""
    msg = f"Judging with <b>{esc(judge)}</b>: stage {done + 1} of {n} (<i>{esc(current)}</i>)…"
    writes_checklist = any(s.produces == "checklist" for s in stages)
    checklist = placeholder("(waiting for the planner's checklist…)" if writes_checklist else "(judging…)")
    planned = [r for r in results if r.produces == "checklist" and r.error is None]
    if planned:  # the first order judged ('AB' when it was), as the verdict's checklist is
        items = planned[0].parsed.checklist
        checklist = (
            table([[k, item, "verifying…", "…"] for k, item in enumerate(items, 1)], CHECKLIST_HEADERS)
            if items
            else placeholder("(the planner's reply held no readable checklist; the verifier compares directly)")
        )
    rows = [
        [r.stage, r.shown_order, r.usage.prompt_tokens, r.usage.completion_tokens, round(r.seconds, 3)] for r in results
    ]
    raw = {f"{r.shown_order}/{r.stage}": r.text for r in results}
    return PageState(
        status_html=status(msg, kind="running", stages=stages, results=results, run=run),
        verdict_html=card(
            "pending", "Judging…", '<div class="dr-muted">The verdict appears when the last stage finishes.</div>'
        ),
        checklist=checklist,
        raw_html=raw_html(raw) if raw else '<p class="dr-muted">Waiting for the first stage…</p>',
        usage=table(rows, USAGE_HEADERS),
        progress=done / max(n, 1),
        progress_desc=f"stage {done + 1}/{n}: {current}",
    )


def final_page(v: Verdict, stages: Sequence[Stage], results: Sequence[StageResult], *, run: str = "") -> PageState:
    """The judged pair: verdict, checklist and findings, justification, per-stage usage, raw outputs, JSON."""
    seconds = stage_seconds(results)
    rank = {s.name: k for k, s in enumerate(stages)}
    usage_rows = []
    for key, u in v.usage.items():
        order, _, stage = key.partition("/")
        usage_rows.append(
            [stage, order, u.prompt_tokens, u.completion_tokens, round(seconds.get(stage, float("nan")), 3)]
        )
    usage_rows.sort(key=lambda r: (rank.get(r[0], len(rank)), r[1]))  # stage by stage, as they ran
    prompt_total = sum(u.prompt_tokens for u in v.usage.values())
    completion_total = sum(u.completion_tokens for u in v.usage.values())
    usage_rows.append(["total", "", prompt_total, completion_total, round(v.latency_s, 3)])
    parsed = "parsed" if v.parse_ok else "unparsable"
    msg = f"Done in {v.latency_s:.2f} s — judge <b>{esc(v.judge)}</b>, {len(v.orders)} order(s), verdict {parsed}."
    return PageState(
        status_html=status(msg, kind="done", stages=stages, results=results, run=run, finished=True),
        verdict_html=verdict_card(v),
        checklist=checklist_table(v, writes_checklist=any(s.produces == "checklist" for s in stages)),
        justification=justification(v),
        raw_html=raw_html(v.raw),
        usage=table(usage_rows, USAGE_HEADERS),
        verdict_json=v.model_dump(mode="json"),
        done=True,
        progress=1.0,
        progress_desc="done",
    )


def verdict_card(v: Verdict) -> str:
    """The winner and p(A better) as an A/B bar, with the per-order results; an unparsable verdict says so."""
    orders = ", ".join(f"{o.shown_order}: {o.winner or 'unparsable'}" for o in v.orders)
    meta = [f"judge: {esc(v.judge)}", f"orders: {esc(orders)}"]
    if v.consistent is not None:
        meta.append(f"consistent across orders: {'yes' if v.consistent else 'no'}")
    meta.append(f"{v.latency_s:.2f} s")
    meta_html = f'<div class="dr-meta">{" · ".join(meta)}</div>'
    if v.winner is None:
        body = (
            '<div class="dr-bar dr-bar-na"><span>p(A better): n/a</span></div>'
            '<div class="dr-note">The judge\'s reply had no readable verdict (no <code>Winner: [[A]]</code> / '
            "<code>&lt;answer&gt;</code>), so nothing is guessed. A random-weight test checkpoint "
            "(<code>deltarubric make-tiny-model</code>) always ends here; the raw model outputs below show what "
            "it wrote.</div>"
        )
        return card("unparsable", "No verdict: unparsable", body + meta_html)
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
            f'<div class="dr-bar-b" style="width:{(1 - pa) * 100:.1f}%">'
            f"<span>B {(1 - pa) * 100:.0f}%</span></div></div>"
            f'<div class="dr-pa">p(A better) = {pa:.3f}</div>'
        )
    return card(f"winner-{v.winner.lower()}", title, bar + meta_html)


def checklist_table(v: Verdict, *, writes_checklist: bool) -> pd.DataFrame:
    """Each checklist item with the verifier's finding and which response it favors. `writes_checklist`: whether
    the judge has a stage that produces a checklist (else the placeholder says this judge writes none)."""
    rows: list[list[Any]] = []
    for k in range(max(len(v.checklist), len(v.findings))):
        f = v.findings[k] if k < len(v.findings) else None
        item = v.checklist[k] if k < len(v.checklist) else (f.item if f else "")
        rows.append([k + 1, item or "—", f.text if f else "(no finding)", (f.favors or "?") if f else ""])
    if rows:
        return table(rows, CHECKLIST_HEADERS)
    if writes_checklist:
        return placeholder("(the planner's reply held no readable checklist)")
    return placeholder(f"(the {v.judge} judge writes no checklist)")


def justification(v: Verdict) -> str:
    text = v.rationale.strip() or "(none: the reply had no readable justification)"
    if v.task_type_pred:
        text += f"\n\nTask type named by the model: {v.task_type_pred}"
    return text
