"""Thin trainer adapters that score rollouts through the reward server's `POST /v1/rewards` route.

- `deltarubric.rm.adapters.trl`: `make_judge_reward(url, ...)`, a reward function for TRL's `GRPOTrainer`.
- `deltarubric.rm.adapters.verl`: `compute_score` / `compute_score_async` for verl's custom reward function.
- `deltarubric.rm.adapters.swift`: `JudgeORM`, an ms-swift ORM plugin.

All share `deltarubric.rm.adapters.client.RewardClient`, which builds and reads the payloads with the server's own
wire schema, `deltarubric.rm.reward_protocol`. Nothing heavy (torch, transformers, trainers) is imported here.
"""
