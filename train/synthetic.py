"""A procedurally generated visual-preference task that a tiny Qwen3-VL judge can learn on CPU.

Each image is 64x64: a 2x2 grid of 32x32 cells, each empty or holding one big solid square or circle in a pure colour.
With patch 16 and spatial merge 2 every cell is exactly one vision token, so the task is "read four tokens".

How a pair is made, and why text alone tells nothing: two scenes S1 and S2 are drawn that differ in one place (a cell
changed, or two cells swapped), and one answer is written for each, from the same list of claim slots, so the answers
differ in exactly one claim and each is fully true of its own scene (no internal contradiction to spot). A fair coin
then decides which scene is rendered as the image. Whatever the distribution of the scenes, P(answer x is the right
one | the texts) = 1/2 exactly, because swapping the coin swaps the roles of the two texts. Style (a confident opener,
a scene-independent filler sentence) is drawn per slot, independently of which slot is right.

Splits partition the scene space by a hash of the rendered scene, so a held-out split holds only images never seen.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

from PIL import Image, ImageDraw

from deltarubric.rm.pairs import LabelledPair, read_pairs, write_pairs
from deltarubric.rm.types import JudgeRequest
from deltarubric.rubrics.parsing import _LEAK_RE

VERSION = 2  # 2: gold findings per checklist item
SIZE, CELL, SHAPE = 64, 32, 22  # one 32x32 cell = one merged vision token (patch 16 x merge 2)
CELLS = ("top left", "top right", "bottom left", "bottom right")
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0)}
SHAPES = ("square", "circle")
BACKGROUND = (16, 16, 16)
NUMBERS = ("zero", "one", "two", "three", "four")
KINDS = ("cell", "count", "position", "exists", "describe")
CONFIDENT = ("Clearly, ", "Certainly, ")  # openers that carry no information: drawn per slot, not per correctness
FILLERS = ("The image is a grid of four cells.", "Each cell holds at most one shape.")  # true of every scene
P_EMPTY = 0.3
P_ON_TOPIC = 0.7  # share of pairs whose planted error is the very point the question asks about
P_SWAP = 0.25  # otherwise the two scenes differ by one changed cell
P_STYLE = 0.3
DEFAULT_SPLITS = {"train": 0.8, "val": 0.2}

Item = tuple[str, str] | None  # (colour, shape) or empty
Scene = tuple[Item, ...]  # four items, in CELLS order
Key = tuple[str, ...]  # a claim slot: ("cell", c), ("count", colour), ("position", colour), ("exists", colour, shape)


def random_scene(rng: random.Random) -> Scene:
    """Four independent cells; empties are common enough that occupancy and counts vary."""
    return tuple(_random_item(rng) for _ in CELLS)


def _random_item(rng: random.Random) -> Item:
    return None if rng.random() < P_EMPTY else (rng.choice(list(COLOURS)), rng.choice(SHAPES))


def _perturb(rng: random.Random, scene: Scene, swap: bool) -> Scene | None:
    """The other scene of a pair: two cells swapped (moves a shape) or one cell redrawn (changes colour/count/...)."""
    cells = list(scene)
    if swap:
        i, j = rng.sample(range(4), 2)
        if cells[i] == cells[j]:
            return None
        cells[i], cells[j] = cells[j], cells[i]
    else:
        i = rng.randrange(4)
        while cells[i] == scene[i]:
            cells[i] = _random_item(rng)
    return tuple(cells)


def facts(scene: Scene) -> dict[Key, str]:
    """Every claim slot the scene fills, as one short true sentence from a small fixed vocabulary."""
    out: dict[Key, str] = {}
    for cell, item in zip(CELLS, scene):
        has = "is empty" if item is None else f"has a {item[0]} {item[1]}"
        out["cell", cell] = f"The {cell} cell {has}."
    for colour in COLOURS:
        where = [cell for cell, item in zip(CELLS, scene) if item and item[0] == colour]
        n = len(where)
        out["count", colour] = f"There is one {colour} shape." if n == 1 else f"There are {NUMBERS[n]} {colour} shapes."
        if n == 1:  # "where is the X shape" only makes sense for a single one
            out["position", colour] = f"The {colour} shape is in the {where[0]} cell."
        for shape in SHAPES:
            there = (colour, shape) in scene
            out["exists", colour, shape] = f"There is {'a' if there else 'no'} {colour} {shape}."
    return out


def caption(scene: Scene) -> str:
    """The canonical cell-by-cell description (the captions-stage warm-start target)."""
    return " ".join(f"{c}: {'empty' if i is None else f'{i[0]} {i[1]}'}." for c, i in zip(CELLS, scene))


def render(scene: Scene) -> Image.Image:
    """Solid, centred, unantialiased shapes in pure colours, so a tiny vision tower can tell them apart."""
    img = Image.new("RGB", (SIZE, SIZE), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for k, item in enumerate(scene):
        if item is None:
            continue
        x0, y0 = (k % 2) * CELL + (CELL - SHAPE) // 2, (k // 2) * CELL + (CELL - SHAPE) // 2
        box = (x0, y0, x0 + SHAPE - 1, y0 + SHAPE - 1)
        (draw.rectangle if item[1] == "square" else draw.ellipse)(box, fill=COLOURS[item[0]])
    return img


def _question(key: Key | None) -> str:
    if key is None:
        return "Describe the image."
    kind, *arg = key
    return {
        "cell": "What is in the {} cell?",
        "count": "How many {} shapes are there?",
        "position": "Where is the {} shape?",
        "exists": "Is there a {} {}?",
    }[kind].format(*arg)


def _head(key: Key | None, sentence: str) -> str:
    """The claim that answers the question; a yes/no question gets its yes or no in front."""
    if key and key[0] == "exists":
        return ("No, t" if " no " in sentence else "Yes, t") + sentence[1:]
    return sentence


def _checklist(key: Key, scenes: tuple[Scene, Scene], rng: random.Random) -> list[str]:
    """Neutral yes/no questions, one per value the two answers give, shuffled: they never hint at the right one."""
    kind, *arg = key
    items: list[str] = []
    for s in scenes:
        if kind == "cell":
            item = s[CELLS.index(arg[0])]
            what = "empty" if item is None else f"holding a {item[0]} {item[1]}"
            items.append(f"Is the {arg[0]} cell {what}?")
        elif kind == "count":
            n = sum(1 for i in s if i and i[0] == arg[0])
            one = f"Is there exactly one {arg[0]} shape?"
            items.append(one if n == 1 else f"Are there exactly {NUMBERS[n]} {arg[0]} shapes?")
        elif kind == "position":
            items.append(f"Is the {arg[0]} shape in the {CELLS[[i and i[0] for i in s].index(arg[0])]} cell?")
        else:
            items.append(f"Is there a {arg[0]} {arg[1]}?")
    items = sorted(set(items))
    rng.shuffle(items)
    if any(_LEAK_RE.search(i) for i in items):  # the planner's parser would drop it: a bug here, not in the data
        raise AssertionError(f"checklist item reads as a leak: {items}")
    return items


def _plan(rng: random.Random, kind: str) -> tuple[Scene, Scene, list[Key], Key | None, Key]:
    """Two scenes, the shared claim slots of their answers, the question's slot and the one slot where they differ."""
    while True:
        on_topic = kind == "describe" or rng.random() < P_ON_TOPIC
        s1 = random_scene(rng)
        s2 = _perturb(rng, s1, swap=(kind == "position" and on_topic) or rng.random() < P_SWAP)
        if s2 is None:
            continue
        f1, f2 = facts(s1), facts(s2)
        common = sorted(f1.keys() & f2.keys())  # sorted: set order varies with the hash seed, the output must not
        differ = [k for k in common if f1[k] != f2[k]]
        shared = [k for k in common if f1[k] == f2[k]]
        types = ("cell", "count") if kind == "describe" else (kind,)  # slot types the question is about
        if on_topic:
            if not (pool := [k for k in differ if k[0] in types]):
                continue
            planted = rng.choice(pool)
            qkey = None if kind == "describe" else planted
        else:
            if not (pool := [k for k in shared if k[0] in types]) or not differ:
                continue
            qkey, planted = rng.choice(pool), rng.choice(differ)
        support = [k for k in shared if k != qkey and (kind != "describe" or k[0] in types)]
        n_claims = rng.randint(3, 5)
        rest = rng.sample(support, n_claims - (qkey is not None) - (planted != qkey))
        if planted != qkey:
            rest.insert(rng.randrange(len(rest) + 1), planted)
        keys = ([qkey] if qkey is not None else []) + rest
        return s1, s2, keys, qkey, planted


