// Declarations only: BEVFormer_tensorrt's common/cuda_helper.h includes <cublas_v2.h> to declare GEMM wrappers
// (defined in its common/cuda_helper.cu, which the benchmark does not build). The three kernel files the benchmark
// compiles call no cuBLAS function; the library links with -z defs, so any call would fail the build.
#ifndef FBOCC_BASELINE_COMPAT_CUBLAS_V2_H
#define FBOCC_BASELINE_COMPAT_CUBLAS_V2_H

typedef struct cublasContext *cublasHandle_t;
typedef enum { CUBLAS_STATUS_SUCCESS = 0 } cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1, CUBLAS_GEMM_DEFAULT_TENSOR_OP = 99 } cublasGemmAlgo_t;
#define CUBLAS_GEMM_DFALT_TENSOR_OP CUBLAS_GEMM_DEFAULT_TENSOR_OP

#endif
