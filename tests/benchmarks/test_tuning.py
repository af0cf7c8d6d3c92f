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


BOB_STORY = (("Bob", 0.05, "I painted a sunset over the lake."), ("Bob", 0.04, "Thanks for the tea."), ("Bob", 0.03, "See you soon."), ("Ann", 0.02, "Thanks for the tea."))


def row(code, conversation="c1", asked_about="Ann", hits=BOB_STORY, **extra):
    """A saved signals row; hits are (speaker, fused score, text), best first."""
    base = {
        "qid": f"{conversation}:{code}:{len(extra)}",
        "conversation": conversation,
        "code": code,
        "asked_about": asked_about,
        "people": [asked_about] if asked_about else [],
        "speakers": ["Ann", "Bob"],
        "hits": [{"speaker": s, "fused": f} for s, f, _ in hits],
        "question": "What did Ann paint?",
        "query": "What did paint?",
        "gold": "a sunset",
        "texts": [t for *_, t in hits],
        "prediction": "She painted a lake",
        "prompt_tokens": 500,
    }
    base.update(extra)
    return base


ANN_TOO = (("Bob", 0.05, "I painted a sunset over the lake."), ("Ann", 0.03, "I painted the lake too."))
ANN_ONLY = (("Ann", 0.05, "I painted a sunset over the lake."),)
CAUGHT = AttributionParams(rank_decay=0.5, max_share=0.3, min_other=1)


def test_attribution_fit_keeps_false_not_mentioned_under_the_cap():
    rows = [row(5) for _ in range(3)] + [row(4, hits=ANN_TOO) for _ in range(60)] + [row(4)]
    # The old margin rule fires on every one of them: 61 wrong "not mentioned".
    assert all(abstains_old_rule(r, 0.005) for r in rows)
    chosen = fit(rows)
    result = outcome([(r, chosen) for r in rows])
    # One answerable question looks exactly like the adversarial ones: 1 of 61 (1.6%) is within the 2% cap.
    assert result["false_not_mentioned"] == 1 and result["adversarial_caught"] == 3
    assert not abstains(rows[3], chosen)  # Ann tells her own painting second: her share (0.4) is past every max_share that catches
    # The offline test (cached per rank_decay) says what the agent's decision says.
    from memstream.agent.attribution import decide_attribution
    from memstream.benchmarks.attribution_tuning import hits_of

    for params in (chosen, CAUGHT, AttributionParams(), AttributionParams(1.0, 0.5, 0)):
        for r in (rows[0], rows[3], rows[-1], row(4, hits=ANN_ONLY)):
            assert abstains(r, params) == (decide_attribution("Ann", hits_of(r), params) is not None)
    # Past the cap, the fit gives up catching rather than answer "not mentioned" wrongly.
    strict = fit(rows + [row(4) for _ in range(3)])
    assert outcome([(r, strict) for r in rows])["false_not_mentioned"] == 0


def test_the_training_cap_is_itself_chosen_on_conversations_left_out():
    from memstream.agent.attribution import EvidenceHit
    from memstream.benchmarks.attribution_tuning import fit_capped

    def signals(code, conversation, i, asked, others):
        # The decision's text signals given directly: Bob's turn, with this many question words about Ann and about others.
        return row(code, conversation=conversation, qid=f"{conversation}:{code}:{i}", _evidence_hits=[EvidenceHit("Bob", 0.05, asked, others)])

    story, aside, normal = (3.5, 6.5), (0.0, 1.0), (6.0, 1.0)  # Ann's share 0.35 of a lot, 0 of a little, 0.86
    answer_all = AttributionParams(0.5, 0.1, 12)
    catch_stories = AttributionParams(0.5, 0.4, 5)  # catches `story` only
    catch_asides = AttributionParams(0.5, 0.3, 1)  # catches `aside` only
    grid = [answer_all, catch_stories, catch_asides, AttributionParams(0.5, 0.4, 1)]
    rows = []
    for c, answerable, adversarial in (("c1", [normal] * 57 + [story] * 3, [story] * 4), ("c2", [normal] * 57 + [aside] * 3, [aside] * 3), ("c3", [normal] * 60, [story] * 2 + [aside] * 2)):
        rows += [signals(4, c, i, *s) for i, s in enumerate(answerable)] + [signals(5, c, i, *s) for i, s in enumerate(adversarial)]
    # On all three, catching stories costs 3 of 180 answerable (1.7%, under 2%) and catches the most...
    assert fit_capped(rows, 0.02, grid) == catch_stories
    # ...but fitted without c1 it catches stories and errs on c1's three, fitted without c2 it catches asides and errs on
    # c2's three: 6 of 180 (3.3%) left out. No cap keeps that under 2%, so the fit answers everything.
    assert fit(rows, grid) == answer_all


