# The public `sim` build image: a stand-in for the DRIVE OS SDK build image that anyone can build
# offline. Debian (debootstrap, see docker/sim/base.txt) + aarch64 g++ + CUDA from PyPI wheels, laid out
# at the DRIVE OS image's paths so cross/build-in-container.sh serves both. No TensorRT.
# fbocc builds it with networking off; the wheels are downloaded on the host into the build context.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG CUDA_VERSION=13.0
COPY wheels /tmp/fbocc-wheels
COPY cuda-layout.sh /tmp/fbocc-cuda-layout.sh
RUN sh /tmp/fbocc-cuda-layout.sh /tmp/fbocc-wheels /usr/local/cuda-${CUDA_VERSION} \
 && rm -rf /tmp/fbocc-wheels /tmp/fbocc-cuda-layout.sh
ENV PATH=/usr/local/cuda-${CUDA_VERSION}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
