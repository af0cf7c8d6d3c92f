"""A LoCoMo dev conversation given whole to the default local model, past its trained window (CPU).

Three systems, same model (float32 on CPU, greedy), same prompt form (long_context.py: the
transcript in the system message, the question and the short-answer instruction as the user
message), same question wording (questions.py), post-processing (answers.clean_prediction) and
score (scoring.locomo_f1, the project's LoCoMo token F1):

- full:   the whole transcript, prefilled in chunks through block_topk (AttentionParams defaults),
          the RoPE tables extended past the trained window as benchmarks/passkey.py does;
- full_wide: the same, with block_topk's local window as wide as the trained window allows
          (trained window - prefill chunk, so a chunk's nearest keys stay inside it): the newest
          ~7K tokens attended as dense does, and the retrieved blocks of the older transcript on top.
          The rule was fixed before the run, not chosen on these questions;
- full_wide_init: full_wide with InfLLM's 128 initial tokens always attended (the prompt's header and
          instruction), not 4 sinks;
- infllm: InfLLM's published configuration (128 initial tokens, a 4,096-token local window, 16
          blocks of 128 tokens, 4 representatives, chunks of 512);
- last8k: the newest transcript lines that fit the trained window with the longest question and
          the answer tokens (cut at a line boundary, led by that session's dated header), dense.

The transcript prefix is the same token ids for every question: each system prefills it once,
then per question prefills only the question and decodes, and rolls the cache back to the prefix
(backends/prefix.SharedPrefix; tests/backends/test_shared_prefix.py checks that this equals a
fresh prefill). Questions: N answerable ones (categories 1-4) of the conversation, evenly spaced
through them in file order (questions.select's per-history rule). Per system: prefix prefill
wall and CPU seconds (this process, one torch thread by default, so CPU seconds barely move when
other jobs share the machine), and peak RSS of the process (weights included) over the prefill
and the questions.

Resumable: each answer and each system's prefill is appended to <out>/locomo_full_context.jsonl as
it is done; a rerun with the same settings skips what is there (a system with questions left
prefills its prefix again) and rewrites <out>/locomo_full_context.{json,md} from the log.

    nice -n 5 python benchmarks/locomo_full_context.py                    # conv-26, 60 questions
    python benchmarks/locomo_full_context.py --questions 3 --out runs/fc   # a smoke run
"""

from __future__ import annotations

import argparse
import gc
from dataclasses import replace
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))  # the sibling scripts (after the installed packages)
from passkey import PeakRSS  # noqa: E402  (the sibling benchmark's sampler: the same RSS figures)

from memstream.agent import prompts  # noqa: E402
from memstream.backends.kernels import AttentionParams, make_policy  # noqa: E402
from memstream.backends.models import DEFAULT_MODEL, load_cached, resolve_model  # noqa: E402
from memstream.backends.prefix import SharedPrefix  # noqa: E402
from memstream.benchmarks.answers import clean_prediction  # noqa: E402
from memstream.benchmarks.long_context import newest_lines, speakers, transcript_lines, transcript_prompt  # noqa: E402
from memstream.benchmarks.questions import BenchData, BenchQuestion, locomo_items, read_json, select  # noqa: E402
from memstream.benchmarks.scoring import LOCOMO_CATEGORIES, locomo_f1  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "locomo" / "locomo10_dev.json"
REPORTS = ROOT / "reports"
NAME = "locomo_full_context"
PARAMS = AttentionParams(use_triton=False)  # the config's defaults (the papers')
SYSTEMS = {"full": "block_topk", "full_wide": "block_topk", "full_wide_init": "block_topk", "infllm": "block_topk",
           "last8k": "dense"}
FULL = ("full", "full_wide", "full_wide_init", "infllm")  # the systems given the whole transcript, each checked against last8k
INFLLM_INIT = 128
"""InfLLM's initial tokens (n_init in the paper's configurations): the prompt's start, always attended. Here that is
the chat template's system header and the instruction (about 50 tokens), which a 4-token sink leaves to chance."""

