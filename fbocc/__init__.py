"""fbocc: FB-OCC from a PyTorch checkpoint to a benchmarked TensorRT engine on DRIVE AGX Orin."""

__version__ = "0.1.0"
