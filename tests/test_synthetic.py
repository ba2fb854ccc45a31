"""The synthetic visual-preference task (train/synthetic.py): files, determinism, truth of claims read back from the
pixels, and the blind guarantee (text alone, without the image, is at chance)."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deltarubric.rm.pairs import LabelledPair, read_pairs
from deltarubric.rm.types import Candidate
from deltarubric.rubrics.parsing import _LEAK_RE
from deltarubric.train.synthetic import CONFIDENT, FILLERS, blind_copy, make_synthetic, scene_corpus

N = 2000  # 1600 train / 400 val: on 400 pairs a coin's accuracy has a standard deviation of 2.5 points
SEED = 3

# The test's own view of the picture, written from the task's promise (pure colours, 2x2 grid of 32x32 cells on a dark
# background), not from the generator's code.
RGB = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
CELLS = ("top left", "top right", "bottom left", "bottom right")
NUMBERS = ("zero", "one", "two", "three", "four")
QUESTIONS = {  # each kind's question, its subject captured (the first claim of an answer must be about it)
    "cell": r"What is in the (\w+ \w+) cell\?",
    "count": r"How many (\w+) shapes are there\?",
    "position": r"Where is the (\w+) shape\?",
    "exists": r"Is there a (\w+ \w+)\?",
    "describe": r"Describe the image\.()",
}
Scene = dict[str, tuple[str, str] | None]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path], dict[str, list[LabelledPair]]]:
    out = tmp_path_factory.mktemp("synthetic")
    paths = make_synthetic(out, N, seed=SEED)
    return out, paths, {name: read_pairs(p) for name, p in paths.items()}


def scene_from_pixels(path: str | Path) -> Scene:
    """Each cell's colour from its centre pixel, its shape from how much of a 22x22 box it fills (circle ~ pi/4)."""
    px = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert px.shape == (64, 64, 3)
    scene: Scene = {}
    for k, cell in enumerate(CELLS):
        block = px[(k // 2) * 32 : (k // 2) * 32 + 32, (k % 2) * 32 : (k % 2) * 32 + 32]
        centre = block[16, 16]
        colour = next((name for name, rgb in RGB.items() if np.abs(centre - rgb).max() < 40), None)
        if colour is None:
            assert centre.max() < 60, f"{path}: {cell} is neither a pure colour nor dark background"
            assert block.max() < 60, f"{path}: {cell} has something but not at its centre"
            scene[cell] = None
            continue
        mask = np.abs(block - RGB[colour]).max(-1) < 40
        assert not (mask[[0, -1]].any() or mask[:, [0, -1]].any()), f"{path}: a shape spills over its cell"
        fill = mask.sum() / 22**2
        assert 0.7 < fill < 1.05, f"{path}: {cell} shape covers {fill:.2f} of a 22x22 box"
        scene[cell] = (colour, "square" if fill > 0.9 else "circle")
    return scene


def claims(text: str) -> list[str]:
    """The factual claims of an answer, with the information-free style (confident opener, filler) taken off."""
    out = []
    for s in re.split(r"(?<=\.) ", text.strip()):
        if s in FILLERS:
            continue
        for p in CONFIDENT:
            if s.startswith(p):
                s = s[len(p)].upper() + s[len(p) + 1 :]
        out.append(s.rstrip("."))
    return out


def claim_true(claim: str, scene: Scene) -> bool:
    """Whether one claim holds for a scene; an unknown sentence form fails the test."""
    items = list(scene.values())
    if m := re.fullmatch(r"The (.+) cell has a (\w+) (square|circle)", claim):
        return scene[m[1]] == (m[2], m[3])
    if m := re.fullmatch(r"The (.+) cell is empty", claim):
        return scene[m[1]] is None
    if m := re.fullmatch(r"There (?:is|are) (\w+) (\w+) shapes?", claim):
        return NUMBERS.index(m[1]) == sum(1 for i in items if i and i[0] == m[2])
    if m := re.fullmatch(r"The (\w+) shape is in the (.+) cell", claim):
        return [c for c, i in scene.items() if i and i[0] == m[1]] == [m[2]]
    if m := re.fullmatch(r"(?:Yes, t|T)here is a (\w+) (square|circle)", claim):
        return (m[1], m[2]) in items
    if m := re.fullmatch(r"(?:No, t|T)here is no (\w+) (square|circle)", claim):
        return (m[1], m[2]) not in items
    raise AssertionError(f"unknown claim form: {claim!r}")


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    runs = [files(Path(make_synthetic(tmp_path / name, 120, seed=7)["train"]).parent) for name in ("a", "b")]
    assert runs[0] == runs[1]
    assert files(Path(make_synthetic(tmp_path / "c", 120, seed=8)["train"]).parent) != runs[0]


def test_splits_load_with_relative_media(data) -> None:
    out, paths, pairs = data
    assert paths == {"train": out / "train.jsonl", "val": out / "val.jsonl"}
    assert sorted(p.name for p in out.iterdir()) == ["images", "manifest.json", "train.jsonl", "val.jsonl"]
    assert {k: len(v) for k, v in pairs.items()} == {"train": 1600, "val": 400}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == SEED and manifest["n"] == N and manifest["pairs"] == {"train": 1600, "val": 400}
    assert set(manifest["kinds"]["val"]) == {"cell", "count", "position", "exists", "describe"}
    assert sum(manifest["kinds"]["val"].values()) == 400
    for name, path in paths.items():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            assert re.fullmatch(r"images/\d{6}\.png", row["images"][0]) and row["label"] in ("A", "B")
    ids = [p.request.id for v in pairs.values() for p in v]
    assert len(ids) == len(set(ids)) == N
    assert all(Path(p.request.images[0]).is_file() for v in pairs.values() for p in v)


def test_labels_balanced(data) -> None:
    for name, split in data[2].items():
        share = sum(p.label == "A" for p in split) / len(split)
        assert abs(share - 0.5) < 3 * (0.25 / len(split)) ** 0.5, (name, share)


def test_no_scene_in_two_splits(data) -> None:
    def digests(split: list[LabelledPair]) -> set[str]:
        return {hashlib.sha256(np.asarray(Image.open(p.request.images[0])).tobytes()).hexdigest() for p in split}

    train, val = digests(data[2]["train"]), digests(data[2]["val"])
    assert len(val) > 100 and not train & val
    assert not {p.request.images[0] for p in data[2]["train"]} & {p.request.images[0] for p in data[2]["val"]}


def test_one_planted_error_and_the_right_answer_is_true_of_the_pixels(data) -> None:
    kinds: Counter[str] = Counter()
    on_topic: Counter[str] = Counter()
    for pair in (p for split in data[2].values() for p in split):
        scene = scene_from_pixels(pair.request.images[0])
        right, wrong = (pair.request.a, pair.request.b) if pair.label == "A" else (pair.request.b, pair.request.a)
        good, bad = claims(right.text or ""), claims(wrong.text or "")
        assert 3 <= len(good) == len(bad) <= 5, pair.request.id
        diff = [i for i, (g, b) in enumerate(zip(good, bad)) if g != b]
        assert len(diff) == 1, (pair.request.id, good, bad)
        assert all(claim_true(c, scene) for c in good), (pair.request.id, scene, good)
        assert not claim_true(bad[diff[0]], scene), (pair.request.id, scene, bad)
        # The caption is the scene read cell by cell.
        assert pair.caption == " ".join(f"{c}: {'empty' if v is None else ' '.join(v)}." for c, v in scene.items())
        # The checklist targets the disagreement without saying who is right; the rationale names both in A/B labels.
        assert 1 <= len(pair.checklist) <= 3 and all(q.endswith("?") and not _LEAK_RE.search(q) for q in pair.checklist)
        other = "B" if pair.label == "A" else "A"
        assert (pair.rationale or "").startswith(f"Response {other} says ")
        assert (pair.rationale or "").endswith(f"Response {pair.label} is right.")
        # One finding per item: the planted slot as the pixels show it, then which answer agrees (check, then decide).
        assert len(pair.findings) == len(pair.checklist)
        for f in pair.findings:
            m = re.fullmatch(r"In the image, (.+)\. That is what Response ([AB]) says\. Favors: ([AB])", f)
            assert m and claim_true(m[1][0].upper() + m[1][1:], scene), (pair.request.id, scene, f)
            assert m[2] == m[3] == pair.label and m[1] in (right.text or "").lower()
        q = pair.request.question
        kind, subject = next((k, m[1]) for k, pat in QUESTIONS.items() if (m := re.fullmatch(pat, q)))
        if kind != "describe":  # the first claim answers the question; the error is there or in a later claim
            head = good[0].lower()
            assert subject in head and (kind != "exists" or head.startswith(("yes,", "no,"))), (q, head)
            on_topic[kind] += diff[0] == 0
        kinds[kind] += 1
    assert set(kinds) == set(QUESTIONS)
    share = sum(on_topic.values()) / (sum(kinds.values()) - kinds["describe"])
    assert 0.6 < share < 0.8, share  # most errors are the very point asked about, some hide in a side claim


def _features(pairs: list[LabelledPair], vocab: dict[str, int]) -> np.ndarray:
    """Antisymmetric text features: bag of words and bigrams of A minus B, plus length and confidence differences."""
    x = np.zeros((len(pairs), len(vocab) + 2))
    for row, p in enumerate(pairs):
        for sign, text in ((1, p.request.a.text or ""), (-1, p.request.b.text or "")):
            for tok in _tokens(text):
                if tok in vocab:
                    x[row, vocab[tok]] += sign
            x[row, -2] += sign * len(text.split()) / 10
            x[row, -1] += sign * any(text.startswith(c) for c in CONFIDENT)
    return x


def _tokens(text: str) -> list[str]:
    words = re.findall(r"[a-z]+", text.lower())
    return words + [f"{a}_{b}" for a, b in zip(words, words[1:])]


def _logistic(x: np.ndarray, y: np.ndarray, steps: int = 400, lr: float = 0.5, l2: float = 1e-3) -> np.ndarray:
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w)))
        w -= lr * (x.T @ (p - y) / len(y) + l2 * w)
    return w


