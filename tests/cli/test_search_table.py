"""The table `textmatch search` prints: the pure layout functions, then the real command."""

from __future__ import annotations

import json
import re

import pytest

from textmatch import cli
from textmatch.cli.search_table import (
    BOLD_YELLOW,
    PLAIN,
    highlight,
    query_terms,
    render_table,
    visible_width,
    want_color,
)
from textmatch.retrieval.retriever import SearchHit

ANSI = re.compile(r"\x1b\[[0-9;]*m")
Y, R = BOLD_YELLOW


def hit(rank=1, doc="d1", score=0.5, title="Vaccines", text="how vaccines work in the body", index=0):
    passage = f"{title}. {text}" if title else text
    return SearchHit(id=doc, score=score, rank=rank, title=title, passage=passage, passage_index=index)


def table_lines(out: str) -> list[str]:
    """The table rows under the query's header line."""
    return out.split("\n")[1:]


# -- terms and highlighting -------------------------------------------------------------------------
def test_query_terms_lowercase_dedup_and_drop_stopwords_and_short_words():
    assert query_terms("What is the Vaccine for flu, the VACCINE?") == ["vaccine", "flu"]
    assert query_terms("an of to is at me") == []
    assert query_terms("ok go rain-forecast") == ["rain", "forecast"]


@pytest.mark.parametrize("word, term, hit_", [
    ("vaccines", "vaccine", True),   # the word starts with the term
    ("flow", "flows", True),         # the term starts with the word
    ("Flows", "flow", True),         # case-insensitive
    ("flu", "flu", True),            # short words match themselves
    ("fluids", "flu", False),        # but a shared prefix under 4 characters is no match
    ("overflow", "flow", False),     # whole words only: no match inside a word
    ("workflow", "flow", False),
])
def test_highlight_matches_whole_words_by_shared_prefix(word, term, hit_):
    text = f"a {word} here"
    assert (highlight(text, [term], BOLD_YELLOW) == f"a {Y}{word}{R} here") is hit_
    if not hit_:
        assert highlight(text, [term], BOLD_YELLOW) == text


def test_highlight_without_colour_leaves_the_text_plain():
    assert highlight("Vaccines work", ["vaccine"], PLAIN) == "Vaccines work"
    assert highlight("Vaccines work", [], BOLD_YELLOW) == "Vaccines work"


# -- the table ----------------------------------------------------------------------------------------
def test_table_has_header_row_separator_and_rows():
    out = render_table("vaccine side effects", [hit(), hit(2, "d2", 0.25, "Flu", "fever and rest")], width=80)
    lines = out.split("\n")
    assert lines[0] == "# vaccine side effects"
    assert lines[1].split() == ["rank", "id", "score", "title", "passage"]
    assert set(lines[2]) == {"─"} and len(lines[2]) == 80
    assert lines[3].split()[:4] == ["1", "d1", "0.5000", "Vaccines"]
    assert "how vaccines work in the body" in lines[3]  # the title prefix is gone from the passage
    assert lines[3].count("Vaccines") == 1
    assert lines[4].split()[:4] == ["2", "d2", "0.2500", "Flu"] and "fever and rest" in lines[4]


def test_ansi_only_with_color_and_alignment_holds_either_way():
    hits = [hit(), hit(2, "d2", -0.125, "Vaccine trials 界界", "vaccines and flows\tof data"), hit(10, "x" * 40)]
    plain = render_table("vaccine flows", hits, width=90)
    colour = render_table("vaccine flows", hits, width=90, color=True)
    assert "\x1b" not in plain
    assert f"{Y}vaccines{R}" in colour and f"{Y}flows{R}" in colour and f"{Y}Vaccine{R}" in colour
    assert ANSI.sub("", colour) == plain
    for out in (plain, colour):
        assert {visible_width(line) for line in table_lines(out)} == {90}


def test_truncation_long_ids_and_narrow_terminals():
    long_text = " ".join(["vaccine"] * 80)
    out = render_table("vaccine", [hit(doc="a-very-long-document-identifier-0001", title="T" * 100, text=long_text)],
                       width=10)  # below the minimum: 60 columns
    lines = table_lines(out)
    assert {visible_width(line) for line in lines} == {60}
    row = lines[2]
    assert "a-very-long-document-id…" in row and "a-very-long-document-identifier" not in row
    assert row.rstrip().endswith("…") and "T…" in row


