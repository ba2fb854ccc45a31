"""Thin trainer adapters that score rollouts through the reward server's `POST /v1/rewards` route.

- `rm.adapters.trl`: `make_judge_reward(url, ...)`, a reward function for TRL's `GRPOTrainer`.
- `rm.adapters.verl`: `compute_score` / `compute_score_async` for verl's custom reward function.
- `rm.adapters.swift`: `JudgeORM`, an ms-swift ORM plugin.

All share `rm.adapters.client.RewardClient`. Nothing heavy (torch, transformers, trainers) is imported here.
"""
