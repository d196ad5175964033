"""Class names as evidence: one more support example per class, its name as text.

Intent names carry meaning ("card_arrival", "PlayMusic", "translate"). With
`MatchingNetworkConfig(label_names=True)` each class with a readable name gets its name as
one extra support example x_i (with y_i its class) in eq. 1, and as one more training
example of the logistic-regression head: a prior that costs one text per class. A user's
`label_descriptions` {label: text} replaces a name (a class called "A12" is described, not
guessed); a label that is not a string and has no description gets no extra example.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence

from ..errors import TextMatchError

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[_\-./:]+")


def humanize_label(label: Hashable) -> str | None:
    """"card_arrival" -> "card arrival", "PlayMusic" -> "play music", "Refund_not_showing_up"
    -> "refund not showing up"; None for a label that is not a string or has no letters."""
    if not isinstance(label, str):
        return None
    words = _CAMEL.sub(" ", _SEPARATORS.sub(" ", label)).lower().split()
    text = " ".join(words)
    return text if any(ch.isalpha() for ch in text) else None


def check_descriptions(descriptions: object) -> dict[str, str] | None:
    """`label_descriptions` must be None or a dict {label as str: non-empty text}."""
    if descriptions is None:
        return None
    if not isinstance(descriptions, Mapping):
        raise TextMatchError(f"label_descriptions must be a dict {{label: text}}, got {type(descriptions).__name__}")
    out: dict[str, str] = {}
    for label, text in descriptions.items():
        if not isinstance(text, str) or not text.strip():
            raise TextMatchError(f"label_descriptions[{label!r}] must be a non-empty string, got {text!r}")
        out[str(label)] = text.strip()
    return out


def label_examples(classes: Sequence[Hashable], descriptions: Mapping[str, str] | None = None) -> tuple[list[str], list[int]]:
    """The extra support examples: (texts, class positions in `classes`), one per class that
    has a description (looked up by str(label)) or a readable name."""
    texts: list[str] = []
    ids: list[int] = []
    for j, label in enumerate(classes):
        text = (descriptions or {}).get(str(label)) or humanize_label(label)
        if text:
            texts.append(text)
            ids.append(j)
    return texts, ids
