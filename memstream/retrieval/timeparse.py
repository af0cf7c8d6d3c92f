"""Time references in questions and `--at` values.

`extract_time_window` turns the time reference in a question ("last May", "two weeks
ago", "in 2022", "since March", "on 8 May 2023") into a [start, end) window relative to
the question's own date. Relative expressions are resolved with explicit calendar rules
(dateparser answers with a single instant, not a range); explicit dates go through
dateparser's parser. References anchored to an event ("before my trip") cannot be
resolved without first finding the event, so they give None rather than a guess.
All datetimes are naive (the store keeps naive UTC).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import dateparser

MONTHS = {
    name: number
    for number, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        start=1,
    )
    for name in names
}
NUMBER_WORDS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "a couple of": 2, "a few": 3, "several": 3,
}
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

_MONTH_RE = "|".join(sorted(MONTHS, key=len, reverse=True))
_NUM_RE = r"\d+|" + "|".join(sorted((re.escape(w) for w in NUMBER_WORDS), key=len, reverse=True))
_UNIT_RE = r"days?|weeks?|months?|years?"


@dataclass(frozen=True)
class TimeWindow:
    start: datetime
    end: datetime
    """Exclusive."""
    expression: str
    """The words the window came from."""

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    def to_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "expression": self.expression}

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} .. {self.end:%Y-%m-%d %H:%M} ({self.expression!r})"


def _naive(moment: datetime) -> datetime:
    return moment if moment.tzinfo is None else moment.astimezone(timezone.utc).replace(tzinfo=None)


def parse_datetime(text: str) -> datetime | None:
    """ISO 8601 first, then anything dateparser reads ("8 May 2023", "May 8, 2023 2pm", "yesterday"). None if unreadable."""
    if not isinstance(text, str) or not text.strip():
        return None
    value = text.strip()
    try:
        return _naive(datetime.fromisoformat(value))
    except ValueError:
        pass
    # LoCoMo's "1:56 pm on 8 May, 2023" reads fine once the "on" is gone.
    parsed = dateparser.parse(value.replace(" on ", " "), settings={"RETURN_AS_TIMEZONE_AWARE": False})
    return _naive(parsed) if parsed else None


def _day(d: date) -> datetime:
    return datetime(d.year, d.month, d.day)


def _month_start(year: int, month: int) -> datetime:
    return datetime(year, month, 1)


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    return datetime(index // 12, index % 12 + 1, 1)


def _number(word: str) -> int:
    word = word.lower()
    return int(word) if word.isdigit() else NUMBER_WORDS[word]


def _past_month(month: int, now: datetime, strictly_before: bool) -> int:
    """The year of the most recent `month` at or before now (strictly before the current month for 'last May')."""
    if month < now.month or (month == now.month and not strictly_before):
        return now.year
    return now.year - 1


def extract_time_window(question: str, now: datetime) -> TimeWindow | None:
    """The time window a question refers to, relative to `now`, or None (see _extract_time_window)."""
    try:
        found = _extract_time_window(question, now)
    except (ValueError, OverflowError):
        # A date outside datetime's range ("since May 0000", "99999 years ago") names no usable window.
        return None
    if found is not None and found.end <= found.start:
        # "since 2023" asked in 2000: the window would end before it starts, so it names nothing.
        return None
    return found


def _extract_time_window(question: str, now: datetime) -> TimeWindow | None:
    """The time window a question refers to, relative to `now` (the question's date), or None.

    Windows are generous on purpose (a day ± a day for "yesterday" is not done, but
    "two weeks ago" covers that whole week ± a few days): they rank or filter evidence,
    and people are loose with relative dates.
    """
    if not isinstance(question, str) or not question.strip():
        return None
    now = _naive(now)
    text = question.lower()
    today = _day(now.date())

    def window(start: datetime, end: datetime, match: re.Match) -> TimeWindow:
        return TimeWindow(start, end, match.group(0).strip())

    # Anchored to an event we would first have to find: be honest and give no window.
    if re.search(r"\b(before|after)\s+(my|our|the|his|her|their)\s+\w+", text) and not re.search(
        rf"\b(before|after)\s+(the\s+)?({_MONTH_RE}|\d{{4}})\b", text
    ):
        return None

    if m := re.search(r"\b(yesterday)\b", text):
        return window(today - timedelta(days=1), today, m)
    if m := re.search(r"\b(today|tonight|this morning|this evening)\b", text):
        return window(today, today + timedelta(days=1), m)
    if m := re.search(r"\bday before yesterday\b", text):
        return window(today - timedelta(days=2), today - timedelta(days=1), m)
    if m := re.search(rf"\b({_NUM_RE})\s+({_UNIT_RE})\s+ago\b", text):
        amount, unit = _number(m.group(1)), m.group(2).rstrip("s")
        if unit == "day":
            center, slack = today - timedelta(days=amount), timedelta(days=1)
            return window(center - slack, center + timedelta(days=1) + slack, m)
        if unit == "week":
            center = today - timedelta(weeks=amount)
            return window(center - timedelta(days=4), center + timedelta(days=4), m)
        if unit == "month":
            start = _add_months(datetime(now.year, now.month, 1), -amount)
            return window(start - timedelta(days=7), _add_months(start, 1) + timedelta(days=7), m)
        return window(datetime(now.year - amount, 1, 1), datetime(now.year - amount + 1, 1, 1), m)
    if m := re.search(r"\blast weekend\b", text):
        # The Saturday-Sunday before the current week's Monday (or the one just past, on a weekday).
        monday = today - timedelta(days=today.weekday())
        saturday = monday - timedelta(days=2)
        return window(saturday - timedelta(days=1), saturday + timedelta(days=2), m)
    if m := re.search(r"\b(last|past|previous)\s+week\b", text):
        monday = today - timedelta(days=today.weekday())
        return window(monday - timedelta(days=7), monday, m)
    if m := re.search(r"\bthis week\b", text):
        monday = today - timedelta(days=today.weekday())
        return window(monday, monday + timedelta(days=7), m)
    if m := re.search(r"\b(last|past|previous)\s+month\b", text):
        start = _add_months(datetime(now.year, now.month, 1), -1)
        return window(start, _add_months(start, 1), m)
    if m := re.search(r"\bthis month\b", text):
        start = datetime(now.year, now.month, 1)
        return window(start, _add_months(start, 1), m)
    if m := re.search(r"\b(last|past|previous)\s+year\b", text):
        return window(datetime(now.year - 1, 1, 1), datetime(now.year, 1, 1), m)
    if m := re.search(r"\bthis year\b", text):
        return window(datetime(now.year, 1, 1), datetime(now.year + 1, 1, 1), m)
    if m := re.search(rf"\blast\s+({'|'.join(WEEKDAYS)})\b", text):
        target = WEEKDAYS.index(m.group(1))
        back = (today.weekday() - target) % 7 or 7
        day = today - timedelta(days=back)
        return window(day, day + timedelta(days=1), m)

    explicit = _explicit_date(question, text, now)
    if explicit is not None:
        return explicit

    if m := re.search(rf"\b(since|after)\s+({_MONTH_RE})\b(?:\s+(\d{{4}}))?", text):
        month = MONTHS[m.group(2)]
        year = int(m.group(3)) if m.group(3) else _past_month(month, now, strictly_before=False)
        return window(_month_start(year, month), max(now, _month_start(year, month)) + timedelta(days=1), m)
    if m := re.search(rf"\bbefore\s+({_MONTH_RE})\b(?:\s+(\d{{4}}))?", text):
        month = MONTHS[m.group(1)]
        year = int(m.group(2)) if m.group(2) else _past_month(month, now, strictly_before=False)
        return window(datetime(1900, 1, 1), _month_start(year, month), m)
    if m := re.search(rf"\b(last|this past|past)\s+({_MONTH_RE})\b", text):
        month = MONTHS[m.group(2)]
        year = _past_month(month, now, strictly_before=True)
        return window(_month_start(year, month), _add_months(_month_start(year, month), 1), m)
    if m := re.search(rf"\b(in|during|on|of)\s+({_MONTH_RE})\b(?:,?\s+(\d{{4}}))?", text):
        if m.group(2) == "may" and m.group(1) != "in" and not m.group(3):
            return None  # "on may" is too ambiguous with the verb
        month = MONTHS[m.group(2)]
        year = int(m.group(3)) if m.group(3) else _past_month(month, now, strictly_before=False)
        return window(_month_start(year, month), _add_months(_month_start(year, month), 1), m)
    if m := re.search(rf"\b({_MONTH_RE})\s+(\d{{4}})\b", text):
        month, year = MONTHS[m.group(1)], int(m.group(2))
        return window(_month_start(year, month), _add_months(_month_start(year, month), 1), m)
    if m := re.search(r"\b(since)\s+((?:19|20)\d{2})\b", text):
        return window(datetime(int(m.group(2)), 1, 1), now + timedelta(days=1), m)
    if m := re.search(r"\b(in|during|of|since|year)\s+((?:19|20)\d{2})\b", text):
        year = int(m.group(2))
        return window(datetime(year, 1, 1), datetime(year + 1, 1, 1), m)
    return None


_DATE_PATTERNS = [
    # 2023-05-08, 2023/05/08
    (re.compile(r"\b(\d{4})[-/](\d{1,2})[-/](\d{1,2})\b"), lambda m: (int(m[1]), int(m[2]), int(m[3]))),
    # 05/08/2023 (US month/day, as dateparser reads it by default)
    (re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b"), lambda m: (int(m[3]), int(m[1]), int(m[2]))),
    # 8 May 2023, 8 May, 2023, 8th of May 2023
    (
        re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({_MONTH_RE})\.?,?\s+(\d{{4}})\b"),
        lambda m: (int(m[3]), MONTHS[m[2]], int(m[1])),
    ),
    # May 8, 2023 / May 8th 2023
    (
        re.compile(rf"\b({_MONTH_RE})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?,?\s+(\d{{4}})\b"),
        lambda m: (int(m[3]), MONTHS[m[1]], int(m[2])),
    ),
]


def _explicit_date(original: str, text: str, now: datetime) -> TimeWindow | None:
    for pattern, fields in _DATE_PATTERNS:
        m = pattern.search(text)
        if m is None:
            continue
        try:
            day = datetime(*fields(m))
        except (ValueError, KeyError):
            continue
        return TimeWindow(day, day + timedelta(days=1), original[m.start() : m.end()].strip())
    return None
