"""MM-RLHF-RewardBench (Kwai): 170 chosen/rejected pairs over 46 ids, five categories.

The metric is the official one (`get_acc.py`, r1_reward @ 3693413, the same as MM-RLHF @ 7c8af1d
`llava/eval/cal_performance_mmreweard_bench.py`), exactly:
- Accuracy: a pair is correct only if the chosen response strictly wins (rewards[0] > rewards[1]; for a judge, the
  winner every judged order gave; a tie, a split or an unparsable verdict is wrong). ACC+: an id counts only if all
  of its pairs are correct.
- Per category (mcq, long, short, safety, video, in that order of precedence), as get_acc.py counts them: a pair
  belongs to the first keyword in its media path; an all-correct id is credited to the first keyword found in any of
  its pairs' media (an id spanning two categories is credited to the first of them in that order), and an id is in
  the ACC+ denominator of every category any of its pairs' media mentions. A category with no pair is n/a (get_acc.py
  prints 0.00).
The released file lists chosen first, so runs randomise the order.

Videos: the release's `video` fields name folders of frames (`video/<name>`), which the official inference reads as
the folder's files in name order, 32 of them at `np.linspace(0, n - 1, 32, dtype=int)`. A `video` that is a folder
is judged as those frames, given as images in time order (every backend takes images; frame folders are not a video
format any engine decodes), with a line before the question saying they are frames of one video; a `video` that is
a file stays a video.
"""

from __future__ import annotations

import json
from pathlib import Path

from deltarubric.eval.core import EvalItem, Prediction, decided, judge_stats, pct
from deltarubric.eval.io import find_file, media_path, read_records
from deltarubric.eval.spec import Benchmark, HubSource, Scores, register
from deltarubric.rm.types import JudgeRequest

CATEGORIES = ("mcq", "long", "short", "safety", "video")
VIDEO_FRAMES = 32  # eval_mm_reward_bench.py: sample_frames = 32
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
FRAMES_NOTE = "The {n} images are frames of one video, in time order."