def _blind_scores(train: list[LabelledPair], val: list[LabelledPair]) -> dict[str, float]:
    """Val accuracy of judges that see only the question and the two answers, fitted on the train split's text."""
    seen = {t for p in train for s in (p.request.a, p.request.b) for t in _tokens(s.text or "")}
    vocab = {t: i for i, t in enumerate(sorted(seen))}
    y_train, y_val = (np.array([p.label == "A" for p in ps], dtype=float) for ps in (train, val))
    x_train, x_val = _features(train, vocab), _features(val, vocab)
    scale = np.abs(x_train).max(0) + 1e-9
    w = _logistic(x_train / scale, y_train)
    scores = {"logistic": float(((x_val / scale @ w > 0) == y_val).mean())}
    # Naive Bayes on word counts: log-ratio of each token's frequency in right vs wrong answers.
    right, wrong = Counter(), Counter()
    for p in train:
        r, o = (p.request.a, p.request.b) if p.label == "A" else (p.request.b, p.request.a)
        right.update(_tokens(r.text or "")), wrong.update(_tokens(o.text or ""))
    tot_r, tot_w, v = sum(right.values()), sum(wrong.values()), len(vocab) + 1

    def nb(text: str) -> float:
        return sum(np.log((right[t] + 1) / (tot_r + v)) - np.log((wrong[t] + 1) / (tot_w + v)) for t in _tokens(text))

    picks_a = [nb(p.request.a.text or "") > nb(p.request.b.text or "") for p in val]
    scores["naive_bayes"] = float(np.mean([a == (p.label == "A") for a, p in zip(picks_a, val)]))
    # Hand-written heuristics: the longer answer wins; the more confident answer wins (ties count as a coin).
    for name, col in (("longer", -2), ("confident", -1)):
        d = x_val[:, col]
        scores[name] = float(np.mean(np.where(d == 0, 0.5, (d > 0) == (y_val == 1))))
    return scores


