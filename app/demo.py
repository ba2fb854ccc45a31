"""The Gradio demo's page: judge one pair in the browser and watch the stages finish.

`deltarubric demo` calls `launch_demo`. `build_demo` takes any judge factory, so tests run the page on the tiny
checkpoint. This module is the page alone (layout, CSS, examples, serving); the judging flow is
`app/demo_flow.py` (built on `Judge.astream`) and the HTML it shows comes from `app/demo_render.py`.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

try:
    import gradio as gr
except ImportError as e:  # the CLI prints this one line
    raise ImportError(f"the demo needs gradio ({e}); install it with: pip install 'deltarubric[demo]'") from e

from deltarubric.app.demo_flow import JudgeFactory, SharedBackendJudges, judge_events
from deltarubric.app.demo_render import CHECKLIST_HEADERS, USAGE_HEADERS, esc, idle_page
from deltarubric.data import shipped
from deltarubric.rm.config import JudgeConfig, SamplingConfig
from deltarubric.rubrics.prompts import available_methods

DEFAULT_EXAMPLES_DIR = shipped("examples")
MAX_UPLOAD_BYTES = 64 * 1024 * 1024  # larger files are refused by Gradio before they reach the judge
METHOD_CHOICES = [("DeltaRubric", "deltarubric"), ("Direct", "direct"), ("MSRL format", "msrl")]
TASK_LABELS = {
    "image_understanding": "Image understanding",
    "image_generation": "Image generation",
    "image_editing": "Image editing",
}

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

DEMO_CSS = """
.dr-status { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 10px 14px;
  background: var(--block-background-fill); }
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
.dr-verdict { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 12px 14px;
  background: var(--block-background-fill); }
.dr-verdict-title { font-size: 1.35em; font-weight: 700; margin-bottom: 8px; }
.dr-verdict-winner-a .dr-verdict-title { color: #1d4ed8; }
.dr-verdict-winner-b .dr-verdict-title { color: #b45309; }
.dr-verdict-unparsable { border-color: #d97706; background: #fff8eb; }
.dr-verdict-unparsable .dr-verdict-title { color: #b45309; }
.dr-verdict-error { color: #8a1010; }
.dr-verdict.dr-verdict-error { border-color: #d33; background: #fdecec; }
.dr-bar { display: flex; height: 28px; border-radius: 6px; overflow: hidden; font-weight: 600; color: white; }
.dr-bar-a { background: #2563eb; display: flex; align-items: center; padding-left: 8px; white-space: nowrap; }
.dr-bar-b { background: #f59e0b; display: flex; align-items: center; justify-content: flex-end; padding-right: 8px;
  white-space: nowrap; }
.dr-bar-na { background: repeating-linear-gradient(45deg, #e5e7eb, #e5e7eb 8px, #f3f4f6 8px, #f3f4f6 16px);
  color: #4b5563; align-items: center; padding-left: 10px; }
.dr-bar span { color: white; }
.dr-bar-na span { color: #374151; }
.dr-pa { margin-top: 4px; font-variant-numeric: tabular-nums; }
.dr-note { margin-top: 8px; font-size: 0.92em; }
.dr-meta { margin-top: 8px; color: var(--body-text-color-subdued); font-size: 0.88em; }
.dr-muted { color: var(--body-text-color-subdued); }
#checklist *, #usage * { font-family: var(--font) !important; font-variant-numeric: tabular-nums; }
.dr-raw { margin-bottom: 10px; }
.dr-raw-key { font-weight: 700; font-family: var(--font-mono); }
.dr-raw pre { white-space: pre-wrap; word-break: break-word; background: var(--background-fill-secondary);
  padding: 8px; border-radius: 6px; margin: 4px 0 0; max-height: 320px; overflow: auto; }
"""


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
    # Local engines run one judgment at a time; an OpenAI-compatible server takes as many as it is configured for.
    concurrency = cfg.compute.concurrency if cfg and cfg.compute.backend == "openai" else 1
    model_line = ""
    if cfg:
        shown = Path(cfg.model).name if Path(cfg.model).is_dir() else cfg.model  # a local checkpoint: its folder name
        model_line = (
            f'Model <code title="{esc(cfg.model)}">{esc(shown)}</code> on the '
            f"<code>{esc(cfg.compute.backend)}</code> backend."
        )

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
                idle = idle_page()
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

        async def stream(
            task_type: str, question: Any, images: dict[str, str | None], a: Any, b: Any, choices: tuple, progress: Any
        ) -> AsyncIterator[tuple]:
            m, sw, temp, mt, sd = choices
            states = judge_events(
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
            )
            async for state in states:
                if state.error:
                    gr.Warning(state.error)
                elif not state.done:
                    progress(state.progress, desc=state.progress_desc)
                yield state.outputs()

        async def judge_understanding(image, question, a, b, m, sw, temp, mt, sd, progress=gr.Progress()):
            images = {"Image": image}
            async for out in stream("image_understanding", question, images, a, b, (m, sw, temp, mt, sd), progress):
                yield out

        async def judge_generation(prompt, img_a, img_b, m, sw, temp, mt, sd, progress=gr.Progress()):
            images = {"Image A": img_a, "Image B": img_b}
            async for out in stream("image_generation", prompt, images, None, None, (m, sw, temp, mt, sd), progress):
                yield out

        async def judge_editing(source, instruction, img_a, img_b, m, sw, temp, mt, sd, progress=gr.Progress()):
            images = {"Source image": source, "Edited A": img_a, "Edited B": img_b}
            choices = (m, sw, temp, mt, sd)
            async for out in stream("image_editing", instruction, images, None, None, choices, progress):
                yield out

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
    """Launch on host:port, never with a public share link; returns the local URL. `block=False` returns at once.

    Gradio's own start-up lines are silenced (they suggest `share=True`, which this page never uses); the page's
    address is printed instead, unless `quiet`."""
    demo.queue(max_size=64)
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=True,
        quiet=True,
        show_error=False,
        max_file_size=MAX_UPLOAD_BYTES,
        css=DEMO_CSS,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        theme=gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]),
    )
    if not quiet:
        print(f"Demo running on {url} (no public link is created; stop with Ctrl+C)", file=sys.stderr, flush=True)
    if block:
        demo.block_thread()
    return url


def launch_demo(
    config: JudgeConfig, host: str = "127.0.0.1", port: int = 7860, *, examples_dir: str | Path | None = None
) -> None:
    """What `deltarubric demo` runs: load the model once, build the page, serve it until interrupted."""
    judges = SharedBackendJudges(config)
    serve_demo(build_demo(judges, examples_dir=examples_dir or DEFAULT_EXAMPLES_DIR), host, port)