def test_answer_steps_applied_offline():
    answerable = row(4, hits=ANN_ONLY)
    off = AnswerParams(None, ())
    assert final_answer(answerable, off) == ("She painted a lake", 500, "model")
    prediction, tokens, step = final_answer(answerable, AnswerParams(None, ("what",)))
    assert (step, tokens) == ("extract", 0) and "sunset" in prediction
    adversarial = row(5)
    assert final_answer(adversarial, AnswerParams(CAUGHT, ()))[2] == "attribution"
    scores = score_answers([(answerable, AnswerParams(None, ("what",))), (adversarial, AnswerParams(CAUGHT, ()))])
    assert scores["per_category"]["adversarial"]["f1"] == 1.0 and scores["false_not_mentioned_rate"] == 0.0


def test_the_extraction_style_is_chosen_by_leave_one_conversation_out():
    from memstream.benchmarks.answer_tuning import extraction_grid, tune_answers

    grid = extraction_grid()
    assert (("what",), "after", "off", 1) in grid and (("what",), "content", "off", 1) in grid and (("what",), "content", "evidence", 3) in grid
    # Without "what" the style and the least shared words change nothing: not varied.
    assert (("count",), "content", "off", 1) not in grid and (("count",), "after", "off", 2) not in grid
    assert grid[0] == ((), "after", "off", 1)  # the earlier behaviour first: a tie keeps it
    texts = ["I painted a sunset over the lake last week."]
    rows = [row(4, conversation=c, hits=(("Ann", 0.05, texts[0]),), qid=f"{c}:{i}") for c in ("c1", "c2") for i in range(3)]
    after = AnswerParams(None, ("what",))
    content = AnswerParams(None, ("what",), extract_style="content")
    # "after" reads past the question's last word ("a sunset over the lake last week"); "content" keeps "sunset lake".
    assert final_answer(rows[0], content)[0] == "sunset lake"
    assert score_answers([(r, content) for r in rows])["f1"] > score_answers([(r, after) for r in rows])["f1"]
    result = tune_answers(rows, rows)
    assert result["loco"]["chosen_all"]["extract_style"] == "content"
    assert all(choice["extract_style"] == "content" for choice in result["loco"]["chosen_per_fold"].values())


def test_the_least_shared_words_are_chosen_by_leave_one_conversation_out():
    from memstream.benchmarks.answer_tuning import tune_answers

    # Two kinds of "what" question in every conversation: one whose sentence shares two of its words and holds the
    # answer, one that shares a single word with a sentence that does not (the model, which knows, answers it).
    close = {"question": "What did Ann paint at the lake?", "gold": "sunset"}
    loose = {"question": "What did Ann paint for the exhibition?", "gold": "portrait", "prediction": "a portrait"}
    texts = ["I painted a sunset over the lake last week."]
    rows = [row(4, conversation=c, hits=(("Ann", 0.05, texts[0]),), qid=f"{c}:{i}", **(close if i % 2 else loose))
            for c in ("c1", "c2", "c3") for i in range(4)]
    any_word = AnswerParams(None, ("what",), extract_style="content")
    two_words = AnswerParams(None, ("what",), extract_style="content", extract_min_shared=2)
    assert final_answer(rows[0], any_word)[0] == "sunset lake" and final_answer(rows[0], two_words)[0] == "a portrait"
    assert score_answers([(r, two_words) for r in rows])["f1"] > score_answers([(r, any_word) for r in rows])["f1"]
    result = tune_answers(rows, rows)
    assert result["loco"]["chosen_all"]["extract_min_shared"] == 2
    assert all(choice["extract_min_shared"] == 2 for choice in result["loco"]["chosen_per_fold"].values())


def test_trimming_is_applied_offline_to_what_the_model_wrote_only():
    answerable = row(4, hits=ANN_ONLY)
    assert final_answer(answerable, AnswerParams(None, (), trim="question")) == ("lake", 500, "model")
    # "lake" is in the records ("I painted a sunset over the lake."): grounded, it stays; an invented word goes.
    assert final_answer(answerable, AnswerParams(None, (), trim="evidence"))[0] == "lake"
    assert final_answer(row(4, hits=ANN_ONLY, prediction="She painted a lake and a castle"), AnswerParams(None, (), trim="evidence"))[0] == "lake"
    dated = row(2, hits=ANN_ONLY, prediction="7 May 2023", prompt_tokens=0, question="When did Ann paint in May?")
    assert final_answer(dated, AnswerParams(None, (), trim="evidence"))[0] == "7 May 2023"  # the date step's answer is left alone
    assert AnswerParams(None, ("count",), trim="question").describe() == {"attribution": None, "extract_kinds": ["count"], "trim": "question"}
