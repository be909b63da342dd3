"""`fbocc validate` against a real OpenSSH target on loopback with the onnxruntime backend: the sequence
runs remotely, outputs come back, agreement with PyTorch is reported and the mIoU joins the history.
Also the host-side `check-onnx --run` library (fbocc.export.onnx_run) and the comparison on its own."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime_extensions")

from fbocc.config import Target
from fbocc.export.onnx_run import run_onnx
from fbocc.export.samples import load_manifest, read_tensor, write_tensor
from fbocc.results.comparison import compare_runs
from fbocc.results.history import load_validations
from fbocc.results.metrics import sequence_miou
from fbocc.target.validate import validate_target
from tests.sshd import SshServer
from tests.test_run_sequence import make_sequence_set

REPO = Path(__file__).resolve().parents[1]


def push_current(session, root: Path) -> None:  # type: ignore[no-untyped-def]
    """push-to-target's real push of the ONNX, samples/ and deploy/ (no plugin: onnxruntime backend)."""
    from fbocc.target.artefacts import collect_artefacts
    from fbocc.target.push import push_artifacts

    push_artifacts(session, collect_artefacts(onnx=root / "tiny.onnx", plugin=None, samples=root / "samples"))


def _target(sshd: SshServer, workdir: Path) -> Target:
    return Target(name="loop", host=sshd.host, port=sshd.port, user=sshd.user, identity_file=sshd.client_key,
                  workdir=str(workdir), python=sys.executable)


@pytest.mark.ssh
def test_validate_onnxruntime_on_loopback_target_agrees_with_pytorch(sshd: SshServer, tmp_path: Path) -> None:
    from fbocc.target.transport import TargetSession

    export = tmp_path / "export"
    make_sequence_set(export, ground_truth=True)
    results = tmp_path / "results"
    with TargetSession(_target(sshd, tmp_path / "remote"), known_hosts=sshd.known_hosts) as session:
        push_current(session, export)
        report = validate_target(session, backend="onnxruntime", precisions=["fp32"], local_dir=tmp_path / "local",
                                 samples_dir=export / "samples", results_dir=results)
        # without a local export the references come from the target (ground truth is not pushed)
        # and with a pull limit of 0 bytes only the occupancy output travels; the rest is judged on the target
        pulled = validate_target(session, backend="onnxruntime", precisions=["fp32"], local_dir=tmp_path / "l2",
                                 pull_limit=0)
    assert pulled.passed and pulled.comparisons[0].miou_against == "pytorch"
    assert pulled.comparisons[0].miou == pytest.approx(100.0)
    where = {t.name: t.compared_on for t in pulled.comparisons[0].tensors}
    assert where == {"occ_scores": "host", "hist_out": "target"}
    assert not list((tmp_path / "l2" / "onnxruntime-fp32").rglob("hist_out.dat"))
    assert {t.name: t.compared_on for t in report.comparisons[0].tensors} == {"occ_scores": "host",
                                                                               "hist_out": "host"}
    assert report.passed, json.dumps(report.as_dict(), indent=1)
    (comp,) = report.comparisons
    assert comp.against == "pytorch" and comp.frames == 3
    assert {t.name for t in comp.tensors} == {"occ_scores", "hist_out"}
    assert all(t.cosine > 0.99999 and t.rel_error < 1e-5 for t in comp.tensors)
    assert comp.label_agreement == 1.0
    # ground truth present: mIoU is against it, and equals PyTorch's own mIoU (labels agree everywhere)
    assert comp.miou_against == "ground-truth"
    samples = export / "samples"
    m = load_manifest(samples)
    preds = [read_tensor(samples, f["outputs"]["occ_scores"])[0].argmax(-1) for f in m["frames"]]
    gts = [read_tensor(samples, f["ground_truth"]["semantics"]) for f in m["frames"]]
    masks = [read_tensor(samples, f["ground_truth"]["mask_camera"]) for f in m["frames"]]
    assert comp.miou == pytest.approx(sequence_miou(preds, gts, masks).miou, abs=1e-3)
    assert comp.miou_reference == pytest.approx(comp.miou, abs=1e-3)
    (record,) = load_validations(results)
    assert record.backend == "onnxruntime" and record.precision == "fp32" and record.target == "loop"
    assert record.miou == pytest.approx(comp.miou)
    assert (tmp_path / "local" / "onnxruntime-fp32" / "manifest.json").is_file()
    # the host's export is the pushed one: its references are used, nothing is pulled for them
    assert not (tmp_path / "local" / "reference").exists() and (tmp_path / "l2" / "reference").is_dir()


