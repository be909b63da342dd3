"""Real samples for `fbocc export --dataroot`: consecutive keyframes of one nuScenes scene, prepared as
FB-BEV's test pipeline prepares them, with Occ3D ground truth when the dataroot has it.

What is read (FB-BEV's layout, `docs/prepare_datasets.md`)::

    DATAROOT/bevdetv2-nuscenes_infos_val.pkl   {"infos": [info, ...], "metadata": {...}} (or a bare list)
    DATAROOT/samples/CAM_*/....jpg             the 6 camera images each info names (`cams[CAM].data_path`)
    DATAROOT/gts/<scene_name>/<token>/labels.npz   Occ3D: semantics, mask_lidar, mask_camera (optional)

Each info carries `token`, `scene_token`, `scene_name`, `timestamp` (us), `ego2global_rotation/translation`
and `cams[CAM_*]` with `data_path`, `cam_intrinsic`, `sensor2ego_rotation` (w, x, y, z),
`sensor2ego_translation`, `ego2global_rotation/translation` (the ego pose at that camera's timestamp).

The transforms follow FB-BEV's `PrepareImageInputs` at test time (resize to the input width, crop the
bottom rows, PIL bicubic; `mmlabNormalize` with to_rgb=True, which flips PIL's RGB to BGR before the mean
and std are applied), camera extrinsics relative to the CAM_FRONT ego (`get_sensor2ego_transformation`),
and `curr_to_prev_ego_rt` from consecutive infos' ego poses (`nuscenes_get_rt_matrix(.., "ego", "ego")`).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fbocc.errors import ConfigError, ValidationError
from fbocc.model.config import ModelConfig
from fbocc.model.preprocess import CameraFrame

# FB-BEV's data_config['cams']: the order the network's camera axis has.
CAMERAS: tuple[str, ...] = (
    "CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT",
)
EGO_CAMERA = "CAM_FRONT"  # PrepareImageInputs(ego_cam='CAM_FRONT'): the ego frame every camera is expressed in
INFO_NAMES: tuple[str, ...] = ("bevdetv2-nuscenes_infos_val.pkl", "bevdetv2-nuscenes_infos_train.pkl")
OCC_SHAPE = (200, 200, 16)
_FIX_INFO = ("create it with FB-BEV's tools/create_data_bevdet.py (see its docs/prepare_datasets.md), "
             "or pass --info-file PKL")


@dataclass
class NuScenesSample:
    """One keyframe: its network frame, identity and (when present) Occ3D labels in Occ3D's layout."""

    token: str
    scene_name: str
    timestamp: int
    frame: CameraFrame
    image_files: list[Path]
    ground_truth: dict[str, np.ndarray] | None = None  # semantics uint8, mask_camera bool, [200, 200, 16]


@dataclass
class NuScenesSequence:
    """Consecutive keyframes of one scene, in time order."""

    info_file: Path
    scene_name: str
    scene_token: str
    start: int
    samples: list[NuScenesSample] = field(default_factory=list)

    @property
    def has_ground_truth(self) -> bool:
        return bool(self.samples) and all(s.ground_truth is not None for s in self.samples)