BOOTSTRAP_RESAMPLES = 10_000
MIN_FULL_TOKENS = 16384  # the "16K+ tokens"
ANSWERABLE = {"1", "2", "3", "4"}  # LoCoMo categories; 5 (adversarial) has no answer to score F1 on
ISO_DATE = re.compile(r"\b\d{4}-\d{2}")  # the transcript writes "8 May 2023": an ISO date is the model's invention


def system_params(system: str, trained: int) -> AttentionParams:
    """full_wide: the local window fills the trained window but for one prefill chunk, so the
    nearest keys of a chunk's first query (window + chunk back) are still inside it. full_wide_init:
    the same, with InfLLM's 128 initial tokens. infllm: the paper's published configuration (128
    initial tokens, a 4,096-token local window, 16 blocks of 128 tokens with 4 representatives,
    chunks of 512). Each rule was fixed before its run, from the paper, not tried on the questions."""
    wide = trained - PARAMS.prefill_chunk
    return {
        "full_wide": replace(PARAMS, window=wide),
        "full_wide_init": replace(PARAMS, window=wide, sinks=INFLLM_INIT),
        "infllm": replace(PARAMS, sinks=INFLLM_INIT, window=4096, block_size=128, topk=16, representatives=4, prefill_chunk=512),
    }.get(system, PARAMS)


def pick_questions(data: BenchData, namespace: str, n: int) -> list[BenchQuestion]:
    """n answerable questions (categories 1-4) of the conversation, evenly spaced through them in file order
    (`questions.select`'s per-history rule, so every category is represented)."""
    mine = BenchData(data.benchmark, questions=[q for q in data.questions if q.namespace == namespace])
    return select(mine, categories=ANSWERABLE, per_history=n)


def evidence_held(question: BenchQuestion, sources: frozenset[str]) -> str:
    held = sum(e in sources for e in question.evidence)
    return "all" if question.evidence and held == len(question.evidence) else ("some" if held else "none")


@torch.inference_mode()
def run_system(local, system: str, prompt, questions: list[BenchQuestion], max_new: int, run: dict,
               log: Path, done: set) -> list[dict]:
    """Prefill the prefix once, answer every question not in `done`; each record is logged as it is made."""
    tok = local.tokenizer
    params = system_params(system, local.args.max_seq_len)
    policy = make_policy(SYSTEMS[system], params)
    suffixes = {q.qid: prompt.suffix(tok, q.question) for q in questions}
    room = max(len(s) for s in suffixes.values()) + max_new
    records = []
    with PeakRSS() as rss:
        start, cpu_start = time.perf_counter(), time.process_time()
        shared = SharedPrefix.build(local.model, prompt.prefix, policy, room)
        prefill_s, prefill_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
        prefill_peak = rss.peak
        print(f"{system}: prefix of {len(prompt.prefix)} tokens prefilled in {prefill_s:.1f} s "
              f"({prefill_cpu_s:.1f} CPU s)", flush=True)
        for q in questions:
            if (system, q.qid) in done:
                continue
            began = time.perf_counter()
            ids = shared.greedy(suffixes[q.qid], max_new, local.stop_token_ids)
            raw = tok.decode(ids, skip_special_tokens=True)
            prediction = clean_prediction(raw, q.choices)
            record = {"kind": "answer", "run": run, "system": system, "qid": q.qid, "code": q.code,
                      "category": q.category, "question": q.question, "gold": q.gold, "raw": raw,
                      "prediction": prediction, "f1": round(locomo_f1(q.code, prediction, q.gold), 4),
                      "prompt_tokens": len(prompt.prefix) + len(suffixes[q.qid]), "answer_tokens": len(ids),
                      "evidence_in_prompt": evidence_held(q, prompt.sources),
                      "answer_s": round(time.perf_counter() - began, 2)}
            append(log, record)
            records.append(record)
            print(f"{system} {q.qid} [{q.category}] f1={record['f1']:.2f} gold={q.gold!r} got={prediction!r}", flush=True)
    records.append(append(log, {
        "kind": "prefill", "run": run, "system": system, "policy": policy.name, "window": params.window, "sinks": params.sinks,
        "prefix_tokens": len(prompt.prefix),
        "transcript_lines": prompt.lines, "prefill_s": round(prefill_s, 2), "prefill_cpu_s": round(prefill_cpu_s, 2),
        "threads": torch.get_num_threads(), "prefill_peak_rss_mb": round(prefill_peak / 2**20),
        "peak_rss_mb": round(rss.peak / 2**20), "kv_cache_mb": round(2 * shared.cache.k_cache.numel()
                                                                     * shared.cache.k_cache.element_size() / 2**20)}))
    del shared
    gc.collect()
    return records


