"""The terminal rendering of `textmatch predict --explain`: per text, the label and who decided
it, then the support examples with the largest attention weight (eq. 2) and the best example of
the runner-up class (textmatch.core.explanations)."""

from __future__ import annotations

import shutil
from typing import Sequence

from ..core.explanations import HEAD_NOTES, Evidence, Explanation
from .search_table import clean, fit, pad


def head_line(e: Explanation) -> str:
    """'-> label  p=0.912  (decided by ...: eq. 1 0.88, logistic regression 0.94)'."""
    who = HEAD_NOTES.get(e.decided_by, e.decided_by)
    label = f"{e.label} (best class {e.top_class})" if e.out_of_scope else str(e.label)
    if e.logreg_probability is None:
        return f"  -> {label}  p={e.probability:.3f}  decided by {who}"
    return (f"  -> {label}  p={e.probability:.3f}  decided by {who}: eq. 1 {e.matching_probability:.3f}, "
            f"logistic regression {e.logreg_probability:.3f}")


def evidence_lines(evidence: Sequence[Evidence], width: int) -> list[str]:
    """One row per piece of evidence: weight, similarity, label, text (prototypes: their nearest
    examples indented below them)."""
    label_w = min(24, max([len(str(e.label)) for e in evidence] + [5]))
    text_w = max(20, width - 4 - 8 - 8 - label_w - 2)
    out = []
    for e in evidence:
        weight = "" if e.weight is None else f"{e.weight:.3f}"
        if e.kind == "prototype":
            text = f"(prototype: mean of the class's examples; nearest {len(e.nearest)} below)"
        else:
            text = clean(e.text or "") + (f"  [#{e.support_index}]" if e.support_index is not None else "  [class name]")
        out.append(f"    {weight:>6}  {e.similarity:>6.3f}  {pad(fit(clean(str(e.label)), label_w), label_w)}  {fit(text, text_w)}")
        for near in e.nearest:
            tag = f"  [#{near.support_index}]" if near.support_index is not None else "  [class name]"
            out.append(f"    {'':>6}  {near.similarity:>6.3f}  {'':<{label_w}}  {fit('- ' + clean(near.text or '') + tag, text_w)}")
    return out


def render_explanation(e: Explanation, width: int | None = None) -> str:
    """The readable block for one explanation."""
    width = width or shutil.get_terminal_size((100, 24)).columns
    lines = [clean(e.text), head_line(e), f"    {'weight':>6}  {'cosine':>6}  evidence (support examples by attention weight)"]
    lines += evidence_lines(e.evidence, width)
    if e.runner_up is not None:
        lines.append(f"  runner-up {e.runner_up}  p={e.runner_up_probability:.3f}  (eq. 1 {e.runner_up_matching_probability:.3f}); "
                     "its best example:")
        if e.runner_up_evidence is not None:
            lines += evidence_lines([e.runner_up_evidence], width)
    lines += [f"  note: {n}" for n in e.notes]
    return "\n".join(lines)


def render_explanations(explanations: Sequence[Explanation], width: int | None = None) -> str:
    return "\n\n".join(render_explanation(e, width) for e in explanations)
