"""Drop training pairs that are benchmark items: the same image (a perceptual hash, so re-encoded and resized copies
count) or the same question and responses (after normalisation, in either order).

Benchmark items come from the benchmarks' own loaders (`deltarubric.eval.registry`), from the folder the user names
(`NAME=DIR`) or the pinned hub copy in the Hugging Face cache, so whatever `eval run` would score is what is checked.
Pair files are read line by line; kept lines are copied unchanged except for relative media paths, which are rewritten
to stay valid from the output folder. A JSON report says what was dropped, why, and what could not be checked
(missing or near-uniform images, videos).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from deltarubric.pairdata.imagehash import DHASH_MAX, PHASH_MAX, HashIndex, ImageHash, hash_file, hash_image
from deltarubric.pairdata.pairfile import atomic_lines, read_lines, relocate, write_row
from deltarubric.rm.types import JudgeRequest

REPORT_NAME = "dedup_report.json"
_PLACEHOLDER = re.compile(r"<(?:image|video)>", re.IGNORECASE)  # LLaVA-style tokens some sources keep in the text
_NON_WORD = re.compile(r"[\W_]+")
_URL = ("http://", "https://", "data:", "file://")


def normalise(text: str) -> str:
    """Case, Unicode width/compatibility forms, punctuation, whitespace and <image> tokens do not make a new item."""
    text = _PLACEHOLDER.sub(" ", unicodedata.normalize("NFKC", text).casefold())
    return _NON_WORD.sub(" ", text).strip()


def text_key(request: JudgeRequest) -> str | None:
    """A digest of the normalised question and the two text responses, order-insensitive; None for media candidates."""
    if request.a.text is None or request.b.text is None:
        return None
    parts = [normalise(request.question), *sorted((normalise(request.a.text), normalise(request.b.text)))]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def request_media(request: JudgeRequest) -> tuple[list[str | Image.Image], int]:
    """(images of the request: context images, then candidate images; number of videos, which are not checked)."""
    images = [*request.images, *(c.image for c in (request.a, request.b) if c.image is not None)]
    videos = len(request.videos) + sum(c.video is not None for c in (request.a, request.b))
    return images, videos


@dataclass
class MediaCounts:
    """What could not be checked by image: reported so a clean result is not mistaken for a complete one."""

    hashed: int = 0
    missing: int = 0
    uniform: int = 0
    unreadable: int = 0
    videos: int = 0
    remote: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


class Hasher:
    """Hashes image references, each file once (training files reuse images), counting what it could not hash."""

    def __init__(self) -> None:
        self._cache: dict[str, ImageHash | str] = {}

    def __call__(self, ref: str | Image.Image, counts: MediaCounts) -> ImageHash | None:
        if isinstance(ref, Image.Image):  # decoded lazily by the loader: a broken embedded image fails only now
            try:
                h = hash_image(ref) or "uniform"
            except (OSError, ValueError, Image.DecompressionBombError):
                h = "unreadable"
        else:
            if ref not in self._cache:
                self._cache[ref] = self._hash_ref(ref)
            h = self._cache[ref]
        if isinstance(h, str):  # why it was not hashed: the name of a MediaCounts field
            setattr(counts, h, getattr(counts, h) + 1)
            return None
        counts.hashed += 1
        return h

    @staticmethod
    def _hash_ref(ref: str) -> ImageHash | str:
        if ref.startswith(_URL) and not ref.startswith("file://"):
            return "remote"  # not downloaded: the report counts these as unchecked
        path = ref.removeprefix("file://")
        if not Path(path).is_file():
            return "missing"
        try:
            return hash_file(path) or "uniform"
        except (OSError, ValueError, Image.DecompressionBombError):
            return "unreadable"


@dataclass
class BenchmarkIndex:
    """Every benchmark item's image hashes and text key, labelled 'benchmark/item key'."""

    images: HashIndex
    texts: dict[str, str] = field(default_factory=dict)
    sources: list[dict[str, Any]] = field(default_factory=list)


def parse_against(spec: str) -> tuple[str, Path | None]:
    """'NAME' or 'NAME=DIR' (DIR: the local folder `eval run --data-dir` would read; 'pairs=FILE' for a pair file)."""
    name, sep, where = spec.partition("=")
    if not name.strip() or (sep and not where.strip()):
        raise ValueError(f"--against {spec!r}: give NAME or NAME=DIR")
    return name.strip(), Path(where).expanduser() if sep else None


