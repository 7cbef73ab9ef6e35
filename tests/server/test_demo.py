"""``spreadhook demo``: the scenario over HTTPS through the production app, verdict from the patched pods."""

from __future__ import annotations

import io

from spreadhook.demo import run_demo


def test_demo_fills_packages_overflows_to_no_eip_and_scales_in_from_the_back() -> None:
    result = run_demo(replicas=600, overflow=60, scale_in_to=200, concurrency=16, out=io.StringIO())
    assert result["verdict"] == "ok"
    counts = {s["name"]: s["replicas"] for s in result["subsets"]}
    assert counts["bandwidthPackage-1"] == counts["bandwidthPackage-2"] == 300
    assert counts["bandwidthPackage-3"] == 60 and counts["no-eip"] == 0
    assert result["scaleIn"] == [{"subset": "bandwidthPackage-3", "pods": 60},
                                 {"subset": "bandwidthPackage-2", "pods": 300},
                                 {"subset": "bandwidthPackage-1", "pods": 100}]
    assert result["afterScaleIn"] == {"bandwidthPackage-1": 200}
    assert set(result["latency_ms"]) == {"p50", "p95", "p99"} and result["admissions_per_s"] > 0
