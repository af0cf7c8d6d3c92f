"""One post-processing step for every system's raw answer, so no system gets a private clean-up.

Small local models ramble: they continue past the answer, echo a memory line's "[date] speaker:"
prefix, or answer an adversarial choice with just its letter. `clean_prediction` keeps the first
non-empty line, strips a copied record prefix, maps a bare choice letter to its option, turns an
"I don't know"-style reply into the benchmark's abstention wording, and caps the length.
"""

from __future__ import annotations

import re

MAX_PREDICTION_WORDS = 40
_RECORD_PREFIX = re.compile(r"^\s*(\[[^\]]{3,40}\]\s*)?([A-Z][\w .'-]{0,30}:\s+)?")
_CHOICE = re.compile(r"^\(?([ab])\)?(?:[.):]|\s|$)", re.IGNORECASE)
_DONT_KNOW = re.compile(r"\b(i don'?t know|i do not know|not (?:been )?mentioned|no information|cannot be answered|unknown)\b", re.IGNORECASE)
ABSTENTION_TEXT = "Not mentioned in the conversation"


def clean_prediction(raw: str, choices: dict[str, str] | None = None) -> str:
    lines = [line.strip() for line in raw.strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if _DONT_KNOW.search(text):
        # The benchmark's own wording, so abstention is scored the same whatever phrase was used.
        return ABSTENTION_TEXT
    text = re.sub(r"^answer\s*:\s*", "", text, flags=re.IGNORECASE)
    text = _RECORD_PREFIX.sub("", text, count=1).strip()
    if choices:
        match = _CHOICE.match(text)
        if match:
            text = choices.get(match.group(1).lower(), text)
    if _DONT_KNOW.search(text):
        text = ABSTENTION_TEXT
    words = text.split()
    if len(words) > MAX_PREDICTION_WORDS:
        text = " ".join(words[:MAX_PREDICTION_WORDS])
    return text
