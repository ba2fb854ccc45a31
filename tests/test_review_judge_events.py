"""Review of the stage-event stream and what was built on it: regressions found in `Judge.astream`, the judge-name
check and the prompt-file checks, each kept as a regression test."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from deltarubric.rm.config import JudgeConfig
from deltarubric.rubrics.prompts import available_methods, check_method, load_method

# ---------------------------------------------------------------------------------------------- judge names


@pytest.mark.parametrize("name", ["../prompts/direct", "./direct", "_words"])
def test_a_judge_name_is_one_of_the_listed_methods(name):
    """`check_method` is the one judge-name check: a name that is not in the list of judges is refused with that
    list, even when it happens to lead to a YAML file (a relative path, a shared part of the prompts)."""
    assert name not in available_methods()
    with pytest.raises(ValueError, match=r"unknown judge .*; available: deltarubric, direct"):
        check_method(name)
    with pytest.raises(ValidationError, match="unknown judge"):
        JudgeConfig(model="x", judge=name)


# ------------------------------------------------------------------------------------------- prompt files


def write_prompts(folder: Path, body: str) -> Path:
    (folder / "_words.yaml").write_text("noun: {}\nmedia_word: {image_understanding: image}\n")
    (folder / "m.yaml").write_text(body)
    return folder


def test_two_stages_with_one_name_are_refused(tmp_path):
    """Raw outputs and usage are keyed '<order>/<stage>': two stages of one name would overwrite each other's text
    in the verdict, so the file is refused when it loads."""
    folder = write_prompts(
        tmp_path,
        "name: m\nversion: 1\nsystem: s\nstages:\n"
        "  - {name: judge, parser: checklist, produces: checklist, user: u}\n"
        "  - {name: judge, parser: verdict, produces: verdict, user: v}\n",
    )
    with pytest.raises(ValueError, match="stage names must differ") as e:
        load_method("m", folder)
    assert str(e.value).startswith(f"{folder / 'm.yaml'}: ")


def test_a_prompt_file_that_is_not_yaml_is_a_value_error_naming_it(tmp_path):
    """A broken prompt file is a ValueError naming the file, as every other problem in it is (pydantic turns only
    ValueErrors into the config's validation error; the CLI prints those as one line)."""
    folder = write_prompts(tmp_path, "name: m\nstages: [\n  - {name: judge\n")
    with pytest.raises(ValueError, match=r"m\.yaml: not valid YAML") as e:
        check_method("m", folder)
    assert str(folder / "m.yaml") in str(e.value)
