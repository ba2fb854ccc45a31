"""deltarubric's reward-model core: `Judge` turns `JudgeRequest`s into `Verdict`s through a backend.

Importing this package loads no engine (torch, vLLM): backends are imported when a judge is built.
"""

from deltarubric.rm.config import JudgeConfig, SamplingConfig
from deltarubric.rm.judge import Judge
from deltarubric.rm.types import Candidate, Finding, JudgeRequest, Verdict

__all__ = ["Candidate", "Finding", "Judge", "JudgeConfig", "JudgeRequest", "SamplingConfig", "Verdict"]
