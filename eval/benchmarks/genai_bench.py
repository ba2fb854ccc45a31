"""GenAI-Bench (TIGER-Lab): human votes on pairs of generated images, edits and videos.

Official metric (leaderboard, split test_v1; `inference.py:parse_response` and `show_results.py` @ f0b0334, exactly):
the judge must output only one of four verdicts, `[[A>B]]`, `[[B>A]]`, `[[A=B=Good]]`, `[[A=B=Bad]]`; the verdict
string is the greedy `[[...]]` match (`deltarubric.rubrics.parsing.genai_vote`: from the first '[[' to the last ']]' of
its line, so two labels on one line are one string that is no verdict) and must be exactly one the human vote allows;
no match is wrong; accuracy over all rows, ties included. Left image = A always, no swap. The verdict string is the
vote label the judge recorded (`OrderResult.label`), or read once from a published file's response.
"No ties" (ours) is the variant most papers quote: only left/right-vote rows, a decisive A/B verdict must match. It
reads the same verdict strings (official-format runs and files) or the parsed winners (other runs), so a two-label
line is wrong there too. UnifiedReward's "w/o ties" differs: see docs/eval.md.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

from deltarubric.eval.core import EvalItem, Prediction, decided, judge_stats, pct
from deltarubric.eval.io import media_path, read_records
from deltarubric.eval.spec import Benchmark, Scores, register
from deltarubric.rm.types import JudgeRequest
from deltarubric.rubrics.parsing import GENAI_VOTES, parse_genai_vote

TASKS = ("image_generation", "image_edition", "video_generation")
_TASK_TYPE = {
    "image_generation": "image_generation",
    "image_edition": "image_editing",
    "video_generation": "video_generation",
}
# Which verdict strings (rubrics.parsing.GENAI_VOTES) count as correct for each human vote: the official scoring
# table; [[A=B]] fits both kinds of tie.
CORRECT_VOTES = {
    "leftvote": {"[[A>>B]]", "[[A>B]]"},
    "rightvote": {"[[B>>A]]", "[[B>A]]"},
    "tievote": {"[[A=B]]", "[[A=B=Good]]"},
    "bothbad_vote": {"[[A=B]]", "[[A=B=Bad]]"},
}
_GOLD_SIDE = {"leftvote": "A", "rightvote": "B"}


def verdict_string(p: Prediction) -> str | None:
    """The verdict string of an item judged once, as its parser read it; None without one."""
    return p.labels[0] if len(p.labels) == 1 else None


def score(preds: list[Prediction], task: str) -> Scores:
    """official_4way: % correct over all rows (needs official-format votes). no_ties: % of left/right rows won."""
    official = all(p.official_format for p in preds) and bool(preds)
    votes = [verdict_string(p) for p in preds]
    decisions = [GENAI_VOTES.get(v or "") if official else decided(p) for v, p in zip(votes, preds)]
    pairs = [(d, _GOLD_SIDE[p.gold]) for d, p in zip(decisions, preds) if p.gold in _GOLD_SIDE]
    return {
        "official_4way": pct(sum(v in CORRECT_VOTES[p.gold] for v, p in zip(votes, preds)), len(preds))
        if official
        else float("nan"),
        "no_ties": pct(sum(d == g for d, g in pairs), len(pairs)),
        **judge_stats(preds),
    }


def read_official(path: Path) -> list[Prediction]:
    """The official per-sample file (results/<task>/<model>/pairwise.jsonl): idx, response, human_vote."""
    preds = []
    for row in read_records(path):
        parsed = parse_genai_vote(row["response"])
        preds.append(
            Prediction(
                key=str(row["idx"]),
                gold=row["human_vote"],
                raw=row["response"],
                official_format=True,
                winner=parsed.winner,
                samples=[("AB", parsed.winner)],
                labels=[parsed.label],
                parse_ok=parsed.winner is not None,
            )
        )
    return preds


def load(data_dir: Path, task: str) -> list[EvalItem]:
    """`<data_dir>/<task>.jsonl`: id, vote_type, the prompt fields, and media paths relative to data_dir
    (left_image/right_image[/source_image], or left_video/right_video). `prepare` writes it from the release."""
    if task not in TASKS:
        raise ValueError(f"GenAI-Bench task must be one of {', '.join(TASKS)}; got {task!r}")
    items = []
    for row in read_records(data_dir / f"{task}.jsonl"):
        kind = "video" if task == "video_generation" else "image"
        a, b = ({kind: media_path(data_dir, row[f"{side}_{kind}"])} for side in ("left", "right"))
        key = str(row.get("id", row.get("idx")))
        editing = task == "image_edition"
        request = JudgeRequest(
            id=key,
            task_type=_TASK_TYPE[task],
            question=row["instruct_prompt"] if editing else row["prompt"],
            images=[media_path(data_dir, row["source_image"])] if editing else [],
            a=a,
            b=b,
        )
        meta = {k: row[k] for k in ("source_prompt", "target_prompt") if k in row}
        items.append(EvalItem(key=key, request=request, gold=row["vote_type"], group=row["vote_type"], meta=meta))
    return items


# --- `deltarubric eval prepare genai-bench`: the hub release (parquet) to the layout `load` reads -------------------
# The release's fields per task, as the official inference reads them (inference_configs.json @ f0b0334: input keys,
# `vote_type` the label); images are the `datasets` Image feature ({bytes, path}), videos a path/URL or the same.
RELEASE_FIELDS = {
    "image_generation": {"text": ("prompt",), "media": {"left_image": "left_image", "right_image": "right_image"}},
    "image_edition": {
        "text": ("source_prompt", "target_prompt", "instruct_prompt"),
        "media": {
            "source_image": "source_image",
            "left_output_image": "left_image",
            "right_output_image": "right_image",
        },
    },
    "video_generation": {"text": ("prompt",), "media": {"left_video": "left_video", "right_video": "right_video"}},
}
DEFAULT_SPLIT = "test_v1"  # the leaderboard's split (the official inference's `split="test_v1"`)


def release_files(src: Path, task: str, split: str) -> list[Path]:
    """The split's parquet shards of one task: `<task>/<split>-NNNNN-of-NNNNN.parquet` (the dataset repo) or
    `<task>/<split>/NNNN.parquet` (the hub's parquet conversion), anywhere under `src`; the first layout if both."""
    return sorted(src.glob(f"**/{task}/{split}-*.parquet")) or sorted(src.glob(f"**/{task}/{split}/*.parquet"))


def _splits_present(src: Path, task: str) -> list[str]:
    names = set()
    for f in src.glob(f"**/{task}/**/*.parquet"):
        names.add(f.parent.name if f.parent.name != task else f.name.split("-")[0])
    return sorted(names)


class _Media:
    """Writes a release's media value (Image feature bytes, or a path/URL naming a file downloaded under `src`)
    into `out`; paths returned are relative to `out`, as `load` reads them."""

    def __init__(self, src: Path, out: Path) -> None:
        self.src, self.out = src, out
        self._by_name: dict[str, Path] | None = None
        self.missing: list[str] = []

    def _find(self, name: str) -> Path | None:
        direct = self.src / name
        if "://" not in name and direct.is_file():
            return direct
        if self._by_name is None:  # every file under src by its name, built once
            self._by_name = {}
            for f in self.src.rglob("*"):
                if f.is_file() and f.suffix != ".parquet":
                    self._by_name.setdefault(f.name, f)
        return self._by_name.get(Path(name.split("?")[0]).name)

    def write(self, value: Any, stem: str) -> str | None:
        data, name = None, None
        if isinstance(value, dict):
            data, name = value.get("bytes"), value.get("path")
        elif isinstance(value, bytes):
            data = value
        elif isinstance(value, str):
            name = value
        if data:
            suffix = _image_suffix(data) or (Path(name).suffix if name else "") or ".bin"
            target = self.out / f"{stem}{suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            return target.relative_to(self.out).as_posix()
        found = self._find(name) if name else None
        if found is None:
            self.missing.append(str(name))
            return None
        target = self.out / f"{stem}{found.suffix}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(found, target)  # same disk: no copy
        except OSError:
            shutil.copyfile(found, target)
        return target.relative_to(self.out).as_posix()


def _image_suffix(data: bytes) -> str | None:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "").lower()
    except (OSError, ValueError, SyntaxError):  # not an image (a video's bytes): keep the name's suffix
        return None
    return {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "gif": ".gif", "bmp": ".bmp"}.get(
        fmt, f".{fmt}" if fmt else None
    )