def quaternion_matrix(q: Any) -> np.ndarray:
    """Rotation matrix of a (w, x, y, z) quaternion, normalized first (as pyquaternion does)."""
    w, x, y, z = (float(v) for v in q)
    n = (w * w + x * x + y * y + z * z) ** 0.5
    if n == 0.0:
        raise ValueError("zero quaternion")
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def pose_matrix(rotation: Any, translation: Any) -> np.ndarray:
    """4x4 rigid transform from a (w, x, y, z) quaternion and a translation."""
    out = np.eye(4)
    out[:3, :3] = quaternion_matrix(rotation)
    out[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return out


def find_info_file(dataroot: Path, info_file: Path | None = None) -> Path:
    """The info pickle: `info_file` (absolute, or relative to the dataroot), else FB-BEV's default names."""
    if not dataroot.is_dir():
        raise ConfigError(f"nuScenes dataroot {dataroot} is not a directory",
                          fix="pass the folder that holds samples/, gts/ and the bevdetv2 info .pkl")
    if info_file is not None:
        path = info_file if info_file.is_absolute() or info_file.exists() else dataroot / info_file
        if not path.is_file():
            raise ConfigError(f"info file {path} does not exist", fix=_FIX_INFO)
        return path
    for name in INFO_NAMES:
        if (dataroot / name).is_file():
            return dataroot / name
    raise ConfigError(f"{dataroot} has no info file ({' or '.join(INFO_NAMES)})", fix=_FIX_INFO)


def load_infos(path: Path) -> list[dict[str, Any]]:
    """The infos of an FB-BEV/BEVDet info pickle (`{"infos": [...]}`, `{"data_list": [...]}` or a list)."""
    try:
        with path.open("rb") as fh:
            data = pickle.load(fh)  # the user's own dataset file, read as FB-BEV's mmcv.load reads it
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ModuleNotFoundError, ImportError) as exc:
        raise ValidationError(f"{path} is not a readable info pickle ({exc.__class__.__name__}: {exc})",
                              fix=_FIX_INFO) from exc
    infos = data.get("infos", data.get("data_list")) if isinstance(data, dict) else data
    if not isinstance(infos, list) or not infos or not all(isinstance(i, dict) for i in infos):
        raise ValidationError(f"{path} holds no list of sample infos (expected {{'infos': [dict, ...]}})",
                              fix=_FIX_INFO)
    need = ("token", "timestamp", "cams", "ego2global_rotation", "ego2global_translation")
    for i, info in enumerate(infos):
        missing = [k for k in need if k not in info]
        if "scene_token" not in info and "scene_name" not in info:
            missing.append("scene_token/scene_name")
        if missing:
            raise ValidationError(f"{path}: info {i} lacks {', '.join(missing)}: not an FB-BEV (bevdetv2) info file",
                                  fix=_FIX_INFO)
    return infos


def _scene_key(info: dict[str, Any]) -> str:
    return str(info.get("scene_token") or info.get("scene_name"))


def select_samples(infos: list[dict[str, Any]], count: int, *, scene: str | None = None,
                   start: int = 0, where: str = "info file") -> list[dict[str, Any]]:
    """`count` consecutive keyframes of one scene in time order, from keyframe `start` of that scene.

    `scene` is a scene name (`scene-0003`) or token; without it, the first scene (earliest sample)."""
    scenes: dict[str, list[dict[str, Any]]] = {}
    for info in sorted(infos, key=lambda i: int(i["timestamp"])):
        scenes.setdefault(_scene_key(info), []).append(info)
    if scene is None:
        key = next(iter(scenes))
    else:
        matches = [k for k, v in scenes.items() if scene in (k, str(v[0].get("scene_name")))]
        if not matches:
            names = sorted(str(v[0].get("scene_name") or k) for k, v in scenes.items())
            shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
            raise ConfigError(f"scene {scene!r} is not in {where}", fix=f"use one of: {shown}")
        key = matches[0]
    frames = scenes[key]
    name = str(frames[0].get("scene_name") or key)
    if start < 0 or start + count > len(frames):
        raise ConfigError(f"scene {name} has {len(frames)} keyframes; {count} from keyframe {start} do not fit",
                          fix=f"use --samples <= {len(frames) - max(0, start)} or a smaller --start"
                          if 0 <= start < len(frames) else f"use --start below {len(frames)}")
    return frames[start:start + count]


def resolve_path(dataroot: Path, path: str | os.PathLike[str]) -> Path:
    """A path as an info file stores it (`./data/nuscenes/samples/...`, absolute, or relative) on this disk."""
    raw = Path(path)
    if raw.is_absolute() and raw.exists():
        return raw
    parts = [p for p in raw.parts if p not in (".", "/")]
    for anchor in ("samples", "sweeps", "gts"):  # FB-BEV's paths are relative to its repo: data/nuscenes/<anchor>/..
        if anchor in parts:
            return dataroot.joinpath(*parts[parts.index(anchor):])
    return dataroot.joinpath(*parts)


def image_transform(cfg: ModelConfig, src_h: int, src_w: int
                    ) -> tuple[float, tuple[int, int], tuple[int, int, int, int]]:
    """`PrepareImageInputs.sample_augmentation` at test time (resize_test 0, crop_h (0, 0)):
    (resize, (new_w, new_h), crop box (left, top, right, bottom))."""
    fh, fw = cfg.input_size
    resize = float(fw) / float(src_w)
    new_w, new_h = int(src_w * resize), int(src_h * resize)
    crop_h = int(new_h) - fh
    crop_w = int(max(0, new_w - fw) / 2)
    return resize, (new_w, new_h), (crop_w, crop_h, crop_w + fw, crop_h + fh)