@pytest.mark.ssh
def test_validate_cli_without_push_names_the_missing_step(sshd: SshServer, tmp_path: Path, isolated_home: Path) -> None:
    from fbocc.cli import run

    (Path.cwd() / "fbocc.toml").write_text(
        sshd.target_toml("loop", tmp_path / "empty-remote", python=sys.executable)
        + f'\n[project]\nknown_hosts = "{sshd.known_hosts}"\n')
    code = run(["validate", "loop", "--backend", "onnxruntime"])
    assert code == 6  # RemoteError: nothing pushed


@pytest.mark.ssh
def test_validate_cli_reports_json_and_joins_the_history(sshd: SshServer, tmp_path: Path, isolated_home: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from fbocc.cli import run
    from fbocc.target.transport import TargetSession

    export = tmp_path / "export"
    make_sequence_set(export)
    target = _target(sshd, tmp_path / "remote")
    with TargetSession(target, known_hosts=sshd.known_hosts) as session:
        push_current(session, export)
    (Path.cwd() / "fbocc.toml").write_text(
        sshd.target_toml("loop", tmp_path / "remote", python=sys.executable)
        + f'\n[project]\nknown_hosts = "{sshd.known_hosts}"\nresults_dir = "{tmp_path / "results"}"\n')
    capsys.readouterr()
    assert run(["validate", "loop", "--backend", "onnxruntime", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] and doc["backend"] == "onnxruntime"
    assert doc["comparisons"][0]["miou_against"] == "pytorch"
    assert [v.target for v in load_validations(tmp_path / "results")] == ["loop"]
    assert run(["validate", "loop", "--backend", "onnxruntime", "--precision", "fp16"]) == 2


def test_check_onnx_run_on_host_reports_agreement(tmp_path: Path) -> None:
    make_sequence_set(tmp_path)
    result = run_onnx(tmp_path / "tiny.onnx", tmp_path / "samples", tmp_path / "out")
    assert result.passed and result.frames == 3 and result.custom_nodes == 2
    assert result.comparison is not None and result.comparison.label_agreement == 1.0
    assert result.comparison.miou_against == "pytorch" and result.comparison.miou == pytest.approx(100.0)


def test_a_wrong_output_fails_the_comparison_and_names_the_output(tmp_path: Path) -> None:
    make_sequence_set(tmp_path)
    samples = tmp_path / "samples"
    out = tmp_path / "out"
    run_onnx(tmp_path / "tiny.onnx", samples, out)
    # perturb frame 1's history output in the run: the carried state is wrong from there on
    m = load_manifest(out)
    entry = m["frames"][1]["outputs"]["hist_out"]
    bad = read_tensor(out, entry) * 1.05
    write_tensor(out, entry["file"], bad)
    comp = compare_runs(samples, out, "fp32")
    by_name = {t.name: t for t in comp.tensors}
    assert not comp.passed
    assert not by_name["hist_out"].within and by_name["hist_out"].history
    assert by_name["occ_scores"].within


def test_fp16_against_fp32_uses_the_fp16_tolerance(tmp_path: Path) -> None:
    make_sequence_set(tmp_path)
    samples = tmp_path / "samples"
    run_onnx(tmp_path / "tiny.onnx", samples, tmp_path / "fp32")
    shutil.copytree(tmp_path / "fp32", tmp_path / "fp16")
    m = load_manifest(tmp_path / "fp16")
    for frame in m["frames"]:
        for entry in frame["outputs"].values():
            arr = read_tensor(tmp_path / "fp16", entry)
            write_tensor(tmp_path / "fp16", entry["file"], arr.astype(np.float16).astype(np.float32))
    comp = compare_runs(tmp_path / "fp32", tmp_path / "fp16", "fp16", against="fp32")
    assert comp.passed and comp.against == "fp32"
    assert all(0 < t.rel_error < 2e-3 for t in comp.tensors)
