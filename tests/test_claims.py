"""Claims come from the run: the hand-written-number rule holds in every notebook, claims
refuse missing numbers, and conclusions are re-checked against the metrics."""

import json
import math
from pathlib import Path

import pytest

from hpcml import claims, report

pytestmark = pytest.mark.unit

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_markdown_has_no_unlabelled_measured_numbers(nb_path):
    """A measured number in prose comes from code (report.say), or is labelled historical,
    sourced or quoted on its line (the rule in hpcml.claims)."""
    nb = json.loads(nb_path.read_text())
    bad = [f"cell {i} line {n}: {num!r} in {line[:90]!r}"
           for i, c in enumerate(nb["cells"]) if c["cell_type"] == "markdown"
           for n, num, line in claims.unlabelled_numbers("".join(c["source"]))]
    assert not bad, (f"{nb_path.name}: measured-looking numbers written by hand (render them with "
                     "report.say, or label the line historical/source/quoted):\n  " + "\n  ".join(bad))


@pytest.mark.parametrize(
    "text, caught",
    [
        ("Spark took 3.1 s at 1M rows.", "3.1 s"),
        ("the ratio was 0.98 here", "0.98"),
        ("a speed-up of 1.91× over batch 1", "1.91×"),
        ("grew 4.5x for ten times the rows", "4.5x"),
        ("the default threshold is 64 MiB", "64 MiB"),
        ("it costs $3.06 an hour", "$3.06"),
        ("about 645 min between checkpoints", "645 min"),
        ("reached 18.5 img/s", "18.5 img/s"),
        ("P4d prices fell by 45 % in June", "45 %"),
        ("a 10 Gbit/s link", "10 Gbit/s"),
    ],
    ids=["seconds", "decimal", "times", "x", "mib", "price", "minutes", "throughput", "percent", "bandwidth"],
)
def test_rule_catches_measured_looking_numbers(text, caught):
    found = [num for _, num, _ in claims.unlabelled_numbers(text)]
    assert caught in found, found


@pytest.mark.parametrize(
    "text",
    [
        "Horovod 0.28.1 is the last release.",
        "DRA is GA since 1.34, Kubernetes 1.33 had it in beta.",
        "run `sbatch --cpus-per-task=2 --time=0:05:00` and set `--mem=3.5G`",
        "```\nthroughput 18.5 img/s\n```",
        "The default is 128 MiB (source: horovod/common/operations.cc, HOROVOD_FUSION_THRESHOLD).",
        "P5 list price was $98.32 an hour (historical: 2025-05-01, 1a2b3c4).",
        "EFA gives 3,200 Gbit/s per node ([AWS](https://aws.amazon.com/ec2/instance-types/p5/)).",
        "p99 ≤ 50 ms is the target; scaling at least 0.90 of linear",
        "2 workers on 8×H100 nodes, ring allreduce",
        "<!-- 3.1 s -->",
    ],
    ids=["version3", "version-after-word", "code-span", "fence", "source", "historical", "link",
         "bounds", "counts", "comment"],
)
def test_rule_allows_its_exceptions(text):
    assert claims.unlabelled_numbers(text) == []


def test_rule_reports_the_line():
    text = "intro\n\nsecond para 2.5 s\n"
    assert claims.unlabelled_numbers(text) == [(3, "2.5 s", "second para 2.5 s")]


@pytest.mark.parametrize("bad", [None, float("nan"), math.inf])
def test_render_refuses_missing_or_nan(bad):
    with pytest.raises(claims.ClaimError, match="ratio"):
        claims.render("ratio {ratio:.2f}", {"ratio": bad})
    with pytest.raises(claims.ClaimError, match="no value for"):
        claims.render("ratio {ratio:.2f}", {})


def test_evaluate_is_safe_and_strict():
    assert claims.evaluate("a / b > 1 and not c < 0", {"a": 3, "b": 2, "c": 1})
    assert claims.evaluate("abs(a - 1) <= 0.05", {"a": 1.01})
    with pytest.raises(claims.ClaimError, match="not allowed"):
        claims.evaluate("__import__('os')", {})
    with pytest.raises(claims.ClaimError, match="not a number"):
        claims.evaluate("a > 1", {"a": None})
    with pytest.raises(claims.ClaimError, match="not recorded"):
        claims.evaluate("a > 1", {})


def test_and_or_short_circuit_as_in_python():
    # a share of a gap is NaN when there is no gap: the rule must not read it then
    nan = float("nan")
    assert claims.evaluate("gap > 0 and share >= 0.8", {"gap": -0.1, "share": nan}) is False
    assert claims.evaluate("gap <= 0 or share >= 0.8", {"gap": -0.1, "share": nan}) is True
    assert claims.evaluate("gap > 0 and share >= 0.8", {"gap": 0.2, "share": 0.9}) is True
    assert claims.evaluate("gap > 0 or share >= 0.8", {"gap": -0.2, "share": 0.5}) is False
    with pytest.raises(claims.ClaimError, match="not a number"):
        claims.evaluate("gap > 0 and share >= 0.8", {"gap": 0.2, "share": nan})


@pytest.mark.parametrize(
    "mean, hw, target, higher, verdict",
    [
        (0.6, 5.5, 5.0, False, claims.UNDECIDED),  # 07's Horovod overhead: 0.6 % ± 5.5 against <= 5 %
        (0.6, 1.0, 5.0, False, claims.MET),
        (9.0, 1.0, 5.0, False, claims.MISSED),
        (0.93, 0.01, 0.90, True, claims.MET),
        (0.91, 0.02, 0.90, True, claims.UNDECIDED),
        (0.80, 0.02, 0.90, True, claims.MISSED),
    ],
)
def test_target_verdict_uses_the_interval(mean, hw, target, higher, verdict):
    assert claims.target_verdict(mean, hw, target, higher) == verdict


def test_say_records_and_fails_on_nan(build_tmp):
    report.begin("99_claims", params={})
    report.record("spark_s", 3.14159)
    shown = report.say("Spark took {spark_s:.1f} s for {rows:,} rows", rows=1000000)
    assert shown._repr_markdown_() == "Spark took 3.1 s for 1,000,000 rows"
    assert report.load("99_claims")["claims"] == ["Spark took 3.1 s for 1,000,000 rows"]
    report.record("gone", float("nan"))
    with pytest.raises(claims.ClaimError, match="gone"):
        report.say("value {gone:.2f}")


def test_conclusions_are_rechecked(build_tmp):
    report.begin("99_claims", params={})
    report.record("speedup", 1.4)
    assert report.conclude("ahead", "speedup > 1", "ahead of", "behind", expect=True) == "ahead of"
    assert report.check_conclusions() == {"ahead": True}
    report.record("speedup", 0.9)  # re-recorded after the text was rendered
    with pytest.raises(AssertionError, match="printed 'ahead of'"):
        report.check_conclusions()
    report.conclude("ahead", "speedup > 1", "ahead of", "behind", expect=True)
    with pytest.raises(AssertionError, match="the text states"):
        report.check_conclusions()
    report.record("speedup", float("nan"))
    with pytest.raises(AssertionError, match="not a number"):
        report.check_conclusions()
