"""The one request type and the one verdict type every entry point shares (CLI, Python, eval, server, demo)."""

from __future__ import annotations

from typing import Any, Literal

from PIL import Image
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

TaskType = Literal[
    "image_understanding",
    "image_generation",
    "image_editing",
    "video_understanding",
    "video_generation",
    "text",
]
TASK_TYPES: tuple[str, ...] = TaskType.__args__  # type: ignore[attr-defined]

Winner = Literal["A", "B", "tie"]
Favors = Literal["A", "B", "Neither"]

# A media reference: a file path, a file:// / http(s):// / data: URL, or an in-memory PIL image.
MediaRef = str | Image.Image

# What each task type needs: (context media kind or None, candidate kind).
TASK_SHAPES: dict[str, tuple[str | None, str]] = {
    "image_understanding": ("image", "text"),
    "image_generation": (None, "image"),
    "image_editing": ("image", "image"),
    "video_understanding": ("video", "text"),
    "video_generation": (None, "video"),
    "text": (None, "text"),
}


class Candidate(BaseModel):
    """One of the two things being compared: a text response, or a generated image or video."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    text: str | None = None
    image: MediaRef | None = None
    video: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Candidate:
        given = [k for k in ("text", "image", "video") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a candidate holds exactly one of text, image or video; got {given or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return "text" if self.text is not None else "image" if self.image is not None else "video"


class JudgeRequest(BaseModel):
    """A preference pair to judge. Validated once, here; nothing downstream re-checks its shape."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    id: str = Field("0", description="Caller's id; also seeds the presentation order when presentation='random'.")
    task_type: TaskType = "image_understanding"
    question: str = Field(..., description="The question, generation prompt or editing instruction.")
    images: list[MediaRef] = Field(
        default_factory=list, description="Context images (understanding: the image; editing: the source)."
    )
    videos: list[str] = Field(default_factory=list, description="Context videos (video_understanding).")
    a: Candidate
    b: Candidate
    reference: str | None = Field(None, description="Optional reference answer shown to the judge.")

    @field_validator("a", "b", mode="before")
    @classmethod
    def _text_shorthand(cls, v: Any) -> Any:
        return {"text": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _fits_task(self) -> JudgeRequest:
        context, cand = TASK_SHAPES[self.task_type]
        for name, c in (("a", self.a), ("b", self.b)):
            if c.kind != cand:
                raise ValueError(f"{self.task_type}: candidate {name} must be {cand}, got {c.kind}")
            if c.text is not None and not c.text.strip():
                raise ValueError(f"candidate {name}: text is empty")
        if not self.question.strip():
            raise ValueError("question is empty")
        strings = [
            self.id,
            self.question,
            self.reference or "",
            *(x for x in self.images if isinstance(x, str)),
            *self.videos,
        ]
        strings += [x for c in (self.a, self.b) for x in (c.text, c.video, c.image) if isinstance(x, str)]
        if any("\x00" in t for t in strings):
            raise ValueError("text fields must not contain NUL characters")
        try:
            for t in strings:
                t.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates: they cannot be written back out as JSON
            raise ValueError("text fields must be valid Unicode (no lone surrogates)") from e
        if context == "image" and not self.images:
            raise ValueError(f"{self.task_type} needs at least one image in 'images'")
        if context == "video" and not self.videos:
            raise ValueError(f"{self.task_type} needs a video in 'videos'")
        if context != "image" and self.images:
            raise ValueError(f"{self.task_type} takes no context images; put candidate media in a/b")
        if context != "video" and self.videos:
            raise ValueError(f"{self.task_type} takes no context video")
        return self

    def swapped(self) -> JudgeRequest:
        return self.model_copy(update={"a": self.b, "b": self.a})


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Finding(BaseModel):
    """The verifier's answer to one checklist item; `favors` is in the caller's A/B labels."""

    item: str
    text: str
    favors: Favors | None = None


class OrderResult(BaseModel):
    """What the judge said for one presentation order, mapped back to the caller's labels."""

    shown_order: Literal["AB", "BA"] = Field(
        ...,
        # 'order' in verdicts recorded before the rename (results.jsonl of older runs)
        validation_alias=AliasChoices("shown_order", "order"),
        description="The presentation judged: 'AB' showed the caller's A first, 'BA' showed B first.",
    )
    winner: Literal["A", "B", "tie"] | None  # 'tie' only from presets whose format has one (GenAI-Bench)
    p_a: float | None = None
    parse_ok: bool
    label: str | None = Field(
        None,
        description="The vote exactly as the parser read it, in the labels shown: 'A' for our judges, the answer "
        "number for VL-RewardBench ('1', '3'), the verdict string for GenAI-Bench ('[[A=B=Bad]]'), the tag for "
        "Multimodal RewardBench ('[[A]]'). Official scorers read it instead of the raw text; it can be set when "
        "winner is None (an answer number other than 1 or 2).",
    )


class Verdict(BaseModel):
    """The judge's answer. `raw` and `usage` are keyed '<order>/<stage>', e.g. 'AB/planner'."""

    id: str = "0"
    judge: str = "direct"
    winner: Winner | None = None
    p_a: float | None = Field(None, description="P(A is better), from the verdict token's logprobs.")
    consistent: bool | None = Field(None, description="With swap: whether both orders picked the same winner.")
    checklist: list[str] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    rationale: str = ""
    task_type_pred: str | None = Field(None, description="MSRL judge: the task type the model named in <type>.")
    orders: list[OrderResult] = Field(default_factory=list)
    raw: dict[str, str] = Field(default_factory=dict)
    parse_ok: bool = False
    usage: dict[str, Usage] = Field(default_factory=dict)
    latency_s: float = 0.0
    error: str | None = Field(None, description="Why this item could not be judged (bad media, backend failure).")
