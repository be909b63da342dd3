"""`fbocc export --dataroot`: nuScenes keyframes (FB-BEV info pickle, camera JPEGs, Occ3D labels) read,
prepared as FB-BEV's test pipeline does, exported with ground truth, pushed and scored by validate.

The dataroot is built here: one info pickle with two keyframes of one scene (stored out of order), 12
small JPEGs written with matplotlib and Occ3D labels.npz files. One full-size export runs on it (slow).
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.image import imsave

from fbocc.errors import ConfigError, ValidationError
from fbocc.model.config import ModelConfig
from fbocc.model.nuscenes import (
    CAMERAS,
    camera_calibration,
    curr_to_prev_ego,
    load_image,
    nuscenes_sequence,
    quaternion_matrix,
    select_samples,
)
from fbocc.model.preprocess import SequencePreprocessor
from fbocc.results.comparison import fbbev_occ3d_labels

IMG_W, IMG_H = 320, 180  # a 1600x900 nuScenes camera at 1/5 scale, intrinsics scaled to match
YAWS = {"CAM_FRONT_LEFT": 55.0, "CAM_FRONT": 0.0, "CAM_FRONT_RIGHT": -55.0, "CAM_BACK_LEFT": 110.0,
        "CAM_BACK": 180.0, "CAM_BACK_RIGHT": -110.0}
CAM_TO_EGO_AXES = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # x right, y down, z forward


def rot_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


def quaternion(m: np.ndarray) -> list[float]:
    """(w, x, y, z) of a rotation matrix (largest-component branch, numerically safe)."""
    t = np.trace(m)
    if t > 0:
        s = 2.0 * math.sqrt(t + 1.0)
        return [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    i = int(np.argmax(np.diag(m)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2.0 * math.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
    q = [0.0, 0.0, 0.0, 0.0]
    q[0] = (m[k, j] - m[j, k]) / s
    q[1 + i] = 0.25 * s
    q[1 + j] = (m[j, i] + m[i, j]) / s
    q[1 + k] = (m[k, i] + m[i, k]) / s
    return q


def ego_pose(t: int) -> tuple[list[float], list[float]]:
    """Keyframe t: 2 m forward per keyframe along a heading of 30 + 3 t degrees."""
    yaw = 30.0 + 3.0 * t
    pos = [400.0 + 2.0 * t * math.cos(math.radians(30.0)), 1100.0 + 2.0 * t * math.sin(math.radians(30.0)), 0.0]
    return quaternion(rot_z(yaw)), pos


def make_dataroot(root: Path, *, frames: int = 2, with_gt: bool = True) -> dict[str, Any]:
    """A nuScenes-shaped dataroot in FB-BEV's layout; returns what was written."""
    rng = np.random.default_rng(3)
    infos, labels = [], []
    for t in range(frames):
        token = f"tok{t:02d}" + "0" * 26
        rot, pos = ego_pose(t)
        cams = {}
        for c, name in enumerate(CAMERAS):
            rel = Path("samples") / name / f"n008-2018__{name}__{1533151603512404 + t * 500000}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            coarse = rng.random((IMG_H // 20, IMG_W // 20, 3))
            img = np.kron(coarse, np.ones((20, 20, 1)))  # blocky, so JPEG keeps the pattern
            imsave(root / rel, img)
            cam_rot, cam_pos = ego_pose(t)
            if name == "CAM_BACK":  # camera captured 20 ms later: ego moved on, so its pose differs from CAM_FRONT's
                cam_pos = [cam_pos[0] + 0.2, cam_pos[1], cam_pos[2]]
            focal = 1266.4 / 5.0
            cams[name] = {
                "data_path": f"./data/nuscenes/{rel.as_posix()}", "type": name,
                "sample_data_token": f"sd{t}{c}",
                "sensor2ego_rotation": quaternion(rot_z(YAWS[name]) @ CAM_TO_EGO_AXES),
                "sensor2ego_translation": [1.5 * math.cos(math.radians(YAWS[name])),
                                           0.5 * math.sin(math.radians(YAWS[name])), 1.5],
                "ego2global_rotation": cam_rot, "ego2global_translation": cam_pos,
                "cam_intrinsic": np.array([[focal, 0.0, 816.3 / 5], [0.0, focal, 491.5 / 5], [0.0, 0.0, 1.0]]),
                "timestamp": 1533151603512404 + t * 500000,
            }
        infos.append({"token": token, "scene_token": "scene-tok-0103", "scene_name": "scene-0103",
                      "timestamp": 1533151603547590 + t * 500000, "ego2global_rotation": rot,
                      "ego2global_translation": pos, "lidar2ego_rotation": [1.0, 0.0, 0.0, 0.0],
                      "lidar2ego_translation": [0.94, 0.0, 1.84], "cams": cams, "prev": "" if t == 0 else "x",
                      "occ_path": f"./data/nuscenes/gts/scene-0103/{token}"})
        sem = rng.integers(0, 18, (200, 200, 16)).astype(np.uint8)
        mask = rng.random((200, 200, 16)) < 0.7
        labels.append({"semantics": sem, "mask_camera": mask})
        if with_gt:
            gt_dir = root / "gts" / "scene-0103" / token
            gt_dir.mkdir(parents=True)
            np.savez_compressed(gt_dir / "labels.npz", semantics=sem, mask_lidar=mask,
                                mask_camera=mask.astype(np.uint8))
    other = dict(infos[0], token="other" + "0" * 27, scene_token="scene-tok-0001", scene_name="scene-0001",
                 timestamp=1000)  # an earlier scene: the default is the first scene, not the first info
    stored = [infos[1], other, infos[0]]  # out of time order: the reader sorts by timestamp
    with (root / "bevdetv2-nuscenes_infos_val.pkl").open("wb") as fh:
        pickle.dump({"infos": stored, "metadata": {"version": "v1.0-trainval"}}, fh)
    return {"infos": infos, "labels": labels}