def append(log: Path, record: dict) -> dict:
    with log.open("a") as f:
        f.write(json.dumps(record) + "\n")
    return record


def mean(values) -> float | None:
    values = list(values)
    return round(statistics.fmean(values), 4) if values else None


def paired_interval(pairs: list[tuple[float, float]], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> list[float] | None:
    """A 95% paired bootstrap interval of the mean F1 difference (first minus second): questions are resampled with
    their pair, so the interval says whether a gap between two systems on these questions is more than chance."""
    if len(pairs) < 2:
        return None
    rng = random.Random(seed)
    diffs = [a - b for a, b in pairs]
    means = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(resamples))
    return [round(means[int(0.025 * resamples)], 4), round(means[int(0.975 * resamples) - 1], 4)]


def summarize(records: list[dict], questions: list[BenchQuestion], meta: dict) -> dict:
    wanted = {q.qid for q in questions}
    out = {**meta, "systems": {}}
    for system, policy in SYSTEMS.items():
        answers = [r for r in records if r["kind"] == "answer" and r["system"] == system and r["qid"] in wanted]
        prefills = [r for r in records if r["kind"] == "prefill" and r["system"] == system]
        by_code = {code: [r["f1"] for r in answers if r["code"] == code] for code in sorted(LOCOMO_CATEGORIES) if code != 5}
        out["systems"][system] = {
            "policy": policy, "answered": len(answers), "mean_f1": mean(r["f1"] for r in answers),
            "per_category": {LOCOMO_CATEGORIES[c]: {"n": len(v), "mean_f1": mean(v)} for c, v in by_code.items() if v},
            "by_evidence_in_prompt": {k: {"n": len(v), "mean_f1": mean(v)} for k in ("all", "some", "none")
                                      if (v := [r["f1"] for r in answers if r["evidence_in_prompt"] == k])},
            "prompt_tokens": [min((r["prompt_tokens"] for r in answers), default=None),
                              max((r["prompt_tokens"] for r in answers), default=None)],
            "abstained": sum(r["prediction"] == "Not mentioned in the conversation" for r in answers),
            "zero_f1": sum(r["f1"] == 0 for r in answers),
            "iso_dates": sum(bool(ISO_DATE.search(r["raw"])) for r in answers),
            "at_token_cap": sum(r["answer_tokens"] >= meta["max_new"] for r in answers),
            "prefill": prefills[-1] if prefills else None,
            "answers": sorted(answers, key=lambda r: int(r["qid"].rsplit("q", 1)[1])),
        }
    last = out["systems"]["last8k"]
    out["complete"], out["paired"], out["target_met"] = {}, {}, {}
    for name in FULL:
        full = out["systems"][name]
        complete = full["answered"] == last["answered"] == len(questions)
        pairs = [(a["f1"], b["f1"]) for a in full["answers"] for b in last["answers"] if a["qid"] == b["qid"]]
        out["complete"][name] = complete
        out["paired"][name] = {"full_higher": sum(a > b for a, b in pairs), "full_lower": sum(a < b for a, b in pairs),
                               "equal": sum(a == b for a, b in pairs), "both_zero": sum(a == b == 0 for a, b in pairs),
                               "mean_difference": mean(a - b for a, b in pairs), "difference_ci95": paired_interval(pairs)}
        out["target_met"][name] = bool(complete and full["mean_f1"] >= last["mean_f1"])
    return out


def cell(value, digits: int = 3) -> str:
    return "-" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def verdict(result: dict, name: str) -> str:
    if not result["complete"][name]:
        return "not decided (run incomplete)"
    return "met" if result["target_met"][name] else "NOT met"