def test_text_alone_is_at_chance(data) -> None:
    scores = _blind_scores(data[2]["train"], data[2]["val"])
    print("blind (text-only) val accuracy:", {k: round(v, 3) for k, v in scores.items()})
    assert all(abs(s - 0.5) <= 0.07 for s in scores.values()), scores


def test_the_blind_probe_can_find_a_leak(data) -> None:
    """The same probes, on text where the right answer always opens confidently, must find it: they are not blind."""

    def leak(pairs: list[LabelledPair]) -> list[LabelledPair]:
        out = []
        for p in pairs:
            side = p.label.lower()
            text = getattr(p.request, side).text or ""
            upd = {side: Candidate(text="Clearly, " + text[0].lower() + text[1:])}
            out.append(p.model_copy(update={"request": p.request.model_copy(update=upd)}))
        return out

    scores = _blind_scores(leak(data[2]["train"]), leak(data[2]["val"]))
    print("with a planted leak:", {k: round(v, 3) for k, v in scores.items()})
    assert scores["logistic"] > 0.7 and scores["naive_bayes"] > 0.6, scores


def test_blind_copy_is_uniform_grey(data, tmp_path: Path) -> None:
    out, paths, pairs = data
    copy = blind_copy(paths["val"], tmp_path / "blind" / "val.jsonl")
    blind = read_pairs(copy)
    assert [(p.request.question, p.request.a, p.request.b, p.label) for p in blind] == [
        (p.request.question, p.request.a, p.request.b, p.label) for p in pairs["val"]
    ]
    assert len({p.request.images[0] for p in blind}) == 1
    px = np.asarray(Image.open(blind[0].request.images[0]).convert("RGB"))
    assert px.shape == (64, 64, 3) and (px == px[0, 0]).all() and 100 < px[0, 0, 0] < 160


def test_scene_corpus_covers_the_task_text(data) -> None:
    corpus = scene_corpus(n=300, seed=1)
    assert corpus == scene_corpus(n=300, seed=1)
    words = {w for line in corpus for w in re.findall(r"[A-Za-z]+", line)}
    used = {
        w
        for p in data[2]["val"]
        for t in (
            p.request.question,
            p.request.a.text or "",
            p.request.b.text or "",
            p.caption or "",
            p.rationale or "",
            *p.checklist,
        )
        for w in re.findall(r"[A-Za-z]+", t)
    }
    assert used <= words, used - words
    assert len(words) < 80  # a small fixed vocabulary: a small BPE tokenizer covers it


def test_bad_splits_are_refused(tmp_path: Path) -> None:
    for splits in ({"train": 0.5, "val": 0.4}, {"train": 1.2, "val": -0.2}, {"a/b": 1.0}):
        with pytest.raises(ValueError):
            make_synthetic(tmp_path, 10, splits=splits)