def video_frames(folder: Path, n: int = VIDEO_FRAMES) -> list[str]:
    """The frames the official inference takes from a folder: its image files sorted by name (as Python sorts the
    names), at the indices `np.linspace(0, count - 1, n, dtype=int)`; an index taken twice (fewer than n frames) is
    given once. Hidden files and files that are not images are skipped. Raises ValueError for a folder without one."""
    names = sorted(
        f.name
        for f in folder.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in FRAME_SUFFIXES
    )
    if not names:
        raise ValueError(
            f"mm-rlhf-rewardbench: {folder} is a video folder without frames (image files: "
            f"{', '.join(FRAME_SUFFIXES)}); put the video's frames there (layout: docs/eval.md)"
        )
    count = len(names)
    # linspace(0, count - 1, n) truncated to int, in exact integers. For n = 32 numpy's float product i * step gives
    # the same: i * (count - 1) / 31 is either whole (31 divides count - 1: the step is whole, the product exact) or
    # at least 1/31 away from a whole number, far beyond rounding error.
    picked = dict.fromkeys((i * (count - 1)) // (n - 1) if n > 1 else 0 for i in range(n))
    return [str(folder / names[i]) for i in picked]


def category_of(media: str) -> str:
    return next((c for c in CATEGORIES if c in media), "other")


def _media(p: Prediction) -> tuple[str, str]:
    """(image, video) path strings the category rules read; a prediction without them (an old run, the metric
    module) stands for a path naming its group."""
    if "image" in p.meta or "video" in p.meta:
        return p.meta.get("image") or "", p.meta.get("video") or ""
    return p.group, ""


def score(preds: list[Prediction], task: str = "default") -> Scores:
    correct = [decided(p) == p.gold for p in preds]
    media = [_media(p) for p in preds]
    by_id: dict[str, list[int]] = {}
    for i, p in enumerate(preds):
        by_id.setdefault(p.meta["id"], []).append(i)
    all_right = [all(correct[i] for i in rows) for rows in by_id.values()]
    out: Scores = {"accuracy": pct(sum(correct), len(preds)), "acc_plus": pct(sum(all_right), len(by_id))}
    # A pair's category for its count: the first keyword in `image or video`; for its correct count: the first
    # keyword in either field (the same for every row that has one media field, as the released file does).
    counted = [next((c for c in CATEGORIES if c in (im or vi)), None) for im, vi in media]
    credited = [next((c for c in CATEGORIES if c in im or c in vi), None) for im, vi in media]
    plus_credit: dict[str, int] = {c: 0 for c in CATEGORIES}
    for rows in by_id.values():
        if all(correct[i] for i in rows):
            first = next((c for c in CATEGORIES if any(c in media[i][0] or c in media[i][1] for i in rows)), None)
            if first:
                plus_credit[first] += 1
    for c in CATEGORIES:
        total = counted.count(c)
        members = sum(any(c in media[i][0] + media[i][1] for i in rows) for rows in by_id.values())
        out[f"accuracy_{c}"] = pct(sum(ok and k == c for ok, k in zip(correct, credited)), total)
        out[f"acc_plus_{c}"] = pct(plus_credit[c], members) if total else float("nan")
    return out | judge_stats(preds)


def read_official(path: Path) -> list[Prediction]:
    """get_acc.py's input: the benchmark's rows in file order, each with `rewards` [chosen, rejected] (a reward model's
    scores, or r1_reward's [1, 0] / [0, 1] for a pairwise verdict). Keys are `id/row`, as `load` makes them."""
    preds = []
    with path.open(encoding="utf-8") as f:
        lines = [(n, line) for n, line in enumerate(f, 1) if line.strip()]
    for row_number, (n, line) in enumerate(lines):
        try:
            row = json.loads(line)
            r0, r1 = (float(r) for r in row["rewards"][:2])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{n}: not a get_acc.py row with rewards [chosen, rejected] ({e})") from e
        winner = "A" if r0 > r1 else "B" if r1 > r0 else "tie" if r0 == r1 else None  # NaN: no verdict, wrong
        media = row.get("image") or row.get("video") or ""
        preds.append(
            Prediction(
                key=f"{row.get('id', '')}/{row_number}",
                gold="A",
                group=category_of(media),
                winner=winner,
                parse_ok=winner is not None,  # no samples: the order a reward model saw is not recorded
                meta={"id": row.get("id", ""), "image": row.get("image") or "", "video": row.get("video") or ""},
            )
        )
    return preds


def load(data_dir: Path, task: str = "default") -> list[EvalItem]:
    """`mm_reward_bench.jsonl` (from data_dir, else the shipped copy); media at `<data_dir>/<image or video>`. A video
    that is a folder of frames becomes up to 32 frame images (`video_frames`); a missing one stays a video reference,
    so the run says it is missing."""
    items = []
    rows = read_records(
        find_file(data_dir, "mm_reward_bench.jsonl", shipped="mm-rlhf-rewardbench/mm_reward_bench.jsonl")
    )
    for n, row in enumerate(rows):
        media = row.get("image") or row["video"]
        key = f"{row['id']}/{n}"  # ids repeat (2-6 pairs each); the row number makes the key unique and stable
        video = "video" in row
        path = media_path(data_dir, media)
        frames = video_frames(Path(path)) if video and Path(path).is_dir() else []
        if frames:  # a folder of frames: judged as images, in time order
            task_type, question, images, videos = (
                "image_understanding",
                FRAMES_NOTE.format(n=len(frames)) + "\n" + row["prompt"],
                frames,
                [],
            )
        elif video:
            task_type, question, images, videos = "video_understanding", row["prompt"], [], [path]
        else:
            task_type, question, images, videos = "image_understanding", row["prompt"], [path], []
        request = JudgeRequest(
            id=key,
            task_type=task_type,
            question=question,
            images=images,
            videos=videos,
            a=row["chosen"],
            b=row["rejected"],
        )
        meta = {"id": row["id"], "image": row.get("image") or "", "video": row.get("video") or ""}
        if frames:
            meta["frames"] = len(frames)
        items.append(EvalItem(key=key, request=request, gold="A", group=category_of(media), meta=meta))
    return items


BENCHMARK = register(
    Benchmark(
        name="mm-rlhf-rewardbench",
        description="MM-RLHF-RewardBench (Kwai): 170 chosen/rejected pairs, accuracy and ACC+.",
        tasks=("default",),
        load=load,
        score=score,
        read_official=read_official,
        official_judge="direct",  # there is no official pairwise prompt; the metric is the official part
        official_order="random",
        headline=("accuracy", "acc_plus"),
        data_revision="r1_reward @ 3693413 inference/MM-RLHF-Reward/mm_reward_bench.jsonl",
        # The dataset repo ships the same jsonl with its images/ folder, which is the local layout.
        hub=HubSource(
            "yifanzhang114/MM-RLHF-RewardBench",
            "3cf983d3acc020ff590e8beb10b3bae0473908e1",
            ("mm_reward_bench.jsonl", "images/**"),
        ),
    )
)
