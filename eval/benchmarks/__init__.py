"""Importing this package registers every benchmark (one module each)."""

from eval.benchmarks import genai_bench, mm_rlhf_rewardbench, multimodal_rewardbench, vl_rewardbench  # noqa: F401