def _answer(scene: Scene, keys: list[Key], qkey: Key | None, rng: random.Random) -> str:
    """The answer for `scene`; the style draws come from the slot's own coin flips, not from its correctness."""
    f = facts(scene)
    claims = [_head(qkey, f[k]) if k == qkey else f[k] for k in keys]
    if rng.random() < P_STYLE:
        claims[0] = rng.choice(CONFIDENT) + claims[0][0].lower() + claims[0][1:]
    if rng.random() < P_STYLE:
        claims.append(rng.choice(FILLERS))
    return " ".join(claims)


def _phrase(sentence: str) -> str:
    return sentence[0].lower() + sentence[1:].rstrip(".")


def _make_pair(rng: random.Random, index: int, kind: str, image: str) -> tuple[LabelledPair, Scene]:
    """One labelled pair (image reference as given) and the scene to render for it."""
    s1, s2, keys, qkey, planted = _plan(rng, kind)
    real_first = rng.random() < 0.5  # which scene is the image: the coin that makes text alone worthless
    real, other = (s1, s2) if real_first else (s2, s1)
    right, wrong = ("A", "B") if rng.random() < 0.5 else ("B", "A")  # which slot is right: a second fair coin
    texts = {right: _answer(real, keys, qkey, rng), wrong: _answer(other, keys, qkey, rng)}
    rationale = (
        f"Response {wrong} says {_phrase(facts(other)[planted])}, but in the image "
        f"{_phrase(facts(real)[planted])}; Response {right} is right."
    )
    checklist = _checklist(planted, (s1, s2), rng)
    # Every item asks about the planted slot, so each finding reads that slot off the image, then names the answer
    # that says so. One label per finding: relabelling for the shown order (A<->B) keeps the sentence's form.
    finding = f"In the image, {_phrase(facts(real)[planted])}. That is what Response {right} says. Favors: {right}"
    request = JudgeRequest(id=f"syn-{index:06d}", question=_question(qkey), images=[image], a=texts["A"], b=texts["B"])
    pair = LabelledPair(
        request=request,
        label=right,
        caption=caption(real),
        checklist=checklist,
        findings=[finding] * len(checklist),
        rationale=rationale,
    )
    return pair, real


