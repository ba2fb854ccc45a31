"""Importing this package registers every benchmark (one module each)."""

from deltarubric.eval.benchmarks import (  # noqa: F401
    genai_bench,
    mm_rlhf_rewardbench,
    multimodal_rewardbench,
    pairs,
    vl_rewardbench,
)
