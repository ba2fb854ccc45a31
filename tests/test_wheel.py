"""The built wheel, installed as a user installs it (not editable), puts only `deltarubric` at the top of
site-packages, and the commands work from it with the shipped data it carries, the checkout out of reach.

The wheel is built from a copy of the files git does not ignore, installed into a fresh venv that sees this venv's
dependencies through a .pth file (a folder of links to them, without this venv's editable deltarubric), and every
command runs from an empty temporary folder.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _source_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [p for p in listed.split("\0") if p and (ROOT / p).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for rel in _source_files():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, src / rel)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
        check=True,
        capture_output=True,
    )
    (built,) = dist.glob("deltarubric-*.whl")
    return built


class Installed:
    """A fresh venv holding the wheel, whose commands run in `cwd`, an empty folder outside the checkout."""

    def __init__(self, root: Path) -> None:
        self.venv = root / "venv"
        self.bin = self.venv / "bin"
        self.site = Path(sysconfig.get_path("purelib", vars={"base": str(self.venv), "platbase": str(self.venv)}))
        self.cwd = root / "work"
        self.cwd.mkdir()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
        return {
            **env,
            "PATH": f"{self.bin}{os.pathsep}{env['PATH']}",
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }

    def run(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(list(argv), cwd=self.cwd, env=self.env(), capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        return proc


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Installed, set[str]]:
    """The venv with the wheel installed, and what the install added at the top of its site-packages."""
    inst = Installed(tmp_path_factory.mktemp("installed"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(inst.venv)], check=True)
    before = {p.name for p in inst.site.iterdir()}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(inst.bin / "python"), "install", "-q", "--no-deps", "--no-index"]
        + [str(wheel)],
        check=True,
        capture_output=True,
    )
    added = {p.name for p in inst.site.iterdir()} - before
    # This venv's dependencies, seen through links: everything but its own (editable) deltarubric.
    deps = inst.venv.parent / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_path("purelib")).iterdir():
        if not entry.name.startswith(("deltarubric", "__editable__")) and entry.name != "__pycache__":
            (deps / entry.name).symlink_to(entry)
    (inst.site / "test-dependencies.pth").write_text(f"{deps}\n")
    return inst, added


def test_wheel_holds_every_package_and_the_shipped_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    missing = []
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.relative_to(ROOT / folder)
            if "__pycache__" not in rel.parts and f"{package.replace('.', '/')}/{rel.as_posix()}" not in names:
                missing.append(str(init.relative_to(ROOT)))
    assert not missing, f"packages left out of the wheel (add them to pyproject's packages): {missing}"
    for shipped in (ROOT / "data").rglob("*"):
        if shipped.is_file() and shipped.suffix in {".png", ".jsonl", ".md"}:
            assert f"deltarubric/data/{shipped.relative_to(ROOT / 'data').as_posix()}" in names
    assert any(n.startswith("deltarubric/rubrics/prompts/") and n.endswith(".yaml") for n in names)


def test_only_deltarubric_lands_at_the_top_of_site_packages(installed: tuple[Installed, set[str]]) -> None:
    inst, added = installed
    (metadata,) = added - {"deltarubric"}  # exactly one other entry: the wheel's metadata
    assert "deltarubric" in added and fnmatch.fnmatch(metadata, "deltarubric-*.dist-info"), added
    where = inst.run(
        "python",
        "-c",
        "import deltarubric, deltarubric.rm; print(list(deltarubric.__path__)); print(deltarubric.rm.__file__)",
    ).stdout.splitlines()
    # Imported from the venv, and only from there: the checkout is not on the path.
    assert where[0] == repr([str(inst.site / "deltarubric")]) and where[1].startswith(str(inst.site))


def test_commands_work_from_the_wheel(installed: tuple[Installed, set[str]]) -> None:
    inst, _ = installed
    assert "make-tiny-model" in inst.run("deltarubric", "--help").stdout
    for command in (["judge"], ["serve"], ["demo"], ["eval", "run"], ["data", "dedup"], ["train", "grpo"]):
        assert "--help" in inst.run("deltarubric", *command, "--help").stdout
    assert "make-tiny-model" in inst.run("python", "-m", "deltarubric.cli", "--help").stdout
    # Registries find their modules inside the installed package.
    assert "vl-rewardbench" in inst.run("deltarubric", "eval", "list").stdout
    assert "helpsteer3" in inst.run("deltarubric", "data", "list").stdout

    inst.run("deltarubric", "make-tiny-model", "tiny")
    image = inst.run("python", "-c", "from deltarubric.data import shipped; print(shipped('examples', 'cats.png'))")
    image_path = image.stdout.strip()
    assert image_path.startswith(str(inst.site)) and Path(image_path).is_file()
    judged = inst.run(
        "deltarubric",
        "judge",
        "-m",
        "tiny",
        "--image",
        image_path,
        "-q",
        "How many cats?",
        "--response-a",
        "Two.",
        "--response-b",
        "Three.",
        "--max-tokens",
        "8",
        "--json",
    )
    verdict = json.loads(judged.stdout)
    assert verdict["error"] is None and verdict["raw"], verdict  # judged (random weights: gibberish, no winner)


def test_shipped_benchmark_annotations_are_read_from_the_wheel(installed: tuple[Installed, set[str]]) -> None:
    """With a media folder that holds no annotations, the benchmarks' loaders fall back on the shipped copies."""
    inst, _ = installed
    (inst.cwd / "no-annotations").mkdir()
    pair = {"id": "p1", "task_type": "text", "question": "Is the sky green?", "a": "No.", "b": "Yes.", "label": "A"}
    (inst.cwd / "pairs.jsonl").write_text(json.dumps(pair) + "\n")
    out = inst.run(
        "deltarubric",
        "data",
        "dedup",
        "pairs.jsonl",
        "--against",
        "vl-rewardbench=no-annotations",
        "mm-rlhf-rewardbench=no-annotations",
        "--out",
        "clean",
    ).stdout
    assert "vl-rewardbench: 1250 items" in out, out
    assert "mm-rlhf-rewardbench: " in out and "kept 1 of 1" in out, out
