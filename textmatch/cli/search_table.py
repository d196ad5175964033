"""The table `textmatch search` prints on a terminal: pure functions from hits to text (no
printing, no I/O), so the layout is tested without a model.

One table per query: a header line with the query, a column header row, a separator of "─",
then one row per hit (rank, id, score, title, the first line of the passage that scored it)
with the query's terms highlighted in colour. Widths are counted in visible terminal columns
(ANSI codes take none, wide East Asian characters take two), so colour never breaks alignment.
"""

from __future__ import annotations

import re
import shutil
import unicodedata
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    from ..retrieval.retriever import SearchHit

BOLD_YELLOW = ("\x1b[1;33m", "\x1b[0m")  # (start, end) around a highlighted word
PLAIN = ("", "")  # piped output is read by scripts: no markers at all
COLOR_CHOICES = ("auto", "always", "never")
MIN_WIDTH = 60
ID_WIDTH = 24
GAP = "  "
ELLIPSIS = "…"

STOPWORDS = frozenset("""
    a an the and or but nor not no yes of to in on at by for with from into onto about above below over under
    between through during before after again than then there here this that these those it its is are was were
    be been being am do does did doing done have has had having can could should would will shall may might must
    what which who whom whose when where why how all any both each few more most other some such only own same
    too very just also you your yours we our ours they their theirs them he him his she her hers me my mine
    i if so as out up down off once
""".split())

_WORD = re.compile(r"\w+")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
MIN_PREFIX = 4  # "vaccines" ~ "vaccine", "flows" ~ "flow"; "sun" matches only "sun"


def query_terms(query: str) -> list[str]:
    """The words of `query` worth highlighting: lower-cased `\\w+` words of 3 characters or
    more that are not stopwords, each once, in query order."""
    terms: list[str] = []
    for word in _WORD.findall(query.lower()):
        if len(word) >= 3 and word not in STOPWORDS and word not in terms:
            terms.append(word)
    return terms


def word_matches(word: str, term: str) -> bool:
    """A whole word matches a term when they are equal (case-insensitive), or when one starts
    with the other and the shared prefix has at least MIN_PREFIX characters. A term inside a
    word ("flow" in "overflow") is no match."""
    word = word.lower()
    if word == term:
        return True
    if min(len(word), len(term)) < MIN_PREFIX:
        return False
    return word.startswith(term) or term.startswith(word)


def highlight(text: str, terms: Sequence[str], style: tuple[str, str] = BOLD_YELLOW) -> str:
    """`text` with every whole word that matches one of `terms` wrapped in `style`'s (start,
    end) codes; PLAIN (or no terms) gives `text` unchanged."""
    start, end = style
    if not terms or not (start or end):
        return text
    return _WORD.sub(lambda m: f"{start}{m.group()}{end}" if any(word_matches(m.group(), t) for t in terms)
                     else m.group(), text)


def clean(text: str) -> str:
    """One line: control characters (newlines, tabs, escape codes a document may carry) become
    spaces, invisible format characters go, runs of whitespace collapse to one space."""
    chars = []
    for ch in str(text):
        category = unicodedata.category(ch)
        if category == "Cc":
            chars.append(" ")
        elif category != "Cf":
            chars.append(ch)
    return " ".join("".join(chars).split())


def char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def visible_width(text: str) -> int:
    """Terminal columns `text` takes: ANSI codes none, wide characters two."""
    return sum(char_width(ch) for ch in _ANSI.sub("", text))


def fit(text: str, width: int) -> str:
    """`text` cut to at most `width` columns, ending in "…" when cut (plain text only)."""
    if visible_width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = char_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out).rstrip() + ELLIPSIS if width > 0 else ""


def pad(text: str, width: int, right: bool = False) -> str:
    room = " " * max(0, width - visible_width(text))
    return room + text if right else text + room


def passage_line(hit: SearchHit) -> str:
    """The first line of the hit's passage, without the "<title>. " it starts with."""
    text = hit.passage
    title = hit.title.strip()
    if title:
        if text.startswith(f"{title}. "):
            text = text[len(title) + 2:]
        elif text.strip() == f"{title}.":  # a document with a title and no text
            text = ""
    lines = [line for line in text.splitlines() if line.strip()]
    return clean(lines[0]) if lines else ""