def write_reports(result: dict, out_dir: Path) -> None:
    (out_dir / f"{NAME}.json").write_text(json.dumps(result, indent=2) + "\n")
    systems = result["systems"]
    names = list(SYSTEMS)
    last = systems["last8k"]
    prefill = {n: systems[n]["prefill"] or {} for n in names}
    params = result["params"]

    def row(label: str, values) -> str:
        return f"| {label} | " + " | ".join(values) + " |"

    def each(fn) -> list[str]:
        return [fn(n) for n in names]

    lines = [
        "# LoCoMo conversation given whole vs its last 8K tokens (local model, CPU)",
        "",
        f"Model {result['model']} (trained window {result['trained_window']} tokens), float32 on CPU, greedy, "
        f"at most {result['max_new']} answer tokens; prompts version {result['prompt_version']}.",
        f"Conversation {result['conversation']}: {result['sessions']} sessions, {result['turns']} turns; "
        f"the whole-transcript prefix is {result['full_prefix_tokens']} tokens"
        + ("" if result["full_prefix_tokens"] >= MIN_FULL_TOKENS else f" (under the {MIN_FULL_TOKENS} the check asks for)") + ".",
        f"Questions: {result['questions']} answerable ones (categories 1-4, adversarial excluded), evenly spaced through "
        "the conversation's answerable questions in file order (questions.select with per_history).",
        "",
        "- **full**: the whole transcript, prefilled once in chunks of "
        f"{params['prefill_chunk']} through block_topk at the config's defaults ({params}), RoPE tables extended "
        "past the trained window; each question is prefilled after it and the cache rolled back to the transcript.",
        f"- **full_wide**: the same, but block_topk's local window is {system_params('full_wide', result['trained_window']).window} tokens "
        "(the trained window less one prefill chunk, so no query sees a distance past the trained window): the "
        f"newest part of the transcript is read as dense attention reads it, and {params['topk']} retrieved blocks of "
        f"{params['block_size']} tokens from the older part on top. This rule was fixed before the run; no window was "
        "tried on these questions.",
        f"- **full_wide_init**: full_wide with InfLLM's {INFLLM_INIT} initial tokens always attended instead of 4 sinks: the "
        "prompt's system header and instruction stay in view however far the question is from them (in full and "
        "full_wide only a selected block brings them back). The paper's value, fixed before the run.",
        "- **infllm**: InfLLM's published configuration: "
        + ", ".join(f"{k} {v}" for k, v in system_params("infllm", result["trained_window"]).settings().items()
                    if k in ("sinks", "window", "block_size", "topk", "representatives", "prefill_chunk"))
        + " (sinks = the paper's initial tokens); fixed before the run.",
        "- **last8k**: the newest transcript lines that fit the trained window with the longest question and the "
        "answer (cut at a line boundary, led by that session's dated header), dense attention, same reuse.",
        "",
        "All: the same chat-template prompt (instruction + transcript as the system message, question + "
        "short-answer instruction as the user message), question wording, post-processing and LoCoMo token F1.",
        "",
        "Target (whole-transcript block_topk mean F1 >= last8k mean F1): "
        + ", ".join(f"{n} **{verdict(result, n)}**" for n in FULL) + ".",
        "",
        row("", [f"{n} ({SYSTEMS[n]})" for n in names]),
        "|---|" + "---:|" * len(names),
        row("questions answered", each(lambda n: str(systems[n]["answered"]))),
        row("**mean F1**", each(lambda n: f"**{cell(systems[n]['mean_f1'])}**")),
    ]
    for category in [LOCOMO_CATEGORIES[c] for c in (1, 2, 3, 4)]:
        cats = {n: systems[n]["per_category"].get(category) for n in names}
        count = next((c["n"] for c in cats.values() if c), None)
        if count:
            lines.append(row(f"F1 {category} (n={count})", each(lambda n: cell(cats[n] and cats[n]["mean_f1"]))))
    for key, label in (("all", "all evidence in last8k's prompt"), ("some", "part of it"), ("none", "none of it")):
        held = last["by_evidence_in_prompt"].get(key)
        if held:
            ids = {a["qid"] for a in last["answers"] if a["evidence_in_prompt"] == key}
            lines.append(row(f"F1, {label} (n={held['n']})",
                             each(lambda n: cell(mean(r["f1"] for r in systems[n]["answers"] if r["qid"] in ids)))))
    lines += [
        row("answers 'Not mentioned'", each(lambda n: str(systems[n]["abstained"]))),
        row("answers with F1 0", each(lambda n: str(systems[n]["zero_f1"]))),
        row("answers with an invented ISO date", each(lambda n: str(systems[n]["iso_dates"]))),
        row(f"answers cut at the {result['max_new']}-token cap", each(lambda n: str(systems[n]["at_token_cap"]))),
        row("local window (tokens)", each(lambda n: "all" if SYSTEMS[n] == "dense"
                                         else str(system_params(n, result["trained_window"]).window))),
        row("initial tokens always attended", each(lambda n: "all" if SYSTEMS[n] == "dense"
                                                  else str(system_params(n, result["trained_window"]).sinks))),
        row("transcript lines in the prompt", each(lambda n: cell(prefill[n].get("transcript_lines")))),
        row("prefix tokens", each(lambda n: cell(prefill[n].get("prefix_tokens")))),
        row("prompt tokens (min-max)", each(lambda n: "-".join(map(str, systems[n]["prompt_tokens"]))
                                           if systems[n]["answered"] else "-")),
        row("prefix prefill wall s", each(lambda n: cell(prefill[n].get("prefill_s"), 1))),
        row("prefix prefill CPU s (1 thread)", each(lambda n: cell(prefill[n].get("prefill_cpu_s"), 1))),
        row("peak RSS MB (prefill / whole run)",
            each(lambda n: f"{cell(prefill[n].get('prefill_peak_rss_mb'))} / {cell(prefill[n].get('peak_rss_mb'))}")),
        row("KV cache MB", each(lambda n: cell(prefill[n].get("kv_cache_mb")))),
        "",
        "Peak RSS is the whole process (model weights included). The machine was shared with another "
        "benchmark (2 cores), so wall seconds are upper bounds; CPU seconds are this process's.",
        "",
        *breaks(result),
        "## Per question",
        "",
        "Evidence: how much of the question's evidence turns last8k's prompt holds (the whole-transcript systems hold all).",
        "",
        "| question | category | gold | " + " | ".join(f"{n} | F1" for n in names) + " | evidence in last8k |",
        "|---|---|---|" + "---|---:|" * len(names) + "---|",
    ]
    by_system = {n: {r["qid"]: r for r in systems[n]["answers"]} for n in names}
    for qid in result["question_ids"]:
        got = {n: by_system[n].get(qid) for n in names}
        if not any(got.values()):
            continue
        r = next(a for a in got.values() if a)
        cells = " | ".join(f"{md(a['prediction']) if a else '-'} | {cell(a and a['f1'], 2)}" for a in got.values())
        l = got["last8k"]
        lines.append(f"| {qid} | {r['category']} | {md(r['gold'])} | {cells} | {l['evidence_in_prompt'] if l else '-'} |")
    lines += ["", f"Rerun (resumes from the log): `{result['command']}`"]
    (out_dir / f"{NAME}.md").write_text("\n".join(lines) + "\n")


