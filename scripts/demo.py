"""Demo: classify data/intents_test.csv against data/intents_support.csv with the default
pretrained encoder and no training; print each prediction and the accuracy.

    python scripts/demo.py [--model M] [--support S.csv] [--test T.csv]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from textmatch import DEFAULT_MODEL, MatchingNetwork, TextMatchError, load_text_dataset
from textmatch.data import texts_and_labels

DATA = Path(__file__).resolve().parents[1] / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--support", default=str(DATA / "intents_support.csv"))
    parser.add_argument("--test", default=str(DATA / "intents_test.csv"))
    args = parser.parse_args()
    try:
        support_texts, support_labels = texts_and_labels(load_text_dataset(args.support))
        test_texts, test_labels = texts_and_labels(load_text_dataset(args.test))
        start = time.perf_counter()
        model = MatchingNetwork.from_pretrained(args.model)
        model.fit(support_texts, support_labels)
        predicted = model.predict(test_texts)
        seconds = time.perf_counter() - start
    except TextMatchError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    correct = 0
    for text, gold, pred in zip(test_texts, test_labels, predicted):
        ok = pred == gold
        correct += ok
        print(f"{'ok ' if ok else 'MISS'} {pred:<16} {text}" + ("" if ok else f"   (expected {gold})"))
    accuracy = correct / len(test_texts)
    print(
        f"\naccuracy: {accuracy:.1%} ({correct}/{len(test_texts)}) with {len(model.classes_)} intents, "
        f"{len(support_texts)} support examples, model {args.model}, no training ({seconds:.1f} s)"
    )
    return 0 if accuracy >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
