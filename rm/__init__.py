"""deltarubric's reward-model core: `Judge` turns `JudgeRequest`s into `Verdict`s through a backend.

Importing this package loads no engine (torch, vLLM): backends are imported when a judge is built.
"""

from rm.config import JudgeConfig, SamplingConfig
from rm.judge import Judge
from rm.types import Candidate, Finding, JudgeRequest, Verdict

__all__ = ["Candidate", "Finding", "Judge", "JudgeConfig", "JudgeRequest", "SamplingConfig", "Verdict"]
