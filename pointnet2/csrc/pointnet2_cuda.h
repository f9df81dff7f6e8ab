// Launcher API of the CUDA kernels (pointnet2_kernels.cu). Plain CUDA, no torch headers, so the kernels
// compile with `nvcc -c` alone. All pointers are contiguous device buffers; T is float or double.
// Shapes use B batch, N points, M centres/queries, C feature channels, S = nsample, K neighbours.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace pointnet2 {
namespace cuda {

// xyz (B, N, 3), dist (B, N) scratch, out (B, M).
template <typename T>
cudaError_t furthest_point_sample(const T* xyz, T* dist, int64_t* out, int64_t B, int64_t N, int64_t M,
                                  cudaStream_t stream);

// xyz (B, N, 3), new_xyz (B, M, 3), feats (B, C, N) or nullptr when C == 0.
// out (B, 3 + C, M, S), idx (B, M, S), counts (B, M).
template <typename T>
cudaError_t ball_query_group(const T* xyz, const T* new_xyz, const T* feats, T* out, int32_t* idx,
                             int32_t* counts, int64_t B, int64_t N, int64_t M, int64_t C, T r2, int32_t S,
                             cudaStream_t stream);

// grad_out (B, CH, M, S), idx (B, M, S); adds into grad_in (B, CH, N), which must be zeroed.
template <typename T>
cudaError_t group_backward(const T* grad_out, const int32_t* idx, T* grad_in, int64_t B, int64_t CH, int64_t N,
                           int64_t M, int32_t S, cudaStream_t stream);

// xyz (B, N, 3), query (B, M, 3); dist2 and idx (B, M, K), nearest first.
template <typename T>
cudaError_t knn(const T* xyz, const T* query, T* dist2, int64_t* idx, int64_t B, int64_t N, int64_t M, int32_t K,
                cudaStream_t stream);

// feats (B, C, N), idx and weight (B, M, K); out (B, C, M).
template <typename T>
cudaError_t interpolate(const T* feats, const int64_t* idx, const T* weight, T* out, int64_t B, int64_t C,
                        int64_t N, int64_t M, int32_t K, cudaStream_t stream);

// grad_out (B, C, M); adds into grad_feats (B, C, N), which must be zeroed.
template <typename T>
cudaError_t interpolate_backward(const T* grad_out, const int64_t* idx, const T* weight, T* grad_feats,
                                 int64_t B, int64_t C, int64_t N, int64_t M, int32_t K, cudaStream_t stream);

}  // namespace cuda
}  // namespace pointnet2