def render_table(query: str, hits: Sequence[SearchHit], width: int | None = None, color: bool = False) -> str:
    """The lines `textmatch search` prints for one query, joined by newlines (no trailing one).
    `width`: terminal columns (default: the terminal's, at least MIN_WIDTH); every row of the
    table, header and separator included, is exactly that wide."""
    width = max(MIN_WIDTH, width or shutil.get_terminal_size().columns)
    header = f"# {clean(query)}"
    if not hits:
        return f"{header}\n(no results)"
    style = BOLD_YELLOW if color else PLAIN
    terms = query_terms(query)
    rows = [(str(h.rank), clean(h.id), f"{h.score:.4f}", clean(h.title), passage_line(h)) for h in hits]
    rank_w = max(len("rank"), *(len(r[0]) for r in rows))
    id_w = min(ID_WIDTH, max(len("id"), *(visible_width(r[1]) for r in rows)))
    score_w = max(len("score"), *(len(r[2]) for r in rows))
    rest = width - rank_w - id_w - score_w - 4 * len(GAP)
    title_w = min(rest // 3, max(len("title"), *(visible_width(r[3]) for r in rows)))
    passage_w = rest - title_w

    def line(rank: str, doc: str, score: str, title: str, passage: str, mark: bool) -> str:
        cells = [pad(rank, rank_w, right=True), pad(fit(doc, id_w), id_w), pad(score, score_w, right=True)]
        for text, w in ((title, title_w), (passage, passage_w)):
            shown = fit(text, w)
            cells.append(pad(highlight(shown, terms, style) if mark else shown, w))
        return GAP.join(cells)

    out = [header, line("rank", "id", "score", "title", "passage", mark=False), "─" * width]
    out += [line(*row, mark=True) for row in rows]
    return "\n".join(out)


def run_ranks(hit: SearchHit) -> str:
    """In hybrid mode, 'dense rank 2 (0.8123), BM25 rank 1 (14.2)': where the fused hit came from."""
    parts = []
    for name, rank, score in (("dense", hit.dense_rank, hit.dense_score), ("BM25", hit.bm25_rank, hit.bm25_score)):
        parts.append(f"{name} rank {rank} ({score:.4g})" if rank is not None and score is not None
                     else f"not retrieved by {name}")
    return ", ".join(parts)


def render_explained(query: str, hits: Sequence[SearchHit], width: int | None = None, color: bool = False,
                     hybrid: bool = True, max_lines: int = 4) -> str:
    """`search --explain`: the table, then for each hit the passage that scored it (its index
    position, at most `max_lines` wrapped lines, query words highlighted) and, in hybrid mode,
    the document's rank in the dense and the BM25 run."""
    import textwrap

    width = max(MIN_WIDTH, width or shutil.get_terminal_size().columns)
    out = [render_table(query, hits, width, color)]
    style = BOLD_YELLOW if color else PLAIN
    terms = query_terms(query)
    for hit in hits:
        ranks = run_ranks(hit) if hybrid else ""
        out.append(f"{hit.rank:>4}. {clean(hit.id)}: passage #{hit.passage_index}" + (f"; {ranks}" if ranks else ""))
        lines = textwrap.wrap(clean(hit.passage), width - 6) or [""]
        if len(lines) > max_lines:
            lines = lines[:max_lines - 1] + [fit(lines[max_lines - 1] + " " + ELLIPSIS, width - 6)]
        out += ["      " + highlight(line, terms, style) for line in lines]
    return "\n".join(out)


def want_color(choice: str, is_tty: bool, environ: Mapping[str, str]) -> bool:
    """--color: "always", "never", or "auto" (colour on a terminal, unless NO_COLOR is set to a
    non-empty value, as no-color.org asks)."""
    if choice not in COLOR_CHOICES:
        raise ValueError(f"color must be one of {COLOR_CHOICES}, got {choice!r}")
    if choice == "auto":
        return is_tty and not environ.get("NO_COLOR")
    return choice == "always"
