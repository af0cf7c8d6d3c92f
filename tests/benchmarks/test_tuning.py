"""The leave-one-conversation-out protocol and the offline attribution / answer tuning built on it."""

from __future__ import annotations

import pytest

from memstream.agent.attribution import AttributionParams
from memstream.benchmarks.answer_tuning import AnswerParams, final_answer
from memstream.benchmarks.answer_tuning import score as score_answers
from memstream.benchmarks.attribution_tuning import abstains, abstains_old_rule, fit, outcome
from memstream.benchmarks.tuning import leave_one_group_out, pick_best


def test_each_fold_is_fitted_without_its_own_conversation():
    groups = {"a": [1, 1, 1], "b": [5, 5], "c": [9]}
    seen_by_fit = []

    def fit_mean(items):
        seen_by_fit.append(sorted(items))
        return sum(items) / len(items)

    def error(pairs):
        return {"abs_error": sum(abs(item - value) for item, value in pairs) / len(pairs)}

    result = leave_one_group_out(groups, fit_mean, error)
    assert result.chosen_per_fold == {"a": 19 / 3, "b": 12 / 4, "c": 13 / 5}
    assert result.chosen_all == 22 / 6
    # Held out, each conversation is scored with the value fitted on the others: always worse here than in-sample.
    assert result.held_out["abs_error"] > result.in_sample["abs_error"]
    assert [1, 1, 1] not in seen_by_fit[1:2]  # the fold leaving out "a" never saw it
    assert seen_by_fit[1] == [5, 5, 9]


def test_loco_needs_two_conversations_and_pick_best_prefers_the_first_on_ties():
    with pytest.raises(ValueError, match="at least two"):
        leave_one_group_out({"a": [1]}, lambda items: 0, lambda pairs: {})
    assert pick_best(["answer-more", "answer-less"], lambda c: (1,)) == "answer-more"
    with pytest.raises(ValueError):
        pick_best([], lambda c: (0,))


def row(code, conversation="c1", asked_about="Ann", hits=(("Bob", 0.05), ("Bob", 0.04), ("Bob", 0.03), ("Ann", 0.02)), **extra):
    base = {
        "qid": f"{conversation}:{code}:{len(extra)}",
        "conversation": conversation,
        "code": code,
        "asked_about": asked_about,
        "people": [asked_about] if asked_about else [],
        "hits": [{"speaker": s, "fused": f, "names": []} for s, f in hits],
        "question": "What did Ann paint?",
        "gold": "a sunset",
        "texts": ["I painted a sunset over the lake."] + ["Thanks for the tea."] * (len(hits) - 1),
        "prediction": "She painted a lake",
        "prompt_tokens": 500,
    }
    base.update(extra)
    return base


def test_attribution_fit_keeps_false_not_mentioned_under_the_cap():
    ann_second = (("Bob", 0.05), ("Ann", 0.03))
    rows = [row(5) for _ in range(3)] + [row(4, hits=ann_second) for _ in range(60)] + [row(4)]
    # The old margin rule fires on every one of them: 61 wrong "not mentioned".
    assert all(abstains_old_rule(r, 0.005) for r in rows)
    chosen = fit(rows)
    result = outcome([(r, chosen) for r in rows])
    # One answerable question looks exactly like the adversarial ones: 1 of 61 (1.6%) is within the 2% cap.
    assert result["false_not_mentioned"] == 1 and result["adversarial_caught"] == 3
    assert not abstains(rows[3], chosen)
    # Past the cap, the fit gives up catching rather than answer "not mentioned" wrongly.
    strict = fit(rows + [row(4) for _ in range(3)])
    assert outcome([(r, strict) for r in rows])["false_not_mentioned"] == 0


def test_answer_steps_applied_offline():
    answerable = row(4, hits=(("Ann", 0.05),))
    off = AnswerParams(None, ())
    assert final_answer(answerable, off) == ("She painted a lake", 500, "model")
    prediction, tokens, step = final_answer(answerable, AnswerParams(None, ("what",)))
    assert (step, tokens) == ("extract", 0) and "sunset" in prediction
    adversarial = row(5)
    assert final_answer(adversarial, AnswerParams(AttributionParams(3, 0.8, False), ()))[2] == "attribution"
    scores = score_answers([(answerable, AnswerParams(None, ("what",))), (adversarial, AnswerParams(AttributionParams(3, 0.8, False), ()))])
    assert scores["per_category"]["adversarial"]["f1"] == 1.0 and scores["false_not_mentioned_rate"] == 0.0


def test_the_extraction_style_is_chosen_by_leave_one_conversation_out():
    from memstream.benchmarks.answer_tuning import extraction_grid, tune_answers

    grid = extraction_grid()
    assert (("what",), "after", "off") in grid and (("what",), "content", "off") in grid and (("what",), "content", "evidence") in grid
    assert (("count",), "content", "off") not in grid  # without "what" the style changes nothing: not varied
    assert grid[0] == ((), "after", "off")  # the earlier behaviour first: a tie keeps it
    texts = ["I painted a sunset over the lake last week."]
    rows = [row(4, conversation=c, hits=(("Ann", 0.05),), texts=texts, qid=f"{c}:{i}") for c in ("c1", "c2") for i in range(3)]
    after = AnswerParams(None, ("what",))
    content = AnswerParams(None, ("what",), extract_style="content")
    # "after" reads past the question's last word ("a sunset over the lake last week"); "content" keeps "sunset lake".
    assert final_answer(rows[0], content)[0] == "sunset lake"
    assert score_answers([(r, content) for r in rows])["f1"] > score_answers([(r, after) for r in rows])["f1"]
    result = tune_answers(rows, rows)
    assert result["loco"]["chosen_all"]["extract_style"] == "content"
    assert all(choice["extract_style"] == "content" for choice in result["loco"]["chosen_per_fold"].values())


def test_trimming_is_applied_offline_to_what_the_model_wrote_only():
    answerable = row(4, hits=(("Ann", 0.05),))
    assert final_answer(answerable, AnswerParams(None, (), trim="question")) == ("lake", 500, "model")
    # "lake" is in the records ("I painted a sunset over the lake."): grounded, it stays; an invented word goes.
    assert final_answer(answerable, AnswerParams(None, (), trim="evidence"))[0] == "lake"
    assert final_answer(row(4, hits=(("Ann", 0.05),), prediction="She painted a lake and a castle"), AnswerParams(None, (), trim="evidence"))[0] == "lake"
    dated = row(2, hits=(("Ann", 0.05),), prediction="7 May 2023", prompt_tokens=0, question="When did Ann paint in May?")
    assert final_answer(dated, AnswerParams(None, (), trim="evidence"))[0] == "7 May 2023"  # the date step's answer is left alone
    assert AnswerParams(None, ("count",), trim="question").describe() == {"attribution": None, "extract_kinds": ["count"], "trim": "question"}
