// Declarations only: BEVFormer_tensorrt's common/helper.h includes <cudnn.h> to declare one dtype converter
// (defined in a file the benchmark does not build). The kernel files the benchmark compiles call no cuDNN function;
// the library links with -z defs, so any call would fail the build.
#ifndef FBOCC_BASELINE_COMPAT_CUDNN_H
#define FBOCC_BASELINE_COMPAT_CUDNN_H

typedef enum { CUDNN_STATUS_SUCCESS = 0 } cudnnStatus_t;
typedef enum { CUDNN_DATA_FLOAT = 0, CUDNN_DATA_HALF = 2, CUDNN_DATA_INT8 = 3, CUDNN_DATA_INT32 = 4 } cudnnDataType_t;

#endif
