"""``spreadhook plan`` and ``spreadhook mutate``: the interface contract of DESIGN.md, on the embedded store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from spreadhook import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plan_fills_ten_packages_of_300_then_no_eip_and_scales_in_in_reverse(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "-f", str(EXAMPLES / "bandwidth-packages.yaml"), "--replicas", "3300",
                       "-o", "json")
    assert code == 0
    result = json.loads(out)
    assert [(s["name"], s["replicas"], s["maxReplicas"]) for s in result["subsets"]] == \
        [(f"bandwidthPackage-{i}", 300, 300) for i in range(1, 11)] + [("no-eip", 300, None)]
    assert result["scaleIn"] == [{"subset": "no-eip", "pods": 300}] + \
        [{"subset": f"bandwidthPackage-{i}", "pods": 300} for i in range(10, 0, -1)]


def test_plan_scale_in_to_1000_empties_no_eip_then_packages_from_the_back(
        capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "plan", "-f", str(EXAMPLES / "bandwidth-packages.yaml"), "--replicas", "1000",
                    "--from", "3300", "-o", "json")
    result = json.loads(out)
    assert result["scaleIn"][:2] == [{"subset": "no-eip", "pods": 300}, {"subset": "bandwidthPackage-10", "pods": 300}]
    assert result["scaleIn"][-1] == {"subset": "bandwidthPackage-4", "pods": 200}
    assert [s["replicas"] for s in result["subsets"]][:5] == [300, 300, 300, 100, 0]


def test_plan_keeps_percentage_subsets_in_proportion_on_scale_in(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "plan", "-f", str(EXAMPLES / "zones-percent.yaml"), "--replicas", "4", "--from", "12",
                    "-o", "json")
    assert [s["replicas"] for s in json.loads(out)["subsets"]] == [2, 1, 1]


def test_plan_table_shows_subsets_and_scale_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", "-f", str(EXAMPLES / "sidecar-on-cloud.yaml"), "--replicas", "12",
                       "--from", "8")
    assert code == 0
    assert "local       8     8          needs-acceleration-sidecar=false" in out
    assert "1      aliyun-acs  4" in out


def test_invalid_workloadspread_exits_2_with_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({
        "apiVersion": "apps.kruise.io/v1alpha1", "kind": "WorkloadSpread", "metadata": {"name": "x"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                 "subsets": [{"name": "a", "maxReplicas": "50"}, {"name": "a"}]}}))
    code, out, err = run(capsys, "plan", "-f", str(bad), "--replicas", "3")
    assert code == 2 and out == ""
    assert "spec.subsets[0].maxReplicas" in err and "spec.subsets[1].name: duplicated subset name a" in err


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plan", "-f", "/nonexistent.yaml", "--replicas", "3")
    assert code == 2 and "/nonexistent.yaml" in err


def test_mutate_shows_the_patch_for_the_first_subset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {}},
                                   "spec": {"containers": [{"name": "app", "image": "x"}]}}))
    code, out, _ = run(capsys, "mutate", "-f", str(EXAMPLES / "sidecar-on-cloud.yaml"), "-p", str(pod), "-o",
                       "patch")
    assert code == 0
    ops = json.loads(out)
    assert {"op": "add", "path": "/metadata/labels/needs-acceleration-sidecar", "value": "false"} in ops


def test_mutate_into_a_named_subset_and_refuse_an_unknown_one(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    pod = tmp_path / "pod.yaml"
    pod.write_text(yaml.safe_dump({"kind": "Pod", "metadata": {"name": "p"},
                                   "spec": {"containers": [{"name": "app", "image": "x"}]}}))
    code, out, _ = run(capsys, "mutate", "-f", str(EXAMPLES / "sidecar-on-cloud.yaml"), "-p", str(pod),
                       "--subset", "aliyun-acs", "-o", "json")
    assert code == 0 and json.loads(out)["metadata"]["labels"]["needs-acceleration-sidecar"] == "true"
    code, _, err = run(capsys, "mutate", "-f", str(EXAMPLES / "sidecar-on-cloud.yaml"), "-p", str(pod),
                       "--subset", "nope")
    assert code == 2 and "nope" in err
