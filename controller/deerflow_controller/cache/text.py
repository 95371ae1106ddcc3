"""Text handling for the similarity layer and the freshness rules: tokens, light stemming,
the entity guard's marked tokens, and whether a request is time-sensitive.

Deliberately generic English rules (a stop-word list, suffix stripping): no model, no
download, and nothing tuned to one workload's wording."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"\w+(?:[.\-&']\w+)*")
_YEAR = re.compile(r"\b(?:19|20)\d{2}\b")

STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours out
    over own please same she should so some such than that the their theirs them then there
    these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours tell show give find explain describe know
    want look need information info details detail overview summary search regarding according
    also etc vs versus
    """.split()  # noqa: SIM905 (a word list reads better as text)
)
"""Function words and request fillers: they carry no intent, so they are neither compared
nor allowed to make two questions look alike."""


def stem(word: str) -> str:
    """Crude suffix stripping (plural, -ing, -ed): enough for n-gram overlap, never aggressive
    enough to merge different entities."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


@dataclass(frozen=True, slots=True)
class Words:
    """The comparable content of one text."""

    content: tuple[str, ...]
    """Lower-cased, stemmed non-stop words, in order of appearance (duplicates removed)."""
    marked: frozenset[str]
    """The entity guard's tokens (stemmed lower case): words written with a capital (not a stop
    word), with an inner capital (``iPhone``), or with a digit (years, versions, figures). Two
    texts may only match if each one's marked tokens all appear in the other. Time words
    (``TIME_WORDS``) are marked too."""


TIME_WORDS = frozenset({"latest", "today", "news", "yesterday", "tomorrow", "current"})
"""Marked like entities: "X news" and "X" are different questions with different lifetimes."""


def words(text: str) -> Words:
    content: dict[str, None] = {}
    marked: set[str] = set()
    for raw in _TOKEN.findall(text):
        if raw.endswith(("'s", "'S")):  # possessive: "Disney's" is about Disney
            raw = raw[:-2]
        low = raw.lower()
        if low in STOPWORDS:
            continue
        s = stem(low)
        content[s] = None
        if raw != low or low in TIME_WORDS or (not low.isalpha() and any(c.isdigit() for c in low)):
            marked.add(s)
    return Words(tuple(content), frozenset(marked))


def guard_allows(a_content: frozenset[str], a_marked: frozenset[str], b: Words) -> bool:
    """The entity guard: every marked token of each side appears among the other's words.

    Templated siblings ("JD delivery market share" / "Meituan delivery market share") differ
    exactly in such a token, which cosine alone weighs no more than a synonym."""
    return a_marked.issubset(b.content) and b.marked.issubset(a_content)


def is_time_sensitive(text: str, fresh_words: tuple[str, ...], years: bool) -> bool:
    """Whether a request asks about something that changes daily (docs/WORKLOAD.md's freshness
    rule): one of ``fresh_words`` as a whole word, or a year."""
    if years and _YEAR.search(text):
        return True
    low = text.lower()
    for w in fresh_words:
        i = low.find(w)
        while i >= 0:
            before = low[i - 1] if i > 0 else " "
            after = low[i + len(w)] if i + len(w) < len(low) else " "
            if not before.isalnum() and not after.isalnum():
                return True
            i = low.find(w, i + 1)
    return False
