"""Reading benchmark files from a local folder: JSON Lines, JSON arrays, and the data files shipped in data/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deltarubric.data import shipped

SHIPPED = shipped()


def read_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl, .json (array) or .parquet file; a blank line is skipped, a broken one names its line."""
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise ImportError("reading parquet needs pyarrow: pip install 'deltarubric[hub]'") from e
        return pq.read_table(path).to_pylist()
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return data if isinstance(data, list) else list(data.values())
    return json_lines(path)


def json_lines(path: Path) -> list[Any]:
    """One JSON value per line, lines split as Python's text files split them (as the benchmarks' own scripts read
    them; str.splitlines would also split inside strings at U+2028 and similar). Blank lines are skipped."""
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from e
    return out


def find_file(data_dir: Path, name: str, shipped: str | None = None) -> Path:
    """`name` inside the user's folder, else the copy shipped in data/ (metadata only; media stay the user's)."""
    for candidate in [data_dir / name] + ([SHIPPED / shipped] if shipped else []):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{data_dir / name} not found" + (" (and no shipped copy)" if shipped else ""))


def media_path(data_dir: Path, relative: str) -> str:
    return str(data_dir / relative)


def snapshot(repo: str, revision: str, patterns: tuple[str, ...]) -> Path:
    """A dataset repository at a pinned revision, downloaded once into the Hugging Face cache."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo, repo_type="dataset", revision=revision, allow_patterns=list(patterns)))
