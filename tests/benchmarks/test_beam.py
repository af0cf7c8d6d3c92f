"""BEAM: the loader on the shared sample chats, clear errors for malformed files, and a small real retrieval run."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from memstream.backends.scripted import ScriptedBackend
from memstream.benchmarks.beam import ABILITIES, load_beam, load_chat, parse_chat, parse_questions
from memstream.benchmarks.beam_eval import BeamRunConfig, evaluate_beam, judge_rubric, render_report, rubric_recall, rubric_target
from memstream.benchmarks.datasets import DatasetError
from tests.conftest import DATA_DIR

BEAM_100K = DATA_DIR / "beam" / "chats" / "100K"


def test_loads_every_shared_chat_with_evidence_inside_it():
    chats = load_beam(BEAM_100K)
    assert [c.chat_id for c in chats] == ["11", "12", "13", "14", "15"]
    for chat in chats:
        assert len(chat.questions) == 20
        assert {q.ability for q in chat.questions} == set(ABILITIES)
        ids = {t.metadata["source_id"] for s in chat.sessions for t in s.turns}
        for question in chat.questions:
            assert set(question.evidence) <= ids
            assert bool(question.evidence) == (question.ability != "abstention")
    first = chats[0]
    assert len(first.sessions) == 5 and first.message_count == 388
    assert first.sessions[0].started_at == datetime(2024, 3, 15)
    assert first.asked_at == datetime(2025, 1, 13)  # the day after the last batch (January-12-2025)
    opening = first.sessions[0].turns[0]
    assert opening.text.startswith("I'm Darryl") and "->->" not in opening.text  # BEAM's plan marker is dropped
    ku = next(q for q in first.questions if q.ability == "knowledge_update")
    assert set(ku.evidence_groups) == {"original_info", "updated_info"}


def test_nested_source_ids_are_flattened():
    chat = load_chat(BEAM_100K / "13")
    ordering = [q for q in chat.questions if q.ability == "event_ordering"][1]
    assert ordering.evidence == ["20", "22", "70", "72", "74", "174", "176", "232", "282"]


def _copy_chat(tmp_path: Path) -> Path:
    target = tmp_path / "11"
    shutil.copytree(BEAM_100K / "11", target)
    return target


def _rewrite(path: Path, change) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d[0]["turns"][2][1].pop("content"), "'content'"),
        (lambda d: d[1]["turns"][0][0].update(role="narrator"), "'role'"),
        (lambda d: d[0]["turns"][0][0].update(time_anchor="the Ides of March"), "'time_anchor'"),
        (lambda d: d[0]["turns"][1][0].update(id=0), "'id'"),
        (lambda d: d[2].pop("turns"), "'turns'"),
    ],
)
def test_malformed_chat_names_the_field(tmp_path, change, field):
    folder = _copy_chat(tmp_path)
    _rewrite(folder / "chat.json", change)
    with pytest.raises(DatasetError) as caught:
        load_chat(folder)
    assert field in str(caught.value) and "chat.json" in str(caught.value)


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d["information_extraction"][0].pop("source_chat_ids"), "'source_chat_ids'"),
        (lambda d: d["information_extraction"][0].update(source_chat_ids=[99999]), "99999"),
        (lambda d: d["summarization"][1].pop("rubric"), "'rubric'"),
        (lambda d: d.update(mind_reading=[]), "mind_reading"),
        (lambda d: d["temporal_reasoning"][0].update(question=3), "'question'"),
    ],
)
def test_malformed_questions_name_the_field(tmp_path, change, field):
    folder = _copy_chat(tmp_path)
    _rewrite(folder / "probing_questions" / "probing_questions.json", change)
    with pytest.raises(DatasetError) as caught:
        load_chat(folder)
    assert field in str(caught.value) and "probing_questions.json" in str(caught.value)


def test_missing_files_and_empty_folders_are_clear(tmp_path):
    with pytest.raises(DatasetError, match="no BEAM chat found"):
        load_beam(tmp_path)
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "chat.json").write_text("[]", encoding="utf-8")
    with pytest.raises(DatasetError, match="probing_questions.json: no such file"):
        load_beam(tmp_path)
    with pytest.raises(DatasetError, match="non-empty list of batches"):
        parse_chat([], "7")
    with pytest.raises(DatasetError, match="expected an object"):
        parse_questions([], "7", set())


def test_rubric_helpers():
    assert rubric_target("LLM response should state: 19 days") == "19 days"
    assert rubric_target("Pilot program results") == "Pilot program results"
    assert rubric_recall(["LLM response should state: ArtSpace Gallery", "should state: June 12, 2020"], "We met at ArtSpace Gallery.") == 0.5
    judge = ScriptedBackend(replies=["yes", "no"])
    score, verdicts = judge_rubric(judge, "When?", "June 12", ["should state: June 12", "should state: ArtSpace"])
    assert (score, verdicts) == (0.5, [True, False])


def first_batch_chat(tmp_path: Path) -> Path:
    """Chat 14 cut to its first batch (56 messages) and the questions whose evidence lies in it, plus abstention."""
    folder = tmp_path / "14"
    (folder / "probing_questions").mkdir(parents=True)
    batches = json.loads((BEAM_100K / "14" / "chat.json").read_text(encoding="utf-8"))[:1]
    ids = {m["id"] for exchange in batches[0]["turns"] for m in exchange}
    probing = json.loads((BEAM_100K / "14" / "probing_questions" / "probing_questions.json").read_text(encoding="utf-8"))

    def inside(q):
        source = q.get("source_chat_ids")
        flat = [i for v in (source.values() if isinstance(source, dict) else [source]) for i in v] if source is not None else []
        return all(isinstance(i, int) and i in ids for i in flat)

    kept = {ability: [q for q in items if inside(q)] for ability, items in probing.items()}
    (folder / "chat.json").write_text(json.dumps(batches), encoding="utf-8")
    (folder / "probing_questions" / "probing_questions.json").write_text(json.dumps({a: q for a, q in kept.items() if q}), encoding="utf-8")
    return folder


@pytest.mark.slow
def test_retrieval_run_on_one_chat(tmp_path, embedders):
    from memstream.config import load_settings

    settings = load_settings(db_url=f"sqlite:///{tmp_path / 'x.db'}", home=str(tmp_path))
    config = BeamRunConfig(data=str(first_batch_chat(tmp_path)), systems=("hybrid", "bm25"))
    results, rows = evaluate_beam(config, settings, tmp_path / "work", count_tokens=lambda text: len(text.split()), embedders=embedders)
    assert results["mode"] == "retrieval-only" and results["chats"] == ["14"]
    hybrid = results["systems"]["hybrid"]
    assert hybrid["n"] == 6 and hybrid["n_with_evidence"] == 4 and len(rows) == 12
    assert 0.0 < hybrid["recall_any@10"] <= 1.0 and hybrid["recall_any@5"] <= hybrid["recall_any@10"]
    assert hybrid["per_ability"]["abstention"]["recall_any@10"] is None  # no evidence ids: not scored
    assert hybrid["evidence_tokens"] > 0 and results["history_tokens"]["14"] > hybrid["evidence_tokens"]
    report = render_report(results)
    assert "No judge was given" in report and "| information_extraction |" in report
