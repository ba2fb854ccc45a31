"""GRPO for judges on TRL: one-step judges (`direct`, `msrl`) and DeltaRubric's multi-role RL.

TRL's `GRPOTrainer` does the heavy lifting (generation with transformers or vLLM, the clipped loss, DeepSpeed/FSDP,
gradient accumulation, logging, checkpoints). This subclass adds three things:

1. Each generation batch is rendered with the judge's own prompt renderer, in an A/B order drawn per rollout chain.
2. DeltaRubric rollouts (`rollout_func`): each pair arrives as G = N·(1+K) rows. Rows 0..N-1 are planner rollouts
   (checklists); row N + j·K + k is verification k of checklist j. A verifier row's completion is the planner's
   cleaned checklist and the verifier's user turn (loss-masked with `env_mask=0`) followed by the verifier's own
   tokens, so TRL's forward pass sees the same prompt and image features for every row of a pair.
3. Decoupled advantages: planner rewards are normalised across the N checklists of a pair, verifier rewards across
   the K runs of one checklist (or all N·K of the pair). Both roles' rows go into the same policy update.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch
from accelerate.utils import gather_object
from datasets import Dataset
from trl import GRPOTrainer

from deltarubric.rm.pairs import LabelledPair
from deltarubric.rubrics.parsing import PARSERS, parse_checklist
from deltarubric.rubrics.prompts import load_method
from deltarubric.train.config import JudgeGRPOConfig
from deltarubric.train.render import first_turn, next_turn, order_for, prepare_pair, shown, to_trl
from deltarubric.train.rewards import rewards_for

log = logging.getLogger(__name__)


def role_layout(index: int, judge: str, n: int, k: int) -> tuple[str, int]:
    """(role, chain) of row `index` within its pair's group of rows. A chain is the rows that share one A/B order.

    One-step judges show all G rows of a pair in one order (per step): TRL's vLLM server mode samples the G completions
    from the first row's prompt, so rows must not differ in their prompts.
    """
    if judge != "deltarubric":
        return "judge", 0
    if index < n:
        return "planner", index
    return "verifier", (index - n) // k


def baseline_keys(
    roles: list[str], groups: list[int], chains: list[int], verifier_baseline: str
) -> list[tuple[int, str, int]]:
    """The group each row's advantage is measured against: (pair, role, checklist or -1)."""
    return [
        (g, r, c if r == "verifier" and verifier_baseline == "checklist" else -1)
        for r, g, c in zip(roles, groups, chains)
    ]


def zero_variance_share(rewards: torch.Tensor, keys: list[tuple[int, str, int]], role: str) -> float:
    """Share of `role`'s baseline groups whose rewards are all equal: they carry no learning signal."""
    groups = [[i for i, k in enumerate(keys) if k == key] for key in dict.fromkeys(k for k in keys if k[1] == role)]
    flat = [torch.unique(rewards[g][~torch.isnan(rewards[g])]).numel() <= 1 for g in groups]
    return sum(flat) / len(flat) if flat else 0.0


def role_advantages(
    rewards: torch.Tensor, roles: list[str], groups: list[int], chains: list[int], *, verifier_baseline: str, scale: str
) -> torch.Tensor:
    """Advantages with a baseline per role: planners against the other checklists of their pair, verifiers against
    the other runs of their checklist (`verifier_baseline='checklist'`) or of their pair ('pair').

    NaN rewards (no reward function applied) get advantage 0. `scale`: 'group' divides by the baseline group's
    std (+1e-4), 'none' only centres, as TRL's `scale_rewards`; 'batch' divides by the batch std.
    """
    keys = baseline_keys(roles, groups, chains, verifier_baseline)
    adv = torch.zeros_like(rewards)
    for key in dict.fromkeys(keys):
        idx = torch.tensor([i for i, k in enumerate(keys) if k == key])
        vals = rewards[idx]
        ok = ~torch.isnan(vals)
        if ok.sum() == 0:
            continue
        centred = vals - vals[ok].mean()
        if scale == "group" and ok.sum() > 1:
            centred = centred / (vals[ok].std() + 1e-4)
        adv[idx] = torch.nan_to_num(centred, nan=0.0)
    if scale == "batch":
        adv = adv / (torch.nan_to_num(rewards).std() + 1e-4)
    return adv