def prepare(src: Path, out: Path, split: str = DEFAULT_SPLIT) -> dict[str, int]:
    """Turn a downloaded copy of the release (`hf download TIGER-Lab/GenAI-Bench --repo-type dataset
    --local-dir SRC`) into `<out>/<task>.jsonl` plus media files under `<out>/<task>/`, for every task whose split is
    present. `id` is the row's position in the split, which is the `idx` of the official outputs. Returns the rows
    written per task; tasks without that split are left out (the caller says so)."""
    if not src.is_dir():
        raise ValueError(f"--src {src} is not a folder (a downloaded copy of TIGER-Lab/GenAI-Bench)")
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError("reading the release's parquet files needs pyarrow: pip install 'deltarubric[hub]'") from e
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for task in TASKS:
        files = release_files(src, task, split)
        if not files:
            continue
        fields = RELEASE_FIELDS[task]
        required = [*fields["text"], *fields["media"], "vote_type"]
        media = _Media(src, out)
        rows: list[dict[str, Any]] = []
        for path in files:
            shard = pq.ParquetFile(path)
            names = shard.schema_arrow.names
            if missing := [f for f in required if f not in names]:
                raise ValueError(
                    f"{path}: a GenAI-Bench {task} file needs the fields {', '.join(required)}; missing "
                    f"{', '.join(missing)} (fields found: {', '.join(names)})"
                )
            for batch in shard.iter_batches(batch_size=64):
                for row in batch.to_pylist():
                    idx = len(rows)
                    if row["vote_type"] not in CORRECT_VOTES:
                        raise ValueError(
                            f"{path}: row {idx}: vote_type {row['vote_type']!r} is none of {', '.join(CORRECT_VOTES)}"
                        )
                    out_row: dict[str, Any] = {"id": idx, "vote_type": row["vote_type"]}
                    out_row |= {f: row[f] for f in fields["text"]}
                    for field, ours in fields["media"].items():
                        out_row[ours] = media.write(
                            row[field], f"{task}/{idx}_{ours.removesuffix('_image').removesuffix('_video')}"
                        )
                    # The rest (model names, the release's own ids) is kept for reference, when it is plain JSON.
                    for k, v in row.items():
                        if k not in required and isinstance(v, (str, int, float, bool)):
                            out_row.setdefault("release_id" if k == "id" else k, v)
                    rows.append(out_row)
        if media.missing:
            raise ValueError(
                f"{task}: {len(media.missing)} media files named by the release are not under --src {src} "
                f"(e.g. {media.missing[0]}): download them into --src (any sub-folder, file names kept) "
                "and rerun"
            )
        target = out / f"{task}.jsonl"
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        os.replace(tmp, target)
        written[task] = len(rows)
    if not written:
        present = {t: _splits_present(src, t) for t in TASKS}
        seen = "; ".join(f"{t}: {', '.join(s)}" for t, s in present.items() if s) or "no parquet files"
        raise ValueError(
            f"no GenAI-Bench split {split!r} under --src {src}: looked for <task>/{split}-*.parquet and "
            f"<task>/{split}/*.parquet for {', '.join(TASKS)} (found: {seen}); pass --split, or download "
            "TIGER-Lab/GenAI-Bench into --src"
        )
    return written


BENCHMARK = register(
    Benchmark(
        name="genai-bench",
        description="GenAI-Bench (TIGER-Lab): pairs of generated images, edits and videos with human votes.",
        tasks=TASKS,
        load=load,
        score=score,
        read_official=read_official,
        official_judge="genai_bench_official",
        official_order="given",
        headline=("official_4way", "no_ties"),
        data_revision="TIGER-Lab/GenAI-Bench test_v1 (leaderboard); official_results @ f0b0334",
        prepare=prepare,
        default_split=DEFAULT_SPLIT,
    )
)
