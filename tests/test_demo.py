"""The Gradio demo: its rendering (app/demo_render.py) and flow (app/demo_flow.py) without a browser, then the page
(app/demo.py) over HTTP and in headless Chromium.

Browser set-up (README, "Tests"): `pip install "gradio>=5,<7" playwright -c constraints-cpu.txt` and Debian's
`apt-get install -y chromium`. Playwright drives /usr/bin/chromium; never run `playwright install` (it downloads a
browser). Without them these tests skip locally and FAIL when the CI environment variable is set.
Set DEMO_SCREENSHOT=path.png to also keep the end-to-end screenshot there (docs/demo.png was made that way).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from deltarubric.rm.config import JudgeConfig
from tests.conftest import free_port, make_image
from tests.scripted import ScriptedBackend, user_text

INSTALL = (
    "install the demo test tools: pip install 'gradio>=5,<7' playwright -c constraints-cpu.txt, and Debian's "
    "Chromium: apt-get install -y chromium (as root). Do not run 'playwright install': it downloads a browser and "
    "cannot work offline."
)
EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "examples"
# gradio 6.31's queue calls pandas options that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def missing(what: str, module_level: bool = False, hint: str = INSTALL) -> None:
    """Skip locally; under CI (the CI environment variable set) fail, saying how to get what is missing."""
    message = f"{what} is not available; {hint}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=module_level)


try:
    import gradio  # noqa: F401
except ImportError:
    missing("gradio", module_level=True)

from deltarubric.app import demo_render as render  # noqa: E402
from deltarubric.app.demo import JudgeImage, build_demo, serve_demo  # noqa: E402
from deltarubric.app.demo_flow import SharedBackendJudges, judge_events  # noqa: E402
from deltarubric.rm.judge import StageResult  # noqa: E402
from deltarubric.rm.types import OrderResult, Usage, Verdict  # noqa: E402
from deltarubric.rubrics.parsing import parse_checklist  # noqa: E402
from deltarubric.rubrics.prompts import load_method  # noqa: E402

PLAN = "Generated Checklist:\n1. How many cats are in the image?\n2. Is there a grey cat?"
VERDICT = (
    "Analysis:\n1. The image shows two cats. Response A agrees. Response B does not. Favors: A\n"
    "2. There is no grey cat. Response A agrees. Response B does not. Favors: A\n"
    "Justification: A counts the cats correctly; B invents a grey cat.\nWinner: [[A]]"
)


def scripted_judges(**config) -> SharedBackendJudges:
    backend = ScriptedBackend(lambda conv: PLAN if "Planner" in user_text(conv) else VERDICT, confidence=0.8)
    return SharedBackendJudges(JudgeConfig(model="scripted", compute={"backend": "openai"}, **config), backend=backend)


def run(factory, task="image_understanding", question="How many cats?", images=None, a="Two.", b="Three.", **choices):
    images = images if images is not None else {"Image": str(EXAMPLES / "cats.png")}

    async def collect() -> list:
        return [state async for state in judge_events(factory, task, question, images, a, b, **choices)]

    return asyncio.run(collect())


# ---------------------------------------------------------------------------------------------------------------
# Rendering: pure functions of hand-made data

DELTARUBRIC = load_method("deltarubric").stages


def stage_result(stage: str, produces: str, text: str, order: str = "AB", seconds: float = 1.25) -> StageResult:
    parsed = parse_checklist(text)
    return StageResult("x", stage, produces, order, "prompt", text, parsed, Usage(prompt_tokens=7), seconds)


def test_stepper_marks_done_running_waiting_and_skipped():
    planned = [stage_result("planner", "checklist", PLAN)]
    steps = render.stepper(DELTARUBRIC, planned)
    assert 'data-stage="planner" data-state="done"' in steps and "1.25 s" in steps
    assert 'data-stage="verifier" data-state="running"' in steps
    assert 'data-stage="verifier" data-state="waiting"' in render.stepper(DELTARUBRIC, planned, finished=True)
    assert 'data-stage="verifier" data-state="skipped"' in render.stepper(DELTARUBRIC, planned, failed=True)


def test_running_page_shows_the_checklist_its_stage_produced():
    page = render.running_page("deltarubric", DELTARUBRIC, [stage_result("planner", "checklist", PLAN)], run="r1")
    assert page.checklist["checklist item"].tolist() == ["How many cats are in the image?", "Is there a grey cat?"]
    assert 'data-run="r1"' in page.status_html and page.progress == 0.5 and not page.done
    assert page.usage.values.tolist() == [["planner", "AB", 7, 0, 1.25]]
    empty = render.running_page("deltarubric", DELTARUBRIC, [stage_result("planner", "checklist", "nothing")])
    assert "no readable checklist" in empty.checklist["checklist item"][0]
    direct = render.running_page("direct", load_method("direct").stages, [])
    assert direct.checklist["checklist item"].tolist() == ["(judging…)"]


def test_verdict_card_for_each_outcome():
    order = OrderResult(shown_order="AB", winner="A", parse_ok=True)
    won = render.verdict_card(Verdict(winner="A", p_a=0.75, orders=[order], parse_ok=True))
    assert "A is better" in won and 'data-pa="0.7500"' in won and "A 75%" in won
    split = Verdict(
        winner="tie", consistent=False, orders=[order, OrderResult(shown_order="BA", winner="B", parse_ok=True)]
    )
    assert "the two orders disagree" in render.verdict_card(split) and "p(A better): n/a" in render.verdict_card(split)
    unreadable = render.verdict_card(Verdict(orders=[OrderResult(shown_order="AB", winner=None, parse_ok=False)]))
    assert "No verdict: unparsable" in unreadable and "AB: unparsable" in unreadable


def test_model_text_is_escaped():
    html = render.raw_html({"AB/judge": "<script>alert(1)</script> & [[A]]"})
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp; [[A]]" in html
    page = render.error_page("bad <b>input</b>")
    assert "<b>input</b>" not in page.status_html and page.error == "bad <b>input</b>" and page.done


def test_checklist_table_names_what_the_judge_writes():
    assert (
        "direct judge writes no checklist"
        in render.checklist_table(Verdict(judge="direct"), writes_checklist=False)["checklist item"].tolist()[0]
    )
    assert "no readable checklist" in render.checklist_table(Verdict(), writes_checklist=True)["checklist item"][0]


# ---------------------------------------------------------------------------------------------------------------
# The flow: judge_events over Judge.astream, no browser


def test_deltarubric_streams_the_checklist_before_the_verdict():
    states = run(scripted_judges(), method="deltarubric")
    assert [s.done for s in states] == [False, False, True]
    started, planned, final = states
    assert 'data-stage="planner" data-state="running"' in started.status_html
    assert 'data-stage="planner" data-state="done"' in planned.status_html
    assert 'data-stage="verifier" data-state="running"' in planned.status_html
    assert planned.checklist["checklist item"].tolist() == ["How many cats are in the image?", "Is there a grey cat?"]
    assert set(planned.checklist["finding"]) == {"verifying…"}
    assert planned.usage["stage"].tolist() == ["planner"] and "AB/planner" in planned.raw_html

    assert final.error is None
    assert "A is better" in final.verdict_html and 'data-pa="0.8000"' in final.verdict_html
    assert final.checklist["favors"].tolist() == ["A", "A"]
    assert final.checklist["finding"][0].startswith("The image shows two cats")
    assert final.justification == "A counts the cats correctly; B invents a grey cat."
    assert final.usage["stage"].tolist() == ["planner", "verifier", "total"]
    assert final.usage["latency (s)"].iloc[-1] >= 0
    assert set(final.verdict_json["raw"]) == {"AB/planner", "AB/verifier"}
    assert len(final.outputs()) == 7


def test_each_method_and_swap_reach_the_judge():
    factory = scripted_judges()
    for method, stages in (("direct", ["judge"]), ("msrl", ["judge"]), ("deltarubric", ["planner", "verifier"])):
        final = run(factory, method=method, swap=True, max_tokens=7, seed=3, temperature=0.5)[-1]
        assert final.verdict_json["judge"] == method
        assert sorted(final.verdict_json["raw"]) == sorted(f"{o}/{s}" for o in ("AB", "BA") for s in stages)
        assert final.usage["order"].tolist() == ["AB", "BA"] * len(stages) + [""]
        assert final.usage["stage"].tolist() == [s for s in stages for _ in "AB"] + ["total"]


def test_unknown_judge_is_a_message_listing_the_judges():
    final = run(scripted_judges(), method="best")[-1]
    assert final.error.startswith("Cannot build the judge: ValueError: unknown judge 'best'; available: deltarubric")


def test_judges_share_one_backend_and_take_the_page_settings(tiny_config, tiny_backend):
    judges = SharedBackendJudges(tiny_config, backend=tiny_backend)
    a = judges(judge="direct", swap=True, temperature=0.7, max_tokens=5, seed=9)
    b = judges(judge="deltarubric", swap=False, temperature=0.0, max_tokens=6, seed=0)
    assert a.backend is b.backend is tiny_backend
    assert (
        a.config.judge,
        a.config.swap,
        a.config.sampling.temperature,
        a.config.sampling.max_tokens,
        a.config.sampling.seed,
    ) == ("direct", True, 0.7, 5, 9)
    assert b.config.model == tiny_config.model and b.config.sampling.top_logprobs == tiny_config.sampling.top_logprobs


@pytest.mark.parametrize(
    ("task", "question", "images", "a", "b", "expected"),
    [
        ("image_understanding", "How many?", {"Image": None}, "Two.", "Three.", "Image is missing"),
        (
            "image_understanding",
            "How many?",
            {"Image": str(EXAMPLES / "cats.png")},
            "Two.",
            "  ",
            "Response B is empty",
        ),
        (
            "image_understanding",
            "",
            {"Image": str(EXAMPLES / "cats.png")},
            "Two.",
            "Three.",
            "question / prompt / instruction is empty",
        ),
        (
            "image_generation",
            "a red circle",
            {"Image A": str(EXAMPLES / "gen_a.png"), "Image B": None},
            None,
            None,
            "Image B is missing",
        ),
        (
            "image_editing",
            "make it night",
            {"Source image": None, "Edited A": None, "Edited B": "x.png"},
            None,
            None,
            "Source image and Edited A are missing",
        ),
    ],
)
def test_bad_form_input_is_one_clear_message(task, question, images, a, b, expected):
    states = run(scripted_judges(), task, question, images, a, b)
    assert len(states) == 1 and states[0].done
    assert expected in states[0].error and expected in states[0].status_html
    assert "Traceback" not in states[0].status_html and "Could not judge" in states[0].verdict_html


def test_bad_media_is_the_judges_error_message(tmp_path):
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    final = run(scripted_judges(), images={"Image": str(corrupt)})[-1]
    assert final.error == "Image (broken.png): not a readable image (UnidentifiedImageError)"
    assert str(corrupt) not in final.status_html

    huge = make_image(tmp_path / "huge.png", size=(400, 300))
    final = run(
        scripted_judges(max_input_pixels=50_000),
        "image_generation",
        "a disc",
        {"Image A": str(EXAMPLES / "gen_a.png"), "Image B": str(huge)},
        None,
        None,
    )[-1]
    assert "Image B (huge.png): 400x300 = 120000 pixels exceeds the limit of 50000" in final.error


def test_corrupt_upload_reaches_the_judge_instead_of_failing_in_gradio(tmp_path):
    from gradio.data_classes import ImageData

    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"garbage")
    component = JudgeImage(type="filepath", image_mode=None)
    assert component.get_block_name() == "image"
    assert component.preprocess(ImageData(path=str(corrupt), orig_name="broken.png")) == str(corrupt)


def test_settings_and_backend_failures_are_messages():
    bad = run(scripted_judges(), max_tokens=0)[-1]
    assert bad.error.startswith("Invalid judge settings") and "max_tokens" in bad.error

    failing = SharedBackendJudges(
        JudgeConfig(model="x", compute={"backend": "openai"}),
        backend=ScriptedBackend(lambda conv: RuntimeError("engine fell over")),
    )
    final = run(failing, method="direct")[-1]
    assert final.error == "backend error in stage 'judge': engine fell over"

    def broken_factory(**_):
        raise RuntimeError("no GPU left")

    assert run(broken_factory)[-1].error == "Cannot build the judge: RuntimeError: no GPU left"


def test_tiny_model_shows_the_unparsable_state(tiny_config, tiny_backend):
    states = run(SharedBackendJudges(tiny_config, backend=tiny_backend), method="deltarubric", swap=True, max_tokens=6)
    final = states[-1]
    assert final.error is None and final.done
    assert "No verdict: unparsable" in final.verdict_html and "p(A better): n/a" in final.verdict_html
    assert sorted(final.verdict_json["raw"]) == ["AB/planner", "AB/verifier", "BA/planner", "BA/verifier"]
    assert final.usage["completion tokens"].iloc[-1] == sum(
        u["completion_tokens"] for u in final.verdict_json["usage"].values()
    )
    assert "(the planner's reply held no readable checklist)" in final.checklist["checklist item"].tolist()


def test_page_has_named_api_endpoints(tiny_config, tiny_backend):
    demo = build_demo(SharedBackendJudges(tiny_config, backend=tiny_backend), examples_dir=EXAMPLES)
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"judge_understanding", "judge_generation", "judge_editing"} <= names
    assert demo.analytics_enabled is False
    assert "No judgment yet" in render.idle_page().verdict_html


def test_launch_demo_loads_one_backend_and_serves_on_the_given_address(monkeypatch, tiny_config, tiny_backend):
    import deltarubric.app.demo as demo_module
    import deltarubric.app.demo_flow as flow_module

    built, served = [], []
    monkeypatch.setattr(flow_module, "make_backend", lambda config: built.append(config) or tiny_backend)
    monkeypatch.setattr(demo_module, "serve_demo", lambda demo, host, port: served.append((demo, host, port)))
    demo_module.launch_demo(tiny_config, "127.0.0.1", 7999)
    assert built == [tiny_config]
    demo, host, port = served[0]
    assert (host, port) == ("127.0.0.1", 7999) and isinstance(demo, gradio.Blocks)


def test_cli_demo_command(monkeypatch, tiny_model_dir):
    from typer.main import get_command
    from typer.testing import CliRunner

    import deltarubric.app.demo as demo_module
    from deltarubric.cli.main import app as cli

    if "demo" not in get_command(cli).commands:
        missing("the 'deltarubric demo' command", hint="add it to cli/demo.py (it calls app.demo.launch_demo)")
    calls = []
    monkeypatch.setattr(demo_module, "launch_demo", lambda config, host, port, **kw: calls.append((config, host, port)))
    args = [
        "demo",
        "-m",
        str(tiny_model_dir),
        "--judge",
        "direct",
        "--swap",
        "--max-tokens",
        "9",
        "--host",
        "127.0.0.1",
        "--port",
        "7861",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    config, host, port = calls[0]
    assert (config.model, config.judge, config.swap, config.sampling.max_tokens) == (
        str(tiny_model_dir),
        "direct",
        True,
        9,
    )
    assert (host, port) == ("127.0.0.1", 7861)


# ---------------------------------------------------------------------------------------------------------------
# The page over HTTP (gradio_client) and in headless Chromium


@pytest.fixture(scope="module")
def demo_url(tiny_model_dir, tiny_backend):
    config = JudgeConfig(model=str(tiny_model_dir), sampling={"max_tokens": 8})
    demo = build_demo(SharedBackendJudges(config, backend=tiny_backend), examples_dir=EXAMPLES)
    url = serve_demo(demo, "127.0.0.1", free_port(), block=False, quiet=True)
    assert url.startswith("http://127.0.0.1:")
    yield url
    demo.close()


def test_serving_prints_the_address_and_no_share_hint(capfd):
    demo = build_demo(scripted_judges(), examples_dir=None)
    url = serve_demo(demo, "127.0.0.1", free_port(), block=False)
    try:
        out, err = capfd.readouterr()
        assert f"Demo running on {url}" in err and "no public link" in err
        assert "share=True" not in out + err and "public link, set" not in out + err
    finally:
        demo.close()


def test_api_endpoint_answers_a_client(demo_url, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(demo_url, verbose=False)
    image = make_image(tmp_path / "api.png")
    out = client.predict(
        handle_file(str(image)),
        "How many shapes?",
        "Two.",
        "Three.",
        "deltarubric",
        True,
        0.0,
        6,
        0,
        api_name="/judge_understanding",
    )
    verdict = out[-1]
    assert verdict["judge"] == "deltarubric" and verdict["error"] is None
    assert sorted(verdict["raw"]) == ["AB/planner", "AB/verifier", "BA/planner", "BA/verifier"]
    assert all(u["completion_tokens"] <= 6 for u in verdict["usage"].values())


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright (Python package)")
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        missing(f"Chromium ({CHROMIUM})")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, demo_url):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(demo_url)
    pg.wait_for_selector("#judge-understanding")
    yield pg
    context.close()


def fill_pair(page, image: Path, question="How many shapes are there?", a="Two shapes.", b="Three shapes.") -> None:
    page.set_input_files("#u-image input[type=file]", str(image))
    page.wait_for_selector("#u-image img")
    page.fill("#u-question textarea", question)
    page.fill("#u-a textarea", a)
    page.fill("#u-b textarea", b)


def judge_and_wait(page, button="#judge-understanding", until="done") -> str:
    """Click Judge and wait for this judgment's final status (each judgment has its own data-run id)."""
    before = page.get_attribute("#status .dr-status", "data-run")
    page.click(button)
    page.wait_for_function(
        "([before, kind]) => { const s = document.querySelector('#status .dr-status');"
        " return s !== null && s.dataset.run !== before && s.dataset.kind === kind; }",
        arg=[before, until],
    )
    return page.inner_text("#status")


