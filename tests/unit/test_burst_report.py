"""The burst benchmark's report: its ratios and the medians over repeated runs (pure; no cluster)."""

from __future__ import annotations

from benchmarks.burst import Run, medians, table


def run(concurrency: int, repeat: int, with_: float, bare: float, floor: float, p99: float | None) -> Run:
    return Run(concurrency, 3000, repeat, with_pods_per_s=with_, without_pods_per_s=bare,
               patching_pods_per_s=floor, p99_ms=p99)


def test_the_ratio_to_the_floor_compares_the_webhook_with_the_patching_null_webhook_not_with_bare() -> None:
    measured = run(64, 1, 150.0, 300.0, 200.0, 9.0)

    assert measured.ratio == 0.5
    assert measured.patching_ratio == 200.0 / 300.0
    assert measured.floor_ratio == 0.75


def test_a_run_without_its_baseline_reports_a_zero_ratio_rather_than_dividing_by_zero() -> None:
    assert run(64, 1, 150.0, 0.0, 0.0, None).ratio == 0.0
    assert run(64, 1, 150.0, 0.0, 0.0, None).floor_ratio == 0.0


def test_medians_are_reported_per_repeated_concurrency_with_their_range() -> None:
    runs = [run(64, 1, 150.0, 300.0, 200.0, 9.0), run(64, 2, 240.0, 300.0, 240.0, 500.0),
            run(64, 3, 200.0, 250.0, 220.0, 12.0), run(256, 1, 100.0, 200.0, 150.0, 80.0)]

    summary = medians(runs)

    assert "C=64, 3 runs" in summary
    assert "ratio with/without: 0.8 (0.5-0.8)" in summary
    assert "webhook admission p99 ms: 12 (9-500)" in summary
    assert "C=256" not in summary  # measured once: nothing to take a median of


def test_nothing_is_summarised_when_no_concurrency_was_repeated() -> None:
    assert medians([run(16, 1, 1.0, 1.0, 1.0, 1.0), run(64, 1, 1.0, 1.0, 1.0, 1.0)]) == ""


def test_the_table_names_each_repetition_in_its_column_header() -> None:
    header = table([run(64, 1, 1.0, 1.0, 1.0, 1.0), run(64, 2, 1.0, 1.0, 1.0, 1.0),
                    run(256, 1, 1.0, 1.0, 1.0, 1.0)]).splitlines()[0]

    assert header.split()[2:7] == ["64", "#1", "64", "#2", "256"]
