"""The burst benchmark's report: its ratios and the medians over repeated runs (pure; no cluster)."""

from __future__ import annotations

from benchmarks.burst import MODES, Run, burst_order, medians, table


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


def test_even_repetitions_run_the_five_bursts_in_the_reverse_order_of_odd_ones() -> None:
    assert burst_order(1) == MODES == burst_order(3)
    assert burst_order(2) == tuple(reversed(MODES))
    assert burst_order(1)[0] == "with" and burst_order(2)[0] == "without"


def test_the_ratio_by_cpu_divides_the_bare_bursts_cpu_per_pod_by_the_webhooks() -> None:
    measured = run(64, 1, 200.0, 300.0, 250.0, 9.0)
    measured.cpu_with = {"kube-apiserver": 6.0, "spreadhook": 2.0, "clients": 2.0}
    measured.cpu_without = {"kube-apiserver": 4.0, "spreadhook": 0.0, "clients": 2.0}

    assert measured.cpu_ratio == 0.6
    assert run(64, 1, 1.0, 1.0, 1.0, 1.0).cpu_ratio is None  # no CPU readings: no ratio, not a division by zero


def test_the_table_shows_how_busy_the_cores_were_in_each_burst() -> None:
    measured = run(64, 2, 200.0, 400.0, 250.0, 9.0)
    measured.cpu_with, measured.cpu_without = {"kube-apiserver": 10.0}, {"kube-apiserver": 5.0}

    rows = {line.split("  ")[0]: line for line in table([measured]).splitlines()}

    assert "2.00/-/-/-/2.00" in rows["CPU cores busy"]
    assert "0.500" in rows["ratio by CPU (without/with ms per pod)"]
    assert "without null+patch null no-spread with" in rows["burst order"]