def breaks(result: dict) -> list[str]:
    """Where the model fails, from the numbers above (nothing here is typed in by hand)."""
    systems, last = result["systems"], result["systems"]["last8k"]
    inside = last["by_evidence_in_prompt"].get("all")
    lines = ["## Where the model breaks", ""]
    if inside:
        ids = {a["qid"] for a in last["answers"] if a["evidence_in_prompt"] == "all"}
        others = ", ".join(f"{n}: {cell(mean(r['f1'] for r in systems[n]['answers'] if r['qid'] in ids))}" for n in FULL)
        lines.append(f"- Inside the trained window with the evidence in reach: last8k (dense) scores F1 "
                     f"{cell(inside['mean_f1'])} on the {inside['n']} questions whose evidence is all in its prompt "
                     f"(on the same questions, {others}).")
    for n in FULL:
        pairs = result["paired"][n]
        interval = pairs.get("difference_ci95")
        gap = (f" Mean F1 difference {cell(pairs['mean_difference'])}, 95% paired bootstrap interval "
               f"{cell(interval[0])} to {cell(interval[1])}" + (": within chance on these questions." if interval[0] <= 0 <= interval[1]
                                                               else ".") if interval else "")
        lines.append(f"- Paired with last8k, question by question: {n} scores higher on {pairs['full_higher']}, lower on "
                     f"{pairs['full_lower']}, the same on {pairs['equal']} ({pairs['both_zero']} of them 0 for both).{gap}")
    caps = ", ".join(f"{systems[n]['at_token_cap']} ({n})" for n in SYSTEMS)
    dates = ", ".join(f"{systems[n]['iso_dates']} ({n})" for n in SYSTEMS)
    lines.append(f"- Short answers are not followed: {caps} answers run to the {result['max_new']}-token cap.")
    lines.append(f"- Dates: answers giving an ISO-style date (YYYY-MM): {dates}; the transcript has "
                 f"{result['transcript_iso_dates']} (its dates read '8 May 2023'), so these are written, not read.")
    return lines + [""]


