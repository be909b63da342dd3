// MultiScaleDeformableAttn kernel: the mmcv ms_deform_attn forward, output [N, Lq, M*D].
#pragma once

#include "../common/kernelCommon.h"

namespace fbocc
{

struct MultiScaleDeformableAttnShape
{
    int64_t batch;    //!< N
    int64_t spatial;  //!< S, rows of value (sum of H_l * W_l)
    int64_t heads;    //!< M
    int64_t channels; //!< D, channels per head
    int64_t levels;   //!< L
    int64_t queries;  //!< Lq
    int64_t points;   //!< P
};

//! value [N,S,M,D] (valueType), spatial_shapes [L,2] and level_start_index [L] (indexType, device memory),
//! sampling_locations [N,Lq,M,L,P,2] and attention_weights [N,Lq,M,L,P] (both coordType: fp32, or equal to
//! valueType), output [N,Lq,M*D] (valueType). Sampling positions and weights are computed in fp32.
FBOCC_API cudaError_t multiScaleDeformableAttnForward(void const* value, DType valueType, void const* spatialShapes,
    void const* levelStartIndex, IndexType indexType, void const* samplingLocations, void const* attentionWeights,
    DType coordType, void* output, MultiScaleDeformableAttnShape const& shape, cudaStream_t stream);

} // namespace fbocc