def load_image(path: Path, cfg: ModelConfig) -> tuple[np.ndarray, float, tuple[int, int, int, int]]:
    """One camera image as the network sees it: [3, H, W] float32, plus the resize factor and crop box."""
    from PIL import Image

    if not path.is_file():
        raise ValidationError(f"camera image {path} is missing",
                              fix="download the nuScenes keyframe images (samples/) into the dataroot, "
                                  "or fix the info file's data_path")
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except OSError as exc:
        raise ValidationError(f"camera image {path} cannot be read ({exc})",
                              fix="re-download the file; it is not a readable JPEG/PNG") from exc
    resize, dims, crop = image_transform(cfg, rgb.height, rgb.width)
    rgb = rgb.resize(dims, Image.Resampling.BICUBIC).crop(crop)
    arr = np.asarray(rgb, dtype=np.float32)[..., ::-1]  # mmcv imnormalize(to_rgb=True) swaps channels 0 and 2
    mean = np.asarray(cfg.img_mean, dtype=np.float32)
    std = np.asarray(cfg.img_std, dtype=np.float32)
    return np.ascontiguousarray(((arr - mean) / std).transpose(2, 0, 1)), resize, crop


def _cam(info: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    cams = info.get("cams") or {}
    if name not in cams:
        raise ValidationError(f"{where}: sample {info.get('token')} has no camera {name} "
                              f"(has {', '.join(sorted(cams)) or 'none'})", fix=_FIX_INFO)
    cam = cams[name]
    missing = [k for k in ("data_path", "cam_intrinsic", "sensor2ego_rotation", "sensor2ego_translation",
                           "ego2global_rotation", "ego2global_translation") if k not in cam]
    if missing:
        raise ValidationError(f"{where}: camera {name} of sample {info.get('token')} lacks {', '.join(missing)}",
                              fix=_FIX_INFO)
    return dict(cam)


def camera_calibration(info: dict[str, Any], where: str = "info file") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rots [N,3,3], trans [N,3], intrins [N,3,3]): each camera in the CAM_FRONT ego frame of this sample,
    as `get_sensor2ego_transformation(curr, curr, cam, ego_cam='CAM_FRONT')` computes it."""
    key = _cam(info, EGO_CAMERA, where)
    global_to_key_ego = np.linalg.inv(pose_matrix(key["ego2global_rotation"], key["ego2global_translation"]))
    rots, trans, intrins = [], [], []
    for name in CAMERAS:
        cam = _cam(info, name, where)
        sensor_to_ego = pose_matrix(cam["sensor2ego_rotation"], cam["sensor2ego_translation"])
        ego_to_global = pose_matrix(cam["ego2global_rotation"], cam["ego2global_translation"])
        sensor_to_key_ego = global_to_key_ego @ ego_to_global @ sensor_to_ego
        rots.append(sensor_to_key_ego[:3, :3])
        trans.append(sensor_to_key_ego[:3, 3])
        intrins.append(np.asarray(cam["cam_intrinsic"], dtype=np.float64).reshape(3, 3))
    return np.stack(rots), np.stack(trans), np.stack(intrins)


def curr_to_prev_ego(curr: dict[str, Any], prev: dict[str, Any]) -> np.ndarray:
    """The current keyframe's ego frame in the previous keyframe's ego frame (4x4)."""
    curr_to_global = pose_matrix(curr["ego2global_rotation"], curr["ego2global_translation"])
    prev_to_global = pose_matrix(prev["ego2global_rotation"], prev["ego2global_translation"])
    return np.linalg.inv(prev_to_global) @ curr_to_global


def occ3d_path(dataroot: Path, info: dict[str, Any], occ_root: Path | None = None) -> Path:
    """Where the sample's Occ3D labels are: `<occ_root or DATAROOT/gts>/<scene_name>/<token>/labels.npz`,
    or the info's own `occ_path` when it points at an existing folder."""
    scene_name = str(info.get("scene_name") or info.get("scene_token"))
    if occ_root is None and info.get("occ_path"):
        own = resolve_path(dataroot, str(info["occ_path"]))
        own = own if own.name == "labels.npz" else own / "labels.npz"
        if own.is_file():
            return own
    return (occ_root or dataroot / "gts") / scene_name / str(info["token"]) / "labels.npz"


