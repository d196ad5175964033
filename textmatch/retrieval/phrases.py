"""Quoted phrases in a query: `"heart failure" treatment` finds only documents with a passage
that contains the words "heart failure" in that order (case-insensitive, any whitespace
between them); the quoted words still count for ranking like the others. Pure functions."""

from __future__ import annotations

import re

_QUOTED = re.compile(r'"([^"]*)"')
_PUNCTUATION = re.compile(r"[^\w\s]")


def normalize(text: str) -> str:
    """Lower-cased, runs of whitespace as one space: the form phrases are matched in."""
    return " ".join(text.lower().split())


def split_phrases(query: str) -> tuple[str, list[str]]:
    """(the query without its quote marks, the phrases it quotes, normalised). An unmatched
    quote mark is an ordinary character; an empty pair of quotes is ignored.

    >>> split_phrases('"heart failure" in older adults')
    ('heart failure in older adults', ['heart failure'])
    """
    if query.count('"') < 2:
        return query, []
    phrases = [normalize(p) for p in _QUOTED.findall(query)]
    plain = _QUOTED.sub(lambda m: m.group(1), query)
    return " ".join(plain.split()) or query, [p for p in phrases if p]


def _words(text: str) -> str:
    """" w1 w2 ... ": the normalised words of `text` between spaces, punctuation dropped."""
    return " " + normalize(_PUNCTUATION.sub(" ", text)) + " "


def contains_phrases(text: str, phrases: list[str]) -> bool:
    """Whether `text` holds every phrase as whole words: "heart failure" matches "Heart  failure,"
    but not "heartfailure" or "sweetheart failure"."""
    haystack = _words(text)
    return all(_words(p) in haystack for p in phrases)