def check_whole_pairs(rows_per_process: int, rows_per_pair: int) -> None:
    """Each process must generate whole pairs: advantages are computed per pair on the process that holds it."""
    if rows_per_process % rows_per_pair:
        raise ValueError(
            f"per_device_train_batch_size x steps_per_generation = {rows_per_process} rows per process is not a "
            f"multiple of the {rows_per_pair} rows of one pair, so a pair's rows would be split across processes; "
            f"use a multiple of {rows_per_pair}"
        )


def _pair_dataset(pairs: list[LabelledPair]) -> Dataset:
    # The prompt is rendered per batch (its A/B order changes per rollout); this placeholder only marks the dataset
    # as conversational for TRL.
    return Dataset.from_list(
        [{"prompt": [{"role": "user", "content": p.request.id}], "pair_id": p.request.id} for p in pairs]
    )


class JudgeGRPOTrainer(GRPOTrainer):
    """GRPO on labelled pairs for a judge from `rubrics/prompts` (see the module docstring)."""

    def __init__(
        self,
        model: Any,
        args: JudgeGRPOConfig,
        train_pairs: list[LabelledPair],
        *,
        processing_class: Any = None,
        reward_funcs: list[Any] | None = None,
        max_pixels: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.method = load_method(args.judge)
        if args.judge == "deltarubric" and [s.produces for s in self.method.stages] != ["checklist", "verdict"]:
            raise ValueError("the deltarubric judge must have a checklist stage then a verdict stage")
        if args.judge != "deltarubric" and len(self.method.stages) != 1:
            raise ValueError(f"judge {args.judge!r} has {len(self.method.stages)} stages; one-step training needs one")
        self.pairs = {p.request.id: p for p in train_pairs}
        self.max_pixels = max_pixels
        check_whole_pairs(
            args.per_device_train_batch_size * (args.steps_per_generation or args.gradient_accumulation_steps),
            args.num_generations,
        )
        if processing_class is not None:
            # TRL left-pads prompt ids but takes mm_token_type_ids from the processor: both must pad on the left, or
            # shorter prompts in a batch get shifted image positions in the loss.
            processing_class.tokenizer.padding_side = "left"
        args.remove_unused_columns = False  # our columns (pair_id) must reach the batch
        super().__init__(
            model=model,
            reward_funcs=reward_funcs or rewards_for(args.judge),
            args=args,
            train_dataset=_pair_dataset(train_pairs),
            processing_class=processing_class,
            rollout_func=self._multi_role_rollout if args.judge == "deltarubric" else None,
            **kwargs,
        )
        self._last_rewards: torch.Tensor | None = None

    # -- 1. render each row in its chain's order ------------------------------------------------------------------
    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        args: JudgeGRPOConfig = self.args  # type: ignore[assignment]
        g = self.num_generations
        step = self.state.global_step
        prepared: dict[str, Any] = {}
        for i, row in enumerate(inputs):
            pair = self.pairs[row["pair_id"]]
            role, chain = role_layout(i % g, args.judge, args.num_checklists, args.num_verifications)
            order = order_for(args.order_seed, pair.request.id, step, chain)
            if pair.request.id not in prepared:
                prepared[pair.request.id] = prepare_pair(self.method, pair, self.max_pixels)
            row["prompt"], row["images"] = to_trl(first_turn(self.method, prepared[pair.request.id], order))
            row.update(
                role=role,
                chain=chain,
                group=i // g,
                order=order,
                label_shown=shown(pair.label, order),
                parser=self.method.stages[-1].parser,
            )
        self._check_batch(inputs, g, step)
        # TRL calls rollout_func(prompts, trainer) only; the rows' roles and orders reach it through these.
        self._prepared, self._rollout_inputs = prepared, inputs
        output = super()._generate_and_score_completions(inputs)
        if args.judge == "deltarubric":
            output["advantages"] = self._decoupled_advantages(inputs)
        return output

    def _check_batch(self, inputs: list[dict[str, Any]], g: int, step: int) -> None:
        """Every block of G rows must be one pair (TRL's sampler repeats each pair G times in a row); advantages are
        computed per block on this process, so a split pair would silently get a wrong baseline."""
        ids = [x["pair_id"] for x in inputs]
        blocks = [ids[i : i + g] for i in range(0, len(ids), g)]
        whole = all(len(b) == g and len(set(b)) == 1 for b in blocks)
        info = {
            "rank": self.accelerator.process_index,
            "world": self.accelerator.num_processes,
            "step": step,
            "rows": len(ids),
            "pairs": len(blocks),
            "whole": whole,
            "pair_ids": [b[0] for b in blocks],
        }
        log.info("rollout batch %s", json.dumps(info))
        if not whole:
            raise RuntimeError(f"a generation batch does not hold whole pairs of {g} rows: {info}")

    # -- 2. the multi-role rollout --------------------------------------------------------------------------------
    def _multi_role_rollout(self, prompts: list[Any], trainer: GRPOTrainer) -> dict[str, list[Any]]:
        args: JudgeGRPOConfig = self.args  # type: ignore[assignment]
        inputs = self._rollout_inputs
        planner_rows = [i for i, x in enumerate(inputs) if x["role"] == "planner"]
        planner_ids, images, mm = self._tokenize_prompts([prompts[i] for i in planner_rows])
        completions, logprobs = self._generate_single_turn(planner_ids, images, mm, 1)
        # A verifier row's prompt is its chain's planner prompt (same pair, same order).
        chain_ids = {(inputs[i]["group"], inputs[i]["chain"]): list(ids) for i, ids in zip(planner_rows, planner_ids)}
        prompt_ids = [chain_ids[(x["group"], x["chain"])] for x in inputs]

        # Each checklist, cleaned as the judge cleans it, opens K verifier conversations.
        replies: dict[tuple[int, int], tuple[str, list[str]]] = {}
        for i, ids in zip(planner_rows, completions):
            text = self.processing_class.decode(ids, skip_special_tokens=True)
            replies[(inputs[i]["group"], inputs[i]["chain"])] = (text, parse_checklist(text).checklist)
        verifier_rows = [i for i, x in enumerate(inputs) if x["role"] == "verifier"]
        conversations: list[Any] = []
        extra_rows: list[int] = []
        for i in verifier_rows:
            x = inputs[i]
            text, checklist = replies[(x["group"], x["chain"])]
            conversations.append(self._verifier_conversation(x, text, checklist))
        if args.rubric_delta:
            # One checklist-free verification per pair, in chain 0's order: the planner's reward baseline.
            for i in planner_rows:
                if inputs[i]["chain"] == 0:
                    extra_rows.append(i)
                    conversations.append(self._verifier_conversation(inputs[i], "", []))
        v_prompt_ids, v_img, v_mm = self._tokenize_prompts([self._with_images(*to_trl(c)) for c in conversations])
        v_completions, v_logprobs = self._generate_single_turn(v_prompt_ids, v_img, v_mm, 1)

        out_completion: list[list[int]] = [[] for _ in inputs]
        out_mask: list[list[int]] = [[] for _ in inputs]
        out_logprobs: list[list[float] | None] = [None for _ in inputs]
        generated: list[str] = ["" for _ in inputs]
        for j, i in enumerate(planner_rows):
            out_completion[i], out_mask[i] = completions[j], [1] * len(completions[j])
            out_logprobs[i] = list(logprobs[j]) if logprobs else None
            generated[i] = self.processing_class.decode(completions[j], skip_special_tokens=True)
        for j, i in enumerate(verifier_rows):
            full, own = v_prompt_ids[j], v_completions[j]
            base = prompt_ids[i]
            if list(full[: len(base)]) != list(base):
                raise RuntimeError(
                    "the chat template renders the verifier conversation with a different prefix than the planner "
                    "prompt; multi-role rollouts need a template that only appends turns"
                )
            bridge = list(full[len(base) :])
            out_completion[i] = bridge + list(own)
            out_mask[i] = [0] * len(bridge) + [1] * len(own)
            out_logprobs[i] = ([0.0] * len(bridge) + list(v_logprobs[j])) if v_logprobs else None
            generated[i] = self.processing_class.decode(own, skip_special_tokens=True)
        if extra_rows:
            # The rubric delta: verifications with a checklist against one without, on the same pairs. Logged, not
            # rewarded: a per-pair constant cancels in the planner's per-pair baseline.
            with_list = [self._correct(generated[i], inputs[i]) for i in verifier_rows]
            without = [
                self._correct(
                    self.processing_class.decode(v_completions[len(verifier_rows) + j], skip_special_tokens=True),
                    inputs[i],
                )
                for j, i in enumerate(extra_rows)
            ]
            gap = torch.tensor(
                [sum(with_list) / len(with_list) - sum(without) / len(without)], device=self.accelerator.device
            )
            self._metrics["train"]["planner/no_rubric_gap"].append(self.accelerator.gather(gap).mean().item())
        result: dict[str, list[Any]] = {
            "prompt_ids": [list(p) for p in prompt_ids],
            "completion_ids": out_completion,
            "logprobs": None if any(lp is None for lp in out_logprobs) else out_logprobs,  # type: ignore[dict-item]
            "env_mask": out_mask,
            "generated": generated,
        }
        return result

    @staticmethod
    def _correct(text: str, row: dict[str, Any]) -> float:
        return float(PARSERS["verdict"](text).winner == row["label_shown"])

    def _verifier_conversation(self, row: dict[str, Any], reply: str, checklist: list[str]) -> Any:
        pair = self.pairs[row["pair_id"]]
        prepared = self._prepared[pair.request.id]
        return next_turn(
            self.method, prepared, row["order"], first_turn(self.method, prepared, row["order"]), reply, checklist
        )

    @staticmethod
    def _with_images(prompt: list[dict[str, Any]], images: list[Any]) -> list[dict[str, Any]]:
        from trl.data_utils import prepare_multimodal_messages

        return prepare_multimodal_messages(prompt, images=images)

    # -- 3. decoupled advantages ----------------------------------------------------------------------------------
    def _calculate_rewards(
        self, inputs: list[dict[str, Any]], prompts: Any, completions: Any, completion_ids_list: Any
    ) -> torch.Tensor:
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards = rewards_per_func
        return rewards_per_func

    def _decoupled_advantages(self, inputs: list[dict[str, Any]]) -> torch.Tensor:
        """Per-role advantages for this process's rows, from the rewards TRL computed (gathered over processes)."""
        args: JudgeGRPOConfig = self.args  # type: ignore[assignment]
        acc = self.accelerator
        assert self._last_rewards is not None
        per_func = self._last_rewards.cpu()
        every = (per_func * self.reward_weights.cpu().unsqueeze(0)).nansum(dim=1)
        every[torch.isnan(per_func).all(dim=1)] = torch.nan  # no function applied: no reward (advantage 0)
        rewards = every[acc.process_index * len(inputs) : (acc.process_index + 1) * len(inputs)]  # as TRL slices
        roles, groups, chains = [x["role"] for x in inputs], [x["group"] for x in inputs], [x["chain"] for x in inputs]
        adv = role_advantages(
            rewards, roles, groups, chains, verifier_baseline=args.verifier_baseline, scale=str(args.scale_rewards)
        )
        mode = "train" if self.model.training else "eval"
        all_roles = gather_object(roles) if acc.num_processes > 1 else roles
        keys = baseline_keys(roles, groups, chains, args.verifier_baseline)
        for role in ("planner", "verifier"):
            vals = every[torch.tensor([r == role for r in all_roles])]
            self._metrics[mode][f"{role}/reward_mean"].append(torch.nanmean(vals).item())
            self._metrics[mode][f"{role}/reward_std"].append(_nanstd(vals))
            share = torch.tensor([zero_variance_share(rewards, keys, role)], device=acc.device)
            self._metrics[mode][f"{role}/frac_reward_zero_std"].append(acc.gather(share).mean().item())
        return adv.to(self.accelerator.device)


def _nanstd(x: torch.Tensor) -> float:
    x = x[~torch.isnan(x)]
    return x.std().item() if x.numel() > 1 else 0.0
