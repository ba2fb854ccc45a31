"""Golden test: every method's every stage, rendered for every task type, matches the committed text.

A prompt edit shows up here as a diff to review. After an intended edit, regenerate with
`UPDATE_GOLDEN=1 pytest tests/test_prompts.py` and commit the files under tests/golden/.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deltarubric.rubrics.prompts import (
    available_methods,
    check_method,
    load_method,
    media_marker,
    render,
    split_media,
)

GOLDEN = Path(__file__).parent / "golden"

# task type -> (context media count, candidate kind)
TASKS = {
    "image_understanding": (1, "text"),
    "image_generation": (0, "image"),
    "image_editing": (1, "image"),
    "video_understanding": (1, "text"),
    "video_generation": (0, "video"),
    "text": (0, "text"),
}


def variables(task: str, checklist: list[str]) -> tuple[dict, int]:
    n_context, kind = TASKS[task]
    words = load_method("direct").words
    markers = iter(media_marker(i) for i in range(10))
    context = [next(markers) for _ in range(n_context)]
    a, b = (next(markers), next(markers)) if kind != "text" else ("Two cats.", "Three cats.")
    v = dict(
        task_type=task,
        question="How many cats?",
        reference=None,
        noun=words["noun"][kind],
        media_word=words["media_word"][task],
        context=context,
        a=a,
        b=b,
        checklist=checklist,
    )
    return v, n_context + 2 * (kind != "text")


def show(text: str) -> str:
    """Rendered text with markers written as <media N>, the way the golden files store it."""
    return "".join(x if isinstance(x, str) else f"<media {x}>" for x in split_media(text))


CASES = [(m, s.name, t) for m in available_methods() for s in load_method(m).stages for t in load_method(m).task_types]


@pytest.mark.parametrize("method, stage, task", CASES)
def test_rendered_prompt_matches_golden(method, stage, task):
    spec = load_method(method)
    index = [s.name for s in spec.stages].index(stage)
    v, n_media = variables(task, ["Are there two cats?", "Is the left cat orange?"])
    text = render(spec.stages[index].user, v)
    # The first stage shows each medium once, in order; later stages extend its conversation and show none again.
    assert [x for x in split_media(text) if isinstance(x, int)] == (list(range(n_media)) if index == 0 else [])
    got = f"SYSTEM:\n{spec.system}\n\nUSER:\n{show(text)}\n"
    path = GOLDEN / f"{method}.{stage}.{task}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(got)
    assert path.is_file(), f"no golden file {path.name}: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert got == path.read_text()


def test_verifier_without_checklist_says_so():
    verifier = load_method("deltarubric").stages[1]
    v, _ = variables("image_understanding", [])
    assert "No usable checklist" in render(verifier.user, v)


def test_unknown_method_lists_the_known_ones():
    listing = "available: deltarubric, direct, genai_bench_official, mmrb_official, msrl, vlrb_official"
    with pytest.raises(ValueError, match=listing):
        load_method("best")
    with pytest.raises(ValueError, match=listing):
        check_method("best")
    assert check_method("msrl") == "msrl"


def test_every_stage_declares_what_it_produces():
    products = {m: [s.produces for s in load_method(m).stages] for m in available_methods()}
    assert products["deltarubric"] == ["checklist", "verdict"]
    assert all(p[-1] == "verdict" and p.count("verdict") == 1 for p in products.values())


def write_method(tmp_path: Path, stages: str, extra: str = "") -> Path:
    (tmp_path / "_words.yaml").write_text("noun: {}\nmedia_word: {image_understanding: image}\n")
    (tmp_path / "m.yaml").write_text(f"name: m\nversion: 1\nsystem: s\n{extra}stages:\n{stages}")
    return tmp_path


@pytest.mark.parametrize(
    "stages, extra, message",
    [
        ("  - {name: judge, parser: verdict, user: u}\n", "", r"stage 'judge'\.produces: Field required"),
        (
            "  - {name: judge, parser: verdict, produces: verdcit, user: u}\n",
            "",
            r"stage 'judge'\.produces: Input should be 'checklist' or 'verdict'",
        ),
        (
            "  - {name: plan, parser: checklist, produces: verdict, user: u}\n",
            "",
            "stage 'plan': parser 'checklist' reads a checklist, but the stage declares produces: verdict",
        ),
        ("  - {name: judge, parser: vote, produces: verdict, user: u}\n", "", r"unknown parser 'vote'; available: "),
        (
            "  - {name: judge, parser: verdict, produces: verdict, user: u}\n"
            "  - {name: plan, parser: checklist, produces: checklist, user: u}\n",
            "",
            "the last stage, and only it, must declare produces: verdict",
        ),
        ("  - {name: judge, parser: verdict, produces: verdict, usr: u}\n", "", r"stage 'judge'\.usr: unknown key"),
        ("  - {name: judge, parser: verdict, produces: verdict, user: u}\n", "stage: 2\n", "stage: unknown key"),
    ],
)
def test_prompt_file_is_checked_when_it_loads(tmp_path, stages, extra, message):
    folder = write_method(tmp_path, stages, extra)
    with pytest.raises(ValueError, match=message) as e:
        load_method("m", folder)
    assert str(e.value).startswith(f"{folder / 'm.yaml'}: ")


def test_misspelt_variable_fails_loudly(tmp_path):
    (tmp_path / "_words.yaml").write_text("noun: {}\nmedia_word: {}\n")
    (tmp_path / "bad.yaml").write_text(
        "name: bad\nversion: 1\nsystem: s\nstages:\n"
        "  - {name: judge, parser: verdict, produces: verdict, user: '{{ questoin }}'}\n"
    )
    with pytest.raises(Exception, match="questoin"):
        render(load_method("bad", tmp_path).stages[0].user, {"question": "q"})


def test_hash_covers_the_partials(tmp_path):
    for f in ("direct.yaml", "_pair.j2", "_criteria.j2", "_words.yaml", "_judge_system.j2"):
        (tmp_path / f).write_text((GOLDEN.parent.parent / "rubrics" / "prompts" / f).read_text())
    before = load_method("direct", tmp_path).sha256
    (tmp_path / "_criteria.j2").write_text("changed")
    load_method.cache_clear()
    assert load_method("direct", tmp_path).sha256 != before
