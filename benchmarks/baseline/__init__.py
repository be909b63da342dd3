"""Today's kernels (BEVFormer_tensorrt, given at run time) beside ours in `make bench-kernels`."""