def test_judge_a_pair_in_the_browser(page, tmp_path):
    fill_pair(page, make_image(tmp_path / "scene.png", size=(128, 96), seed=2))
    page.click("#judge-method label:has-text('DeltaRubric')")
    status = judge_and_wait(page)
    assert "planner" in status and "verifier" in status and "Done in" in status

    verdict = page.inner_text("#verdict")
    assert "No verdict: unparsable" in verdict and "p(A better): n/a" in verdict
    checklist = page.inner_text("#checklist")
    assert "checklist item" in checklist and "favors" in checklist and "no readable checklist" in checklist
    usage = page.inner_text("#usage")
    assert all(word in usage for word in ("planner", "verifier", "total", "prompt tokens"))

    page.click("#raw-panel button")
    page.wait_for_selector("#raw [data-key='AB/verifier']", state="visible")
    assert "AB/planner" in page.inner_text("#raw")

    shot = tmp_path / "demo.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("DEMO_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["DEMO_SCREENSHOT"])


def test_bad_input_shows_a_message_and_the_page_keeps_working(page, tmp_path):
    page.fill("#u-question textarea", "How many shapes?")
    page.fill("#u-a textarea", "Two.")
    page.fill("#u-b textarea", "Three.")
    assert "Image is missing" in judge_and_wait(page, until="error")
    page.wait_for_selector(".toast-body:has-text('Image is missing')")

    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
    page.set_input_files("#u-image input[type=file]", str(corrupt))
    page.wait_for_selector("#u-image img")  # the browser cannot draw it, but the upload is in place
    assert "Image (broken.png): not a readable image" in judge_and_wait(page, until="error")

    fill_pair(page, make_image(tmp_path / "ok.png"), b=" ")
    assert "Response B is empty" in judge_and_wait(page, until="error")
    assert "Could not judge" in page.inner_text("#verdict")

    page.fill("#u-b textarea", "Three shapes.")
    assert "Done in" in judge_and_wait(page)
    assert "No verdict: unparsable" in page.inner_text("#verdict")


def test_examples_fill_the_generation_and_editing_tabs(page):
    page.click("button[role=tab]:has-text('Image generation')")
    page.click("#g-examples tbody tr >> nth=0")
    page.wait_for_selector("#g-b img")
    assert "Done in" in judge_and_wait(page, "#judge-generation")

    page.click("button[role=tab]:has-text('Image editing')")
    page.click("#e-examples tbody tr >> nth=0")
    page.wait_for_selector("#e-b img")
    page.click("#judge-method label:has-text('MSRL')")
    page.check("#judge-swap input")
    status = judge_and_wait(page, "#judge-editing")
    assert "judge msrl, 2 order(s)" in status
    assert "AB: unparsable, BA: unparsable" in page.inner_text("#verdict")