@pytest.fixture
def dataroot(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    root = tmp_path / "nuscenes"
    return root, make_dataroot(root)


def test_quaternions_become_the_rotations_nuscenes_means() -> None:
    for yaw in (0.0, 55.0, 180.0, -110.0):
        m = rot_z(yaw) @ CAM_TO_EGO_AXES
        np.testing.assert_allclose(quaternion_matrix(quaternion(m)), m, atol=1e-12)
    np.testing.assert_allclose(quaternion_matrix([2.0, 0.0, 0.0, 0.0]), np.eye(3))  # normalized first


def test_keyframes_of_one_scene_come_in_time_order(dataroot: tuple[Path, dict[str, Any]]) -> None:
    root, made = dataroot
    with (root / "bevdetv2-nuscenes_infos_val.pkl").open("rb") as fh:
        infos = pickle.load(fh)["infos"]
    assert [i["scene_name"] for i in select_samples(infos, 1)] == ["scene-0001"]  # earliest scene by default
    chosen = select_samples(infos, 2, scene="scene-0103")
    assert [i["token"] for i in chosen] == [i["token"] for i in made["infos"]]
    later = select_samples(infos, 1, scene="scene-tok-0103", start=1)
    assert [i["token"] for i in later] == [made["infos"][1]["token"]]
    with pytest.raises(ConfigError, match="scene-0103 has 2 keyframes"):
        select_samples(infos, 3, scene="scene-0103")
    with pytest.raises(ConfigError, match="scene 'scene-9999' is not in"):
        select_samples(infos, 1, scene="scene-9999")


def test_images_are_resized_cropped_and_normalized_as_fbbev_test_pipeline(tmp_path: Path) -> None:
    cfg = ModelConfig()
    path = tmp_path / "red.jpg"
    img = np.zeros((900, 1600, 3))
    img[..., 0] = 1.0  # pure red
    imsave(path, img)
    arr, resize, crop = load_image(path, cfg)
    assert arr.shape == (3, 256, 704) and arr.dtype == np.float32
    assert resize == pytest.approx(0.44) and crop == (0, 140, 704, 396)  # 1600x900 -> 704x396, bottom 256 rows
    # mmlabNormalize(to_rgb=True) on a PIL (RGB) image: channel order B, G, R, each with mean/std of its slot
    np.testing.assert_allclose(arr[:, 128, 352], [(0 - 123.675) / 58.395, (0 - 116.28) / 57.12,
                                                  (255 - 103.53) / 57.375], atol=0.1)


def test_sequence_has_calibration_motion_images_and_occ3d_labels(dataroot: tuple[Path, dict[str, Any]]) -> None:
    root, made = dataroot
    cfg = ModelConfig()
    seq = nuscenes_sequence(cfg, root, 2, scene="scene-0103")
    assert seq.scene_name == "scene-0103" and seq.info_file.name == "bevdetv2-nuscenes_infos_val.pkl"
    assert [s.token for s in seq.samples] == [i["token"] for i in made["infos"]]
    assert seq.has_ground_truth
    first, second = seq.samples
    assert first.frame.start_of_sequence and not second.frame.start_of_sequence
    assert first.frame.imgs.shape == (6, 3, 256, 704)
    assert all(f.is_file() and f.parent.name == cam for f, cam in zip(first.image_files, CAMERAS, strict=True))
    # 320x180 images: resize 2.2 to 704x396, crop the bottom 256 rows
    np.testing.assert_allclose(first.frame.post_rots[:, 0, 0].numpy(), 2.2, rtol=1e-6)
    np.testing.assert_allclose(first.frame.post_trans[:, 1].numpy(), -140.0)
    # cameras in the CAM_FRONT ego frame: CAM_BACK's ego was 0.2 m further along global x
    info = made["infos"][0]
    rots, trans, _ = camera_calibration(info)
    back = CAMERAS.index("CAM_BACK")
    np.testing.assert_allclose(rots[back], rot_z(180.0) @ CAM_TO_EGO_AXES, atol=1e-9)
    shift = rot_z(30.0).T @ np.array([0.2, 0.0, 0.0])
    np.testing.assert_allclose(trans[back], np.array(info["cams"]["CAM_BACK"]["sensor2ego_translation"]) + shift,
                               atol=1e-9)
    # motion: the current ego (2 m on, turned 3 degrees) as seen from the previous ego
    motion = curr_to_prev_ego(made["infos"][1], made["infos"][0])
    np.testing.assert_allclose(motion[:3, :3], rot_z(3.0), atol=1e-9)
    np.testing.assert_allclose(motion[:3, 3], [2.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(second.frame.curr_to_prev_ego_rt.numpy(), motion, atol=1e-5)
    assert first.ground_truth is not None
    np.testing.assert_array_equal(first.ground_truth["semantics"], made["labels"][0]["semantics"])
    assert first.ground_truth["mask_camera"].dtype == bool
    np.testing.assert_array_equal(first.ground_truth["mask_camera"], made["labels"][0]["mask_camera"])
    # the preprocessing turns the real calibration into graph inputs (frustum points land in the grid)
    pre = SequencePreprocessor(cfg)
    arrays = pre.inputs(first.frame)
    assert arrays["ranks_bev"].size > 1000 and arrays["indexes"].shape[:2] == (1, 6)
    np.testing.assert_array_equal(arrays["imgs"][0], first.frame.imgs.numpy())


def test_missing_pieces_of_a_dataroot_name_the_file_and_the_fix(tmp_path: Path) -> None:
    cfg = ModelConfig()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"bevdetv2-nuscenes_infos_val\.pkl") as err:
        nuscenes_sequence(cfg, empty, 2)
    assert "create_data_bevdet" in (err.value.fix or "")
    (empty / "bevdetv2-nuscenes_infos_val.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ValidationError, match="not a readable info pickle"):
        nuscenes_sequence(cfg, empty, 2)
    with (empty / "bevdetv2-nuscenes_infos_val.pkl").open("wb") as fh:
        pickle.dump({"infos": [{"token": "a"}]}, fh)
    with pytest.raises(ValidationError, match="info 0 lacks timestamp"):
        nuscenes_sequence(cfg, empty, 1)

    root = tmp_path / "nuscenes"
    make_dataroot(root, with_gt=False)
    seq = nuscenes_sequence(cfg, root, 2, scene="scene-0103")  # no gts/: frames without ground truth
    assert not seq.has_ground_truth and seq.samples[0].ground_truth is None
    with pytest.raises(ValidationError, match=r"labels\.npz are missing") as err:
        nuscenes_sequence(cfg, root, 2, scene="scene-0103", occ_root=tmp_path / "gts")
    assert "--occ-root" in (err.value.fix or "")
    victim = next((root / "samples" / "CAM_BACK").glob("*.jpg"))
    victim.unlink()
    with pytest.raises(ValidationError, match=f"camera image .*{victim.name} is missing"):
        nuscenes_sequence(cfg, root, 2, scene="scene-0103")

    bad = tmp_path / "bad"
    made = make_dataroot(bad)
    token = made["infos"][0]["token"]
    np.savez(bad / "gts" / "scene-0103" / token / "labels.npz", semantics=np.zeros((200, 200, 8), np.uint8),
             mask_camera=np.zeros((200, 200, 8), np.uint8))
    with pytest.raises(ValidationError, match="semantics has shape \\[200, 200, 8\\]"):
        nuscenes_sequence(cfg, bad, 2, scene="scene-0103")


def test_export_refuses_dataset_options_without_a_dataroot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fbocc.cli import run

    out = tmp_path / "x"
    assert run(["export", "--random-weights", "--scene", "scene-0103", "--out", str(out)]) == 2
    assert "add --dataroot" in capsys.readouterr().err
    assert run(["export", "--random-weights", "--dataroot", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert not out.exists()


def test_predictions_map_onto_occ3d_labels_as_fbbev_post_process() -> None:
    scores = torch.randn(1, 19, 6, 5, 4, generator=torch.Generator().manual_seed(0))
    # FB-BEV's FBOCCTRT.post_process, written with torch as upstream does
    ref = scores.permute(0, 2, 3, 4, 1)[0][..., 1:].softmax(-1)
    ref = ref.permute(3, 2, 0, 1)
    ref = torch.flip(ref, [2])
    ref = torch.rot90(ref, -1, [2, 3])
    ref = ref.permute(2, 3, 1, 0).argmax(-1)
    got = fbbev_occ3d_labels(scores.numpy())
    assert got.shape == (5, 6, 4)
    np.testing.assert_array_equal(got, ref.numpy())


def _tiny_samples(root: Path, *, dataset_gt: bool) -> Path:
    from fbocc.export.samples import save_manifest, write_tensor

    samples = root / "samples"
    samples.mkdir(parents=True)
    frame = {"id": "000", "inputs": {"x": write_tensor(samples, "frame_000/x.dat", np.zeros(4, np.float32))},
             "outputs": {"y": write_tensor(samples, "frame_000/y.dat", np.ones(4, np.float32))},
             "ground_truth": {
                 "semantics": write_tensor(samples, "frame_000/gt_semantics.dat", np.zeros((2, 2, 2), np.uint8)),
                 "mask_camera": write_tensor(samples, "frame_000/gt_mask_camera.dat", np.ones((2, 2, 2), bool))}}
    manifest: dict[str, Any] = {"inputs": [{"name": "x", "dtype": "float32"}],
                                "outputs": [{"name": "y", "dtype": "float32"}], "frames": [frame],
                                "source": "nuscenes" if dataset_gt else "synthetic"}
    if dataset_gt:
        manifest["dataset"] = {"scene_name": "scene-0103", "ground_truth": "occ3d"}
    save_manifest(samples, manifest)
    return samples


def test_push_carries_the_ground_truth_of_a_dataset_export(tmp_path: Path) -> None:
    from fbocc.target.artefacts import collect_artefacts

    samples = _tiny_samples(tmp_path / "real", dataset_gt=True)
    files = {f.path for f in collect_artefacts(onnx=None, plugin=None, samples=samples).files}
    assert {"samples/frame_000/gt_semantics.dat", "samples/frame_000/gt_mask_camera.dat"} <= files
    (samples / "frame_000" / "gt_semantics.dat").write_bytes(b"\0" * 3)  # truncated
    with pytest.raises(ValidationError, match=r"gt_semantics\.dat .* has 3 bytes"):
        collect_artefacts(onnx=None, plugin=None, samples=samples)
    plain = _tiny_samples(tmp_path / "synthetic", dataset_gt=False)
    files = {f.path for f in collect_artefacts(onnx=None, plugin=None, samples=plain).files}
    assert not any("gt_" in f for f in files)


# --- one full-size export from the tiny dataroot ---------------------------------------------------------


@pytest.fixture(scope="module")
def nuscenes_export(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from fbocc.cli import run

    base = tmp_path_factory.mktemp("nuscenes-export")
    root = base / "nuscenes"
    made = make_dataroot(root)
    out = base / "fbocc"
    code = run(["export", "--preset", "fbocc-r50-16f", "--random-weights", "--seed", "7", "--samples", "2",
                "--dataroot", str(root), "--scene", "scene-0103", "--out", str(out)])
    assert code == 0
    yield {"root": root, "made": made, "out": out, "samples": out / "samples"}
    shutil.rmtree(base, ignore_errors=True)  # ~1 GB of samples: do not leave it in pytest's kept tmp dirs


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_export_from_a_dataroot_writes_real_frames_and_ground_truth(nuscenes_export: dict[str, Any]) -> None:
    from fbocc.export.samples import load_manifest, read_tensor

    samples = nuscenes_export["samples"]
    made = nuscenes_export["made"]
    manifest = load_manifest(samples, verify_hashes=True)
    assert manifest["source"] == "nuscenes" and "scene-0103" in manifest["source_note"]
    assert manifest["dataset"]["scene_name"] == "scene-0103"
    assert manifest["dataset"]["sample_tokens"] == [i["token"] for i in made["infos"]]
    assert manifest["dataset"]["ground_truth"] == "occ3d"
    frames = manifest["frames"]
    assert [f["sample_token"] for f in frames] == manifest["dataset"]["sample_tokens"]
    seq = nuscenes_sequence(ModelConfig(), nuscenes_export["root"], 2, scene="scene-0103")
    for frame, sample, labels in zip(frames, seq.samples, made["labels"], strict=True):
        imgs = read_tensor(samples, frame["inputs"]["imgs"])
        np.testing.assert_array_equal(imgs[0], sample.frame.imgs.numpy())
        gt = {k: read_tensor(samples, v) for k, v in frame["ground_truth"].items()}
        assert gt["semantics"].dtype == np.uint8 and gt["mask_camera"].dtype == bool
        np.testing.assert_array_equal(gt["semantics"], labels["semantics"])
        np.testing.assert_array_equal(gt["mask_camera"], labels["mask_camera"])
    assert read_tensor(samples, frames[1]["inputs"]["start_of_sequence"]).tolist() == [False]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_validate_scores_an_export_against_its_occ3d_labels(nuscenes_export: dict[str, Any]) -> None:
    from fbocc.export.samples import load_manifest, read_tensor
    from fbocc.results.comparison import compare_runs
    from fbocc.results.metrics import sequence_miou

    samples = nuscenes_export["samples"]
    comp = compare_runs(samples, samples, "fp32")  # the reference outputs judged as a run: identical
    assert comp.passed and comp.label_agreement == 1.0
    assert comp.miou_against == "ground-truth"
    m = load_manifest(samples)
    preds = [fbbev_occ3d_labels(read_tensor(samples, f["outputs"]["pred_occupancy"])) for f in m["frames"]]
    gts = [read_tensor(samples, f["ground_truth"]["semantics"]) for f in m["frames"]]
    masks = [read_tensor(samples, f["ground_truth"]["mask_camera"]) for f in m["frames"]]
    expected = sequence_miou(preds, gts, masks).miou
    assert comp.miou == pytest.approx(expected, abs=1e-3) and comp.miou_reference == pytest.approx(comp.miou)
    assert json.loads((samples / "manifest.json").read_text())["dataset"]["prediction_to_ground_truth"] == "fbbev-occ3d"
