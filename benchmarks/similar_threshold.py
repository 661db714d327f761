"""Measures the default pass mark of the ``similar`` grader.

Run: ``.venv/bin/python benchmarks/similar_threshold.py [--json]``

A labelled set of (reference answer, candidate answer) pairs in the style of short QA
outputs: positives say the same thing in other words (paraphrase, extra correct detail,
different unit spelling); negatives are either *near misses* (same topic and wording, a
wrong fact) or *off target* (unrelated answers, refusals, "I don't know"). Each pair is
embedded with all-MiniLM-L6-v2 (``evalgate.embeddings``), and the threshold that
maximises accuracy (on a 0.01 grid, averaged over a +-0.03 window so that it does not hinge
on the gap between two single pairs) is the default.

The script prints the cosine distribution per kind of pair and the accuracy of the chosen
threshold overall and per kind; the figures are quoted in ``evalgate.graders.semantic``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evalgate import embeddings

# (reference, candidate) pairs; kinds: "paraphrase" (label 1), "near-miss" and
# "off-target" (label 0).
PARAPHRASES: list[tuple[str, str]] = [
    ("The capital of France is Paris.", "Paris is France's capital city."),
    (
        "Water boils at 100 degrees Celsius at sea level.",
        "At sea level, water reaches its boiling point at 100 °C.",
    ),
    ("Hamlet was written by William Shakespeare.", "William Shakespeare is the author of Hamlet."),
    (
        "You can return an item within 30 days of delivery for a full refund.",
        "Refunds are available if you send the product back within thirty days of receiving it.",
    ),
    (
        "The meeting was moved to Thursday at 3 pm.",
        "The meeting now takes place on Thursday afternoon at 15:00.",
    ),
    (
        "Photosynthesis turns sunlight, water and carbon dioxide into glucose and oxygen.",
        "Plants use light energy to make sugar and oxygen from CO2 and water.",
    ),
    (
        "The Great Wall of China is more than 20,000 km long.",
        "China's Great Wall stretches for over twenty thousand kilometres.",
    ),
    (
        "To reset your password, click 'Forgot password' on the login page.",
        "Use the 'Forgot password' link on the sign-in screen to reset it.",
    ),
    (
        "The Earth orbits the Sun once every 365.25 days.",
        "It takes our planet about a year, 365 and a quarter days, to go around the Sun.",
    ),
    (
        "Mount Everest is the highest mountain on Earth.",
        "The tallest peak in the world is Mount Everest.",
    ),
    (
        "The function returns None when the list is empty.",
        "If the list has no elements, the function gives back None.",
    ),
    ("Shipping is free for orders over 50 dollars.", "Orders above $50 ship at no cost."),
    (
        "Python lists are mutable, tuples are immutable.",
        "You can change a list after creating it, but a tuple cannot be modified.",
    ),
    ("The invoice is due within 14 days.", "Payment of the invoice is expected within two weeks."),
    ("Insulin is produced by the pancreas.", "The pancreas makes the hormone insulin."),
    (
        "The store opens at 9 am and closes at 6 pm.",
        "Opening hours are from nine in the morning to six in the evening.",
    ),
    (
        "Light travels at about 300,000 kilometres per second.",
        "The speed of light is roughly 3 × 10^8 metres per second.",
    ),
    ("The Pacific is the largest ocean.", "Of all the oceans, the Pacific Ocean is the biggest."),
    (
        "Your subscription renews automatically every month.",
        "The plan is billed again each month unless you cancel; renewal is automatic.",
    ),
    (
        "The error means the API key is missing.",
        "You get this error because no API key was provided.",
    ),
    (
        "Marie Curie won two Nobel Prizes, in physics and in chemistry.",
        "Curie received the Nobel Prize twice: once for physics and once for chemistry.",
    ),
    ("The train to Lyon leaves from platform 4.", "Platform 4 is where the Lyon train departs."),
    (
        "Use a context manager so the file is always closed.",
        "Open the file with a `with` block; it will be closed automatically.",
    ),
    (
        "The patient should take the tablet twice a day with food.",
        "Take one tablet two times daily, with meals.",
    ),
    ("Paris", "The answer is Paris."),
    ("William Shakespeare", "It was written by Shakespeare."),
    ("100 °C", "Water boils at one hundred degrees Celsius."),
    ("30 days", "You have a month (30 days) to return it."),
]

NEAR_MISSES: list[tuple[str, str]] = [
    ("The capital of France is Paris.", "The capital of France is Lyon."),
    (
        "Water boils at 100 degrees Celsius at sea level.",
        "Water boils at 50 degrees Celsius at sea level.",
    ),
    ("Hamlet was written by William Shakespeare.", "Hamlet was written by Charles Dickens."),
    (
        "You can return an item within 30 days of delivery for a full refund.",
        "Items cannot be returned once they have been delivered.",
    ),
    ("The meeting was moved to Thursday at 3 pm.", "The meeting was moved to Monday at 9 am."),
    ("The Earth orbits the Sun once every 365.25 days.", "The Sun orbits the Earth once a day."),
    ("Mount Everest is the highest mountain on Earth.", "K2 is the highest mountain on Earth."),
    (
        "The function returns None when the list is empty.",
        "The function raises an IndexError when the list is empty.",
    ),
    ("Shipping is free for orders over 50 dollars.", "Shipping costs 50 dollars on every order."),
    (
        "Python lists are mutable, tuples are immutable.",
        "Python tuples are mutable, lists are immutable.",
    ),
    ("Insulin is produced by the pancreas.", "Insulin is produced by the liver."),
    ("The Pacific is the largest ocean.", "The Atlantic is the largest ocean."),
    ("The error means the API key is missing.", "The error means the server is down."),
]

# On topic, but no answer: the output talks about the subject without saying the fact.
RELATED: list[tuple[str, str]] = [
    ("The capital of France is Paris.", "France is a country in Western Europe."),
    ("Water boils at 100 degrees Celsius at sea level.", "Water is made of hydrogen and oxygen."),
    ("Hamlet was written by William Shakespeare.", "Hamlet is a tragedy set in Denmark."),
    (
        "You can return an item within 30 days of delivery for a full refund.",
        "We ship most items within two business days.",
    ),
    (
        "To reset your password, click 'Forgot password' on the login page.",
        "Passwords must be at least 12 characters long.",
    ),
    (
        "Mount Everest is the highest mountain on Earth.",
        "Climbing mountains requires good preparation.",
    ),
    (
        "Marie Curie won two Nobel Prizes, in physics and in chemistry.",
        "The Nobel Prize is awarded every year in Stockholm.",
    ),
    ("The invoice is due within 14 days.", "Invoices are sent by email as PDF files."),
    ("Insulin is produced by the pancreas.", "Diabetes affects millions of people worldwide."),
    (
        "Your subscription renews automatically every month.",
        "We offer three subscription plans: basic, pro and team.",
    ),
    ("The train to Lyon leaves from platform 4.", "Lyon is the third-largest city in France."),
    ("Paris", "It is a large European city."),
]

OFF_TARGET: list[tuple[str, str]] = [
    ("The capital of France is Paris.", "I don't know."),
    ("Water boils at 100 degrees Celsius at sea level.", "Bananas are rich in potassium."),
    ("Hamlet was written by William Shakespeare.", "The weather tomorrow will be sunny."),
    (
        "You can return an item within 30 days of delivery for a full refund.",
        "Our office is located in Berlin.",
    ),
    (
        "Photosynthesis turns sunlight, water and carbon dioxide into glucose and oxygen.",
        "I'm sorry, I can't help with that request.",
    ),
    ("The Great Wall of China is more than 20,000 km long.", "Please restart your router."),
    (
        "To reset your password, click 'Forgot password' on the login page.",
        "The invoice is due within 14 days.",
    ),
    ("Marie Curie won two Nobel Prizes, in physics and in chemistry.", "42"),
    ("The train to Lyon leaves from platform 4.", "Use a context manager to close files."),
    ("The store opens at 9 am and closes at 6 pm.", "As an AI language model, I cannot browse."),
    ("Light travels at about 300,000 kilometres per second.", "Yes."),
    (
        "The patient should take the tablet twice a day with food.",
        "Python lists are mutable, tuples are immutable.",
    ),
]


def labelled() -> list[tuple[str, str, int, str]]:
    return (
        [(a, b, 1, "paraphrase") for a, b in PARAPHRASES]
        + [(a, b, 0, "near-miss") for a, b in NEAR_MISSES]
        + [(a, b, 0, "related") for a, b in RELATED]
        + [(a, b, 0, "off-target") for a, b in OFF_TARGET]
    )


def cosines(pairs: list[tuple[str, str, int, str]]) -> list[float]:
    encoder = embeddings.get_encoder()
    refs = encoder.encode([p[0] for p in pairs])
    cands = encoder.encode([p[1] for p in pairs])
    return [float(r @ c) for r, c in zip(refs, cands, strict=True)]


def accuracy(values: list[float], labels: list[int], threshold: float) -> float:
    return sum((v >= threshold) == bool(y) for v, y in zip(values, labels, strict=True)) / len(
        values
    )


GRID = [i / 100 for i in range(101)]
WINDOW = 3
"""Half-width of the smoothing window, in grid steps of 0.01."""


def best_threshold(values: list[float], labels: list[int]) -> tuple[float, float]:
    """(threshold, best raw accuracy on the grid).

    The threshold maximises accuracy averaged over a +-0.03 window, so a default does not
    hinge on the gap between two single pairs; ties go to the middle of the tied range.
    """
    raw = [accuracy(values, labels, t) for t in GRID]
    smooth = []
    for i in range(len(GRID)):
        window = raw[max(0, i - WINDOW) : i + WINDOW + 1]
        smooth.append(sum(window) / len(window))
    top = max(smooth)
    tied = [t for t, s in zip(GRID, smooth, strict=True) if s >= top - 1e-12]
    return tied[len(tied) // 2], max(raw)


def describe(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "min": min(values),
        "p25": statistics.quantiles(values, n=4)[0] if len(values) > 1 else values[0],
        "median": statistics.median(values),
        "p75": statistics.quantiles(values, n=4)[2] if len(values) > 1 else values[0],
        "max": max(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    pairs = labelled()
    values = cosines(pairs)
    labels = [p[2] for p in pairs]
    threshold, best = best_threshold(values, labels)
    kinds = ("paraphrase", "near-miss", "related", "off-target")
    by_kind = {k: [v for v, p in zip(values, pairs, strict=True) if p[3] == k] for k in kinds}
    report = {
        "pairs": len(pairs),
        "distributions": {k: describe(v) for k, v in by_kind.items()},
        "best_accuracy": best,
        "threshold": threshold,
        "accuracy_at_threshold": accuracy(values, labels, threshold),
        "per_kind_accuracy": {
            k: accuracy(v, [int(k == "paraphrase")] * len(v), threshold) for k, v in by_kind.items()
        },
        "accuracy_without_near_misses": accuracy(
            [v for v, p in zip(values, pairs, strict=True) if p[3] != "near-miss"],
            [y for y, p in zip(labels, pairs, strict=True) if p[3] != "near-miss"],
            threshold,
        ),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{len(pairs)} labelled pairs, all-MiniLM-L6-v2 cosine")
    print(f"{'kind':<12}{'n':>4}{'min':>8}{'p25':>8}{'median':>8}{'p75':>8}{'max':>8}")
    for kind, stats in report["distributions"].items():
        print(
            f"{kind:<12}{stats['n']:>4}"
            + "".join(f"{stats[k]:>8.3f}" for k in ("min", "p25", "median", "p75", "max"))
        )
    print(
        f"threshold {threshold:.2f}: accuracy {report['accuracy_at_threshold']:.3f} "
        f"(best single threshold on the grid: {best:.3f})"
    )
    print(
        "accuracy by threshold: "
        + ", ".join(f"{t:.2f}: {accuracy(values, labels, t):.3f}" for t in GRID[40:81:5])
    )
    for kind, acc in report["per_kind_accuracy"].items():
        print(f"  {kind:<12} accuracy {acc:.3f}")
    print(f"  without near misses: accuracy {report['accuracy_without_near_misses']:.3f}")
    for (ref, cand, label, kind), value in sorted(
        zip(pairs, values, strict=True), key=lambda x: x[1]
    ):
        wrong = (value >= threshold) != bool(label)
        if wrong:
            print(f"  misclassified {kind}: {value:.3f} {ref!r} vs {cand!r}")


if __name__ == "__main__":
    main()
