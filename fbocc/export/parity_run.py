"""One parity run: FB-BEV's `_trt` model (from a user's tree) and fbocc's FB-OCC on the same frames and weights,
each carrying its own history from frame to frame; every stage, output and prepared input compared.

Imports FB-BEV (through `fbocc.export.fbbev_model`): the parity tools and the tests that are given a checkout
load it, nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fbocc.export import fbbev_model
from fbocc.export.fbbev import FBBEVTree
from fbocc.export.parity import FrameParity, compare_preparation, flatten_stage, label_agreement, tensor_diff
from fbocc.model.config import ModelConfig
from fbocc.model.network import INPUT_NAMES, OUTPUT_NAMES, build_model
from fbocc.model.preprocess import SequencePreprocessor
from fbocc.model.stages import STAGES, record_stages
from fbocc.model.synthetic import synthetic_sequence

WEIGHT_SETS = ("upstream-init", "random")


@dataclass
class FrameRecord:
    """What one implementation did on one frame (numpy arrays)."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    stages: dict[str, np.ndarray]
    seconds: float


@dataclass
class CaseResult:
    """One weight set x one history-age convention over the frames."""

    weights: str
    history_age: str
    frames: list[FrameParity] = field(default_factory=list)
    upstream: list[FrameRecord] = field(default_factory=list)
    ours: list[FrameRecord] = field(default_factory=list)
    seconds: list[dict[str, float]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(f.passed for f in self.frames)


def stage_arrays(stages: dict[str, Any]) -> dict[str, np.ndarray]:
    """Recorded stages as flat name -> array (list stages become name.0, name.1, ...)."""
    out = {}
    for name in STAGES:
        if name in stages:
            out.update({name + s: a for s, a in flatten_stage(stages[name])})
    return out


def weights_for(tree: FBBEVTree, config: Any, cfg: ModelConfig, weights: str, seed: int
                ) -> tuple[Any, dict[str, torch.Tensor]]:
    """(upstream model, its state dict) for `weights`: upstream's own init_weights(), or fbocc's seeded
    re-randomisation of every weight (upstream's init zeroes MSDA offsets and attention weights)."""
    model = fbbev_model.build(tree, config, init_weights=weights == "upstream-init", seed=seed)
    if weights == "random":
        state = build_model(cfg, seed=seed).state_dict()
        model.load_state_dict(state, strict=True)
    elif weights != "upstream-init":
        raise ValueError(f"weights {weights!r}: one of {', '.join(WEIGHT_SETS)}")
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def run_case(tree: FBBEVTree, config: Any, cfg: ModelConfig, upstream: Any, state: dict[str, torch.Tensor],
             *, weights: str, history_age: str, frames: int, frame_seed: int = 0, keep_records: bool = True,
             progress: Callable[[str], None] = lambda _m: None) -> CaseResult:
    """Both implementations over `frames` synthetic frames; ours runs on upstream's prepared inputs, and our
    own preparation of the same frames is compared with upstream's. Without `keep_records` only the
    comparisons are kept (a full-size frame's tensors take ~2 GB)."""
    ours = build_model(cfg, history_age=history_age, index_dtype=torch.int64)
    missing, unexpected = ours.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
        raise RuntimeError(f"upstream state dict does not load into fbocc: missing {missing}, "
                           f"unexpected {unexpected}")
    ours.eval()
    seq = synthetic_sequence(cfg, frames, seed=frame_seed)
    up = fbbev_model.UpstreamSequence(upstream, config, history_age=history_age)
    pre = SequencePreprocessor(cfg, "int64")
    result = CaseResult(weights, history_age)
    our_history: dict[str, torch.Tensor] | None = None
    for i, frame in enumerate(seq):
        prepared = up.prepare(frame)
        inputs = dict(prepared, **up.history_inputs(frame))
        up_np = fbbev_model.numpy_inputs(inputs)  # before the forward: it fills the rebatch buffers in place
        t0 = time.monotonic()
        up_out, up_stages = up.run(inputs, INPUT_NAMES)
        t_up = time.monotonic() - t0
        progress(f"{weights}/{history_age} frame {i}: upstream {t_up:.0f} s")
        our_inputs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in up_np.items()}
        if our_history is not None and not frame.start_of_sequence:
            our_inputs.update(our_history)
        t0 = time.monotonic()
        with torch.no_grad(), record_stages(ours) as our_stages:
            our_out = [o.detach().clone() for o in ours(*[our_inputs[n] for n in INPUT_NAMES])]
        t_ours = time.monotonic() - t0
        progress(f"{weights}/{history_age} frame {i}: fbocc {t_ours:.0f} s")
        our_history = {"history_bev": our_out[1], "history_seq_ids": our_out[2].to(torch.int32),
                       "history_sweep_time": our_out[3].to(torch.int32)}
        rec_up = FrameRecord(up_np, {n: o.numpy() for n, o in zip(OUTPUT_NAMES, up_out, strict=True)},
                             stage_arrays(up_stages), t_up)
        rec_ours = FrameRecord({k: v.numpy() for k, v in our_inputs.items()},
                               {n: o.numpy() for n, o in zip(OUTPUT_NAMES, our_out, strict=True)},
                               stage_arrays(our_stages), t_ours)
        parity = FrameParity(i)
        for name, ref in rec_up.stages.items():
            if name not in rec_ours.stages:
                parity.problems.append(f"stage {name} not recorded on fbocc")
                continue
            parity.diffs.append(tensor_diff(f"stage {name}", rec_ours.stages[name], ref))
        for name in OUTPUT_NAMES:
            parity.diffs.append(tensor_diff(f"output {name}", rec_ours.outputs[name], rec_up.outputs[name]))
        parity.labels_agree = label_agreement(rec_ours.outputs["pred_occupancy"], rec_up.outputs["pred_occupancy"])
        our_prep = pre.inputs(frame)
        prep_diffs, prep_problems = compare_preparation(our_prep, {k: up_np[k] for k in our_prep})
        parity.diffs += [type(d)(f"input {d.name}", d.max_abs_diff, d.max_abs_ref, d.note) for d in prep_diffs]
        parity.problems += prep_problems
        result.frames.append(parity)
        if keep_records:
            result.upstream.append(rec_up)
            result.ours.append(rec_ours)
        else:
            result.seconds.append({"upstream": t_up, "fbocc": t_ours})
        del rec_up, rec_ours, our_inputs, inputs, up_np
    return result