def _bucket(scene: Scene) -> float:
    """A stable point in [0, 1) per scene (not per seed), so splits partition the scene space itself."""
    return int(hashlib.sha256(caption(scene).encode()).hexdigest()[:12], 16) / 16**12


def _check_splits(splits: dict[str, float]) -> dict[str, float]:
    if not splits or any(not (v > 0) for v in splits.values()) or abs(sum(splits.values()) - 1) > 1e-6:
        raise ValueError(f"splits must be positive fractions summing to 1, got {splits}")
    if any(not name.isidentifier() for name in splits):
        raise ValueError(f"split names become file names: use plain identifiers, got {list(splits)}")
    return splits


def make_synthetic(out: Path, n: int, seed: int = 0, *, splits: dict[str, float] | None = None) -> dict[str, Path]:
    """Write `n` pairs: out/images/NNNNNN.png, out/<split>.jsonl (image paths relative), out/manifest.json.

    Deterministic for a seed (same bytes on every run). A split gets round(n * fraction) pairs (the last one the
    remainder); its images come only from its own share of the scene space, so no scene is in two splits.
    """
    out, splits = Path(out), _check_splits(dict(splits or DEFAULT_SPLITS))
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng, index, edges, lo = random.Random(seed), 0, {}, 0.0
    for name, frac in splits.items():
        edges[name], lo = (lo, lo + frac), lo + frac
    sizes = {name: round(n * frac) for name, frac in splits.items()}
    sizes[list(splits)[-1]] = n - sum(list(sizes.values())[:-1])
    paths: dict[str, Path] = {}
    kinds: dict[str, Counter[str]] = {}
    for name, size in sizes.items():
        pairs, lo, hi, kinds[name] = [], *edges[name], Counter()
        last = name == list(splits)[-1]
        while len(pairs) < size:
            kind = KINDS[index % len(KINDS)]  # cycled: every kind equally often
            pair, scene = _make_pair(rng, index, kind, f"images/{index:06d}.png")
            if not (lo <= _bucket(scene) < hi or (last and _bucket(scene) >= hi)):
                continue  # this scene belongs to another split's share: draw again with the same index
            render(scene).save(out / "images" / f"{index:06d}.png", format="PNG")
            pairs.append(pair)
            kinds[name][kind] += 1
            index += 1
        paths[name] = write_pairs(pairs, out / f"{name}.jsonl")
    manifest = {
        "version": VERSION,
        "seed": seed,
        "n": n,
        "splits": splits,
        "pairs": sizes,
        "kinds": {name: dict(sorted(c.items())) for name, c in kinds.items()},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return paths


def scene_corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """Every kind of text the task holds (questions, answers, captions, checklists, rationales), for a tokenizer."""
    rng, lines = random.Random(seed), []
    for i in range(n):
        pair, _ = _make_pair(rng, i, KINDS[i % len(KINDS)], "images/x.png")
        r = pair.request
        lines += [
            r.question,
            r.a.text or "",
            r.b.text or "",
            pair.caption or "",
            *pair.checklist,
            *pair.findings,
            pair.rationale or "",
        ]
    return lines


def blind_copy(pair_file: Path, out: Path) -> Path:
    """A copy of a pair file whose every image is one uniform grey picture: the same judge, no visual information.

    A judge that scores well above 50% on it is reading the answers' text, not the image.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grey = f"{out.stem}-grey.png"
    Image.new("RGB", (SIZE, SIZE), (128, 128, 128)).save(out.parent / grey, format="PNG")
    pairs = read_pairs(pair_file, check_media=False)
    blind = [p.model_copy(update={"request": p.request.model_copy(update={"images": [grey]})}) for p in pairs]
    return write_pairs(blind, out)