def test_empty_title_shows_the_passage_start_and_an_empty_title_cell():
    legacy = SearchHit(id="d1", score=1.0, rank=1, title="", passage="Old title. the body text", passage_index=3)
    out = render_table("body", [legacy], width=80)
    header, row = table_lines(out)[0], table_lines(out)[2]
    passage_col = header.index("passage")
    assert row[passage_col:].startswith("Old title. the body text")
    assert row[header.index("title"):passage_col].strip() == ""


def test_title_only_document_has_an_empty_passage():
    out = render_table("x", [SearchHit("d", 1.0, 1, "Only a title", "Only a title.", 0)], width=80)
    assert table_lines(out)[2].rstrip().endswith("Only a title")


def test_no_hits():
    assert render_table("nothing here", [], width=80) == "# nothing here\n(no results)"


def test_cells_never_hold_newlines_tabs_or_escape_codes():
    bad = SearchHit(id="d\t1\n", score=0.1, rank=1, title="Ti\ntle\t\x1b[31m", passage="first line\tstill\nsecond line",
                    passage_index=0)
    out = render_table("line\nquery\t", [bad], width=80)
    assert "\t" not in out and "\x1b" not in out and out.count("\n") == 3
    assert out.split("\n")[0] == "# line query"
    row = table_lines(out)[2]
    assert "first line still" in row and "second line" not in row and "Ti tle" in row


def test_want_color():
    assert want_color("auto", True, {}) and not want_color("auto", False, {})
    assert not want_color("auto", True, {"NO_COLOR": "1"})
    assert want_color("always", False, {"NO_COLOR": "1"}) and not want_color("never", True, {})


# -- through the real command ---------------------------------------------------------------------
DOCS = [("d0", "Weather report", "rain and wind today"), ("d1", "Pizza news", "a new pizza place"),
        ("d2", "Cheap travel", "cheap flight to the airport")]


def test_search_prints_a_table_and_json_is_unchanged(tiny_bert_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("NO_COLOR", raising=False)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in DOCS), encoding="utf-8")
    index = tmp_path / "idx"
    assert cli.main(["index", "--model", str(tiny_bert_dir), "--corpus", str(corpus), "--output", str(index),
                     "--no-bm25", "--no-progress"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    search = ["search", "--index", str(index), "--model", str(tiny_bert_dir), "--top-k", "3"]

    assert cli.main([*search, "--color", "never", "rain forecast", "pizza"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    first, second = out.rstrip("\n").split("\n\n")
    for table, query in ((first, "rain forecast"), (second, "pizza")):
        lines = table.split("\n")
        assert lines[0] == f"# {query}" and lines[1].split() == ["rank", "id", "score", "title", "passage"]
        assert len(lines) == 6 and {visible_width(line) for line in lines[1:]} == {100}
        assert all(title in table for _, title, _ in DOCS)
    assert "rain and wind today" in first and "a new pizza place" in second

    assert cli.main([*search, "--color", "always", "rain forecast"]) == 0
    out = capsys.readouterr().out
    assert f"{Y}rain{R}" in out and ANSI.sub("", out) == first + "\n"

    assert cli.main([*search, "rain forecast"]) == 0  # auto: captured stdout is no terminal
    assert "\x1b" not in capsys.readouterr().out

    assert cli.main([*search, "--json", "rain forecast"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["query"] for r in doc["results"]] == ["rain forecast"]
    hits = doc["results"][0]["hits"]
    assert sorted(h["id"] for h in hits) == ["d0", "d1", "d2"]
    assert all(set(h) == {"id", "score"} and isinstance(h["score"], float) for h in hits)


def test_explained_hits_show_passage_and_run_ranks():
    from dataclasses import replace

    from textmatch.cli.search_table import render_explained, run_ranks

    long = " ".join(f"word{i}" for i in range(200))
    fused = replace(hit(text=long, index=7), dense_rank=3, dense_score=1.25, bm25_rank=None, bm25_score=None)
    assert run_ranks(fused) == "dense rank 3 (1.25), not retrieved by BM25"
    out = render_explained("word5", [fused], width=80, max_lines=3).splitlines()
    at = out.index("   1. d1: passage #7; dense rank 3 (1.25), not retrieved by BM25")
    body = out[at + 1:]
    assert len(body) == 3 and all(line.startswith("      ") and len(line) <= 80 for line in body)
    assert body[-1].endswith("…")
    plain = render_explained("word5", [fused], width=80, hybrid=False).splitlines()
    assert "   1. d1: passage #7" in plain
