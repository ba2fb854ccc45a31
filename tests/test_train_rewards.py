"""Training rewards and advantages on scripted completions, checked against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from deltarubric.rubrics.parsing import parse_checklist, parse_msrl, parse_verdict
from deltarubric.rubrics.targets import render_target
from deltarubric.train.grpo import role_advantages, role_layout
from deltarubric.train.render import order_for, shown, swap_labels
from deltarubric.train.rewards import (
    checklist_format,
    checklist_probe,
    checklist_usable,
    rewards_for,
    verdict_correct,
    verdict_format,
)

GOOD_LIST = "Generated Checklist:\n1. Is the top left cell red?\n2. Are there two blue shapes?"
LEAKY_LIST = "Generated Checklist:\n1. Is the top left cell red?\n2. Response A is correct about the colour?"
WIN_A = "Analysis:\n1. It is red. Favors: A\nJustification: A is right.\nWinner: [[A]]"
WIN_B = "Analysis:\n1. It is blue. Favors: B\nJustification: B is right.\nWinner: [[B]]"
JUNK = "the cat sat"


def test_verdict_rewards_read_the_judge_parser_and_skip_planner_rows() -> None:
    completions = [WIN_A, WIN_B, JUNK, GOOD_LIST]
    role = ["verifier", "verifier", "verifier", "planner"]
    label = ["A", "A", "A", "A"]
    assert verdict_correct(completions, label, role=role) == [1.0, 0.0, 0.0, None]
    assert verdict_format(completions, role=role) == [1.0, 1.0, 0.0, None]
    # One-step judges have no role column: every row is a judgment.
    assert verdict_correct([WIN_B], ["B"]) == [1.0]


def test_generated_column_overrides_the_completion_text() -> None:
    # A verifier row's completion also holds the planner's checklist and the verifier prompt; only its own turn counts.
    completion = GOOD_LIST + "\nYou are now the Checklist Verifier ... Winner: [[A]] or [[B]]\n" + WIN_B
    assert verdict_correct([completion], ["B"], role=["verifier"], generated=[WIN_B]) == [1.0]
    assert verdict_correct([completion], ["B"], role=["verifier"], generated=[JUNK]) == [0.0]


def test_msrl_rows_use_the_msrl_parser() -> None:
    text = "<type>image_understanding</type><think>B is right</think><answer>B</answer>"
    assert verdict_correct([text], ["B"], parser=["msrl"]) == [1.0]
    assert verdict_format([text, "<answer>B</answer>"], parser=["msrl", "msrl"]) == [1.0, 0.0]


def test_planner_probe_is_the_mean_correctness_of_its_own_verifications() -> None:
    # One pair (group 0), N=2 checklists, K=2 verifications each.
    # Rows: planner 0, planner 1, v(0,0), v(0,1), v(1,0), v(1,1).
    role = ["planner", "planner", "verifier", "verifier", "verifier", "verifier"]
    chain = [0, 1, 0, 0, 1, 1]
    group = [0] * 6
    label = ["A"] * 6
    generated = [GOOD_LIST, LEAKY_LIST, WIN_A, WIN_B, WIN_A, WIN_A]
    probe = checklist_probe(generated, role, group, chain, label, generated)
    # Checklist 0: verifications right 1 of 2 -> 0.5. Checklist 1 leaks the verdict -> no credit although both right.
    assert probe == [0.5, 0.0, None, None, None, None]
    assert checklist_format(generated, role, generated) == [1.0, 0.0, None, None, None, None]


def test_checklist_usable_uses_the_parser_leak_rule() -> None:
    assert checklist_usable(GOOD_LIST)
    assert not checklist_usable(LEAKY_LIST)
    assert not checklist_usable("Generated Checklist:\n")
    assert parse_checklist(LEAKY_LIST).leaked == 1


def test_role_layout_matches_the_rollout_rows() -> None:
    n, k = 2, 3
    layout = [role_layout(i, "deltarubric", n, k) for i in range(n * (1 + k))]
    assert layout == [("planner", 0), ("planner", 1)] + [("verifier", 0)] * 3 + [("verifier", 1)] * 3
    assert role_layout(5, "direct", n, k) == ("judge", 0)  # one order for all rows of a one-step judge's pair


def test_decoupled_advantages_by_hand() -> None:
    # Two pairs; per pair N=2 planners then K=2 verifiers per checklist.
    roles = ["planner", "planner", "verifier", "verifier", "verifier", "verifier"] * 2
    chains = [0, 1, 0, 0, 1, 1] * 2
    groups = [0] * 6 + [1] * 6
    r = torch.tensor([0.5, 1.0, 1.0, 0.0, 1.0, 1.0, 0.2, 0.2, 1.0, float("nan"), 0.0, 1.0])
    adv = role_advantages(r, roles, groups, chains, verifier_baseline="checklist", scale="none")
    # Pair 0: planners 0.5/1.0 (mean .75); verifiers of checklist 0: 1/0 (mean .5); of checklist 1: 1/1 (mean 1).
    # Pair 1: planners equal (zero variance -> 0); checklist 0: 1 and NaN -> NaN gets 0, the other is its own mean;
    # checklist 1: 0/1 (mean .5).
    expected = [-0.25, 0.25, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.5, 0.5]
    assert adv.tolist() == pytest.approx(expected)
    # Across all N*K verifications of the pair instead: pair 0 verifiers 1,0,1,1 (mean .75).
    adv_pair = role_advantages(r, roles, groups, chains, verifier_baseline="pair", scale="none")
    assert adv_pair[2:6].tolist() == pytest.approx([0.25, -0.75, 0.25, 0.25])
    # Group scaling divides each baseline group by its own std (+1e-4), as TRL's scale_rewards="group".
    scaled = role_advantages(r, roles, groups, chains, verifier_baseline="checklist", scale="group")
    std = torch.tensor([0.5, 1.0]).std().item()
    assert scaled[0].item() == pytest.approx(-0.25 / (std + 1e-4))
    assert not any(math.isnan(x) for x in scaled.tolist())


def test_targets_parse_back_to_their_label() -> None:
    checklist = ["Is the top left cell red?", "Are there two blue shapes?"]
    for winner in "AB":
        text = render_target("verdict", checklist=checklist, winner=winner, rationale=f"Response {winner} is right.")
        parsed = parse_verdict(text)
        assert parsed.winner == winner and [f for _, f in parsed.findings] == [winner, winner]
        assert parse_verdict(render_target("verdict_only", winner=winner)).winner == winner
        msrl = render_target("msrl", task_type="image_understanding", caption="", rationale="x", winner=winner)
        assert parse_msrl(msrl).winner == winner and parse_msrl(msrl).task_type == "image_understanding"


def test_order_and_label_helpers() -> None:
    orders = {order_for(0, f"p{i}", 0, 0) for i in range(40)}
    assert orders == {"AB", "BA"}  # both orders occur
    assert order_for(0, "p1", 3, 1) == order_for(0, "p1", 3, 1)  # reproducible
    assert shown("A", "AB") == "A" and shown("A", "BA") == "B"
    assert swap_labels("Response A says red; Response B is right. Winner: [[B]] Favors: A") == (
        "Response B says red; Response A is right. Winner: [[A]] Favors: B"
    )


def test_rewards_for_each_judge() -> None:
    assert [f.__name__ for f in rewards_for("direct")] == ["verdict_correct", "verdict_format"]
    names = [f.__name__ for f in rewards_for("deltarubric")]
    assert names == ["verdict_correct", "verdict_format", "checklist_probe", "checklist_format"]


def test_zero_variance_groups_are_counted_per_role() -> None:
    from deltarubric.train.grpo import baseline_keys, zero_variance_share

    roles = ["planner", "planner", "verifier", "verifier", "verifier", "verifier"]
    keys = baseline_keys(roles, [0] * 6, [0, 1, 0, 0, 1, 1], "checklist")
    r = torch.tensor([0.5, 0.5, 1.0, 0.0, 1.0, 1.0])
    assert zero_variance_share(r, keys, "planner") == 1.0  # both checklists scored the same
    assert zero_variance_share(r, keys, "verifier") == 0.5  # checklist 1's two runs agree


def test_checklist_format_logs_length_and_leaks() -> None:
    logged: dict[str, float] = {}
    checklist_format(
        [GOOD_LIST, LEAKY_LIST, WIN_A],
        ["planner", "planner", "verifier"],
        [GOOD_LIST, LEAKY_LIST, WIN_A],
        log_metric=logged.__setitem__,
    )
    assert logged == {"planner/checklist_len": 1.5, "planner/leak_rate": 0.5}