def load_occ3d(path: Path) -> dict[str, np.ndarray]:
    """Occ3D labels: semantics (uint8, 0..17, 255 unobserved) and mask_camera (bool), both [200, 200, 16]."""
    try:
        with np.load(path) as data:
            arrays = {k: np.asarray(data[k]) for k in ("semantics", "mask_camera") if k in data.files}
            keys = list(data.files)
    except (OSError, ValueError) as exc:
        raise ValidationError(f"Occ3D labels {path} cannot be read ({exc})",
                              fix="re-extract the Occ3D gts archive into DATAROOT/gts") from exc
    missing = [k for k in ("semantics", "mask_camera") if k not in arrays]
    if missing:
        raise ValidationError(f"Occ3D labels {path} lack {', '.join(missing)} (has {', '.join(keys)})",
                              fix="use the Occ3D-nuScenes labels.npz (keys semantics, mask_lidar, mask_camera)")
    for k, v in arrays.items():
        if v.shape != OCC_SHAPE:
            raise ValidationError(f"Occ3D labels {path}: {k} has shape {list(v.shape)}, expected {list(OCC_SHAPE)}",
                                  fix="use the Occ3D-nuScenes labels (200 x 200 x 16 voxels of 0.4 m)")
    return {"semantics": arrays["semantics"].astype(np.uint8), "mask_camera": arrays["mask_camera"].astype(bool)}


def nuscenes_sequence(cfg: ModelConfig, dataroot: Path, count: int, *, scene: str | None = None, start: int = 0,
                      info_file: Path | None = None, occ_root: Path | None = None,
                      sequence_id: int = 0) -> NuScenesSequence:
    """`count` consecutive keyframes of one scene as network frames (+ Occ3D labels where every frame has them)."""
    dataroot = Path(dataroot)
    path = find_info_file(dataroot, info_file)
    infos = select_samples(load_infos(path), count, scene=scene, start=start, where=str(path))
    first = infos[0]
    seq = NuScenesSequence(info_file=path, scene_name=str(first.get("scene_name") or _scene_key(first)),
                           scene_token=str(first.get("scene_token") or ""), start=start)
    H, W = cfg.input_size
    gt_paths = [occ3d_path(dataroot, info, occ_root) for info in infos]
    with_gt = all(p.is_file() for p in gt_paths)
    if occ_root is not None and not with_gt:
        absent = next(p for p in gt_paths if not p.is_file())
        raise ValidationError(f"Occ3D labels {absent} are missing",
                              fix="point --occ-root at the extracted Occ3D gts/ folder "
                                  "(gts/<scene_name>/<sample_token>/labels.npz)")
    prev: dict[str, Any] | None = None
    for t, info in enumerate(infos):
        rots, trans, intrins = camera_calibration(info, str(path))
        imgs, files = [], []
        post_rots = torch.eye(3).repeat(len(CAMERAS), 1, 1)
        post_trans = torch.zeros(len(CAMERAS), 3)
        for c, name in enumerate(CAMERAS):
            file = resolve_path(dataroot, str(info["cams"][name]["data_path"]))
            img, resize, crop = load_image(file, cfg)
            imgs.append(img)
            files.append(file)
            post_rots[c, 0, 0] = resize
            post_rots[c, 1, 1] = resize
            post_trans[c, 0] = -crop[0]
            post_trans[c, 1] = -crop[1]
        motion = np.eye(4) if prev is None else curr_to_prev_ego(info, prev)
        frame = CameraFrame(
            imgs=torch.from_numpy(np.stack(imgs)).float(), rots=torch.from_numpy(rots).float(),
            trans=torch.from_numpy(trans).float(), intrins=torch.from_numpy(intrins).float(),
            post_rots=post_rots, post_trans=post_trans, bda=torch.eye(3),
            curr_to_prev_ego_rt=torch.from_numpy(motion).float(), start_of_sequence=(t == 0),
            sequence_id=sequence_id)
        assert frame.imgs.shape == (len(CAMERAS), 3, H, W)
        gt = load_occ3d(gt_paths[t]) if with_gt else None
        seq.samples.append(NuScenesSample(token=str(info["token"]), scene_name=seq.scene_name,
                                          timestamp=int(info["timestamp"]), frame=frame, image_files=files,
                                          ground_truth=gt))
        prev = info
    return seq