def build_index(
    specs: list[str], *, hasher: Hasher | None = None, phash_max: int = PHASH_MAX, dhash_max: int = DHASH_MAX
) -> BenchmarkIndex:
    """Load each benchmark named in `specs` through its registered loader and index its images and texts."""
    from deltarubric.eval.prepare import hub_data
    from deltarubric.eval.registry import get_benchmark
    from deltarubric.eval.runner import present_tasks

    hasher = hasher or Hasher()
    index = BenchmarkIndex(images=HashIndex(phash_max, dhash_max))
    for spec in specs:
        name, data_dir = parse_against(spec)
        bench = get_benchmark(name)
        if data_dir is not None and not data_dir.exists():
            # Some loaders fall back to the metadata shipped in data/ when the folder is absent: a typo would then
            # check against text only and report a clean result.
            raise FileNotFoundError(f"--against {spec}: {data_dir} does not exist")
        try:
            data_dir = data_dir if data_dir is not None else hub_data(bench)
            loaded, skipped = present_tasks(bench, data_dir)
        except ValueError as e:  # eval's messages name --data-dir; here the folder is given as NAME=DIR
            raise ValueError(f"{e} [for dedup: --against {name}=DIR]") from None
        counts, n_items = MediaCounts(), 0
        for task, items in loaded.items():
            for item in items:
                n_items += 1
                label = f"{bench.name}/{item.key}" if len(loaded) == 1 else f"{bench.name}/{task}/{item.key}"
                key = text_key(item.request)
                if key is not None:
                    index.texts.setdefault(key, label)
                images, videos = request_media(item.request)
                counts.videos += videos
                for ref in images:
                    h = hasher(ref, counts)
                    if h is not None:
                        index.images.add(h, label)
        index.sources.append(
            {
                "benchmark": bench.name,
                "data": str(data_dir),
                "tasks": sorted(loaded),
                "tasks_missing": skipped,
                "items": n_items,
                "images": counts.to_json(),
            }
        )
    return index


@dataclass
class FileResult:
    input: Path
    output: Path
    pairs: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    images: MediaCounts = field(default_factory=MediaCounts)

    def to_json(self) -> dict[str, Any]:
        return {
            "input": str(self.input),
            "output": str(self.output),
            "pairs": self.pairs,
            "kept": self.kept,
            "dropped": sum(self.dropped.values()),
            "dropped_by_reason": dict(self.dropped),
            "images": self.images.to_json(),
        }


def find_matches(request: JudgeRequest, index: BenchmarkIndex, hasher: Hasher, counts: MediaCounts) -> list[dict]:
    """Why this pair is a benchmark item: one entry per matching text or image, empty if it is not one."""
    matches = []
    key = text_key(request)
    if key is not None and key in index.texts:
        matches.append({"reason": "text", "benchmark_item": index.texts[key]})
    images, videos = request_media(request)
    counts.videos += videos
    for ref in images:
        h = hasher(ref, counts)
        hit = index.images.match(h) if h is not None else None
        if hit is not None:
            label, dp, dd = hit
            matches.append(
                {
                    "reason": "image",
                    "benchmark_item": label,
                    "image": ref if isinstance(ref, str) else "",
                    "phash_distance": dp,
                    "dhash_distance": dd,
                }
            )
    return matches


def dedup_file(path: Path, out: Path, index: BenchmarkIndex, hasher: Hasher, dropped: list[dict]) -> FileResult:
    """Copy the pairs of `path` that match no benchmark item to `out`; append one record per dropped pair."""
    result = FileResult(input=path, output=out)
    with atomic_lines(out) as w:
        for n, row, pair in read_lines(path):
            result.pairs += 1
            matches = find_matches(pair.request, index, hasher, result.images)
            if matches:
                result.dropped.update({m["reason"] for m in matches})
                dropped.append({"file": str(path), "line": n, "id": pair.request.id, "matches": matches})
                continue
            write_row(w, relocate(row, path.parent, out.parent))
            result.kept += 1
    return result


def dedup(
    files: list[Path], against: list[str], out_dir: Path, *, phash_max: int = PHASH_MAX, dhash_max: int = DHASH_MAX
) -> dict[str, Any]:
    """Write each file's pairs minus benchmark items to `out_dir/<file name>`, and `out_dir/dedup_report.json`."""
    if not against:
        raise ValueError("name at least one benchmark to check against (--against NAME[=DIR])")
    names = Counter(p.name for p in files)
    if clash := sorted(n for n, c in names.items() if c > 1):
        raise ValueError(f"two input files are named {clash[0]}: their outputs in {out_dir} would collide")
    for p in files:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: pair file not found")
        if (out_dir / p.name).resolve() == p.resolve():
            raise ValueError(f"{p}: the output would overwrite the input; choose another --out")
    hasher = Hasher()
    index = build_index(against, hasher=hasher, phash_max=phash_max, dhash_max=dhash_max)
    out_dir.mkdir(parents=True, exist_ok=True)
    dropped: list[dict] = []
    results = [dedup_file(p, out_dir / p.name, index, hasher, dropped) for p in files]
    report = {
        "settings": {
            "phash_max": phash_max,
            "dhash_max": dhash_max,
            "text": "normalised question + responses, "
            "either order (NFKC, case-folded, punctuation and <image> tokens removed)",
        },
        "benchmarks": index.sources,
        "files": [r.to_json() for r in results],
        "dropped": dropped,
    }
    (out_dir / REPORT_NAME).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report
