# Build image for profiles whose base image already holds CUDA, a compiler and the TensorRT headers
# (x86_64 dGPU workstation, JetPack cross image): nothing is added; fbocc mounts its recipe (cross/) at run time.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