def md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversation", default="conv-26", help="LoCoMo sample id")
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--max-new", type=int, default=24, help="answer tokens at most")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=REPORTS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report-only", action="store_true", help="rewrite the reports from the log, run nothing")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="which systems to run (the report shows what the log holds)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / f"{NAME}.jsonl"

    data = locomo_items(read_json(args.data), source=args.data.name)
    namespace = f"locomo:{args.conversation}"
    if namespace not in data.histories:
        raise SystemExit(f"no conversation {args.conversation} in {args.data.name}: "
                         + ", ".join(n.split(":", 1)[1] for n in data.histories))
    sessions = data.histories[namespace]
    questions = pick_questions(data, namespace, args.questions)

    spec = resolve_model(DEFAULT_MODEL)
    local = load_cached(str(spec.path), spec.gguf_file, "float32", "cpu", spec.name)
    tok, trained = local.tokenizer, local.args.max_seq_len
    pair, lines = speakers(sessions), transcript_lines(sessions)
    longest = max(len(transcript_prompt(tok, pair, []).suffix(tok, q.question)) for q in questions)
    whole = transcript_prompt(tok, pair, lines)
    prompts_by_system = {**{name: whole for name in FULL},
                         "last8k": newest_lines(tok, pair, lines, trained - longest - args.max_new)}
    local.model.setup_rope(local.device, max_positions=len(prompts_by_system["full"].prefix) + longest + args.max_new + 64)

    run = {"conversation": args.conversation, "prompt_version": prompts.PROMPT_VERSION, "max_new": args.max_new,
           "model": spec.name}
    records = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []
    records = [r for r in records if r.get("run") == run]
    done = {(r["system"], r["qid"]) for r in records if r["kind"] == "answer"}
    params = PARAMS.settings()
    params.pop("use_triton")
    meta = {"model": spec.name, "trained_window": trained, "conversation": args.conversation,
            "sessions": len(sessions), "turns": sum(len(s.turns) for s in sessions), "questions": len(questions),
            "question_ids": [q.qid for q in questions], "max_new": args.max_new,
            "prompt_version": prompts.PROMPT_VERSION, "params": params,
            "full_prefix_tokens": len(prompts_by_system["full"].prefix),
            "transcript_iso_dates": sum(len(ISO_DATE.findall(line.text)) for line in lines),
            "command": f"nice -n 5 python benchmarks/{NAME}.py --conversation {args.conversation} "
                       f"--questions {args.questions} --max-new {args.max_new} --threads {args.threads}"}
    chosen = [name for name in args.systems.split(",") if name]
    if unknown := sorted(set(chosen) - set(SYSTEMS)):
        parser.error(f"unknown systems {unknown}; known: {', '.join(SYSTEMS)}")
    for system in [] if args.report_only else chosen:
        prefilled = any(r["kind"] == "prefill" and r["system"] == system for r in records)
        if prefilled and all((system, q.qid) in done for q in questions):
            continue
        records += run_system(local, system, prompts_by_system[system], questions, args.max_new, run, log, done)
        write_reports(summarize(records, questions, meta), args.out)
    write_reports(summarize(records, questions, meta), args.out)
    result = summarize(records, questions, meta)
    print(json.dumps({s: {"mean_f1": v["mean_f1"], "per_category": v["per_category"]}
                      for s, v in result["systems"].items()}, indent=1))


if __name__ == "__main__":
    main()
