"""FB-OCC (fbocc-r50-cbgs_depth_16f_16x4_20e) in plain PyTorch, with FB-BEV's module and parameter names.

`FBOCC` is the network as FB-BEV's TensorRT deployment runs it (`forward_trt`): everything that depends
only on calibration and ego motion (BEV-pool ranks, backward-projection reference points, the temporal
alignment grid) is computed on the host by `fbocc.model.preprocess` and enters the graph as inputs.
"""

from fbocc.model.checkpoint import CheckpointMismatch, load_checkpoint
from fbocc.model.config import PRESETS, ModelConfig
from fbocc.model.network import FBOCC, INPUT_NAMES, OUTPUT_NAMES, build_model

__all__ = [
    "FBOCC", "INPUT_NAMES", "OUTPUT_NAMES", "PRESETS", "CheckpointMismatch", "ModelConfig", "build_model",
    "load_checkpoint",
]
