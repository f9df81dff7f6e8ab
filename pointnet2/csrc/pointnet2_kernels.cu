// CUDA kernels of the pointnet2 ops; per-query logic lives in pointnet2_query.h (shared with the CPU build).
#include <cfloat>

#include "pointnet2_cuda.h"
#include "pointnet2_query.h"

namespace pointnet2 {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kFpsThreads = 512;

inline unsigned int blocks_for(int64_t n) { return static_cast<unsigned int>((n + kThreads - 1) / kThreads); }

template <typename T> __device__ T infinity();
template <> __device__ float infinity<float>() { return FLT_MAX; }
template <> __device__ double infinity<double>() { return DBL_MAX; }

// One block per cloud; each step updates the running min-distance and reduces its argmax in shared memory.
template <typename T>
__global__ void fps_kernel(const T* __restrict__ xyz, T* __restrict__ dist, int64_t* __restrict__ out, int64_t N,
                           int64_t M) {
  __shared__ T best_d[kFpsThreads];
  __shared__ int64_t best_i[kFpsThreads];
  const int64_t b = blockIdx.x;
  const int tid = threadIdx.x;
  xyz += b * N * 3;
  dist += b * N;
  out += b * M;
  for (int64_t n = tid; n < N; n += blockDim.x) dist[n] = infinity<T>();
  int64_t last = 0;
  if (tid == 0) out[0] = 0;
  for (int64_t j = 1; j < M; ++j) {
    const T cx = xyz[3 * last], cy = xyz[3 * last + 1], cz = xyz[3 * last + 2];
    T d_best = T(-1);
    int64_t i_best = N;
    for (int64_t n = tid; n < N; n += blockDim.x) {
      const T d = min(dist[n], sq_dist(xyz + 3 * n, cx, cy, cz));
      dist[n] = d;
      if (fps_better(d, n, d_best, i_best)) {
        d_best = d;
        i_best = n;
      }
    }
    best_d[tid] = d_best;
    best_i[tid] = i_best;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
      if (tid < s && fps_better(best_d[tid + s], best_i[tid + s], best_d[tid], best_i[tid])) {
        best_d[tid] = best_d[tid + s];
        best_i[tid] = best_i[tid + s];
      }
      __syncthreads();
    }
    last = best_i[0];
    if (tid == 0) out[j] = last;
    __syncthreads();
  }
}

template <typename T>
__global__ void ball_query_kernel(const T* __restrict__ xyz, const T* __restrict__ new_xyz, int32_t* __restrict__ idx,
                                  int32_t* __restrict__ counts, int64_t B, int64_t N, int64_t M, T r2, int32_t S) {
  const int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (q >= B * M) return;
  const int64_t b = q / M;
  counts[q] = ball_query_one(xyz + b * N * 3, N, new_xyz + q * 3, r2, S, idx + q * S);
}

// One thread per output element (b, ch, m, s): channels 0-2 are neighbour minus centre, then the features.
template <typename T>
__global__ void group_kernel(const T* __restrict__ xyz, const T* __restrict__ new_xyz, const T* __restrict__ feats,
                             const int32_t* __restrict__ idx, T* __restrict__ out, int64_t B, int64_t N, int64_t M,
                             int64_t C, int32_t S) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t CH = 3 + C;
  if (e >= B * CH * M * S) return;
  const int64_t s = e % S, m = (e / S) % M, ch = (e / (S * M)) % CH, b = e / (S * M * CH);
  const int32_t j = idx[(b * M + m) * S + s];
  T v = T(0);
  if (j >= 0) v = ch < 3 ? xyz[(b * N + j) * 3 + ch] - new_xyz[(b * M + m) * 3 + ch] : feats[(b * C + ch - 3) * N + j];
  out[e] = v;
}

template <typename T>
__global__ void group_backward_kernel(const T* __restrict__ grad_out, const int32_t* __restrict__ idx,
                                      T* __restrict__ grad_in, int64_t B, int64_t CH, int64_t N, int64_t M, int32_t S) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= B * CH * M * S) return;
  const int64_t s = e % S, m = (e / S) % M, bc = e / (S * M), b = bc / CH;
  const int32_t j = idx[(b * M + m) * S + s];
  if (j >= 0) atomicAdd(grad_in + bc * N + j, grad_out[e]);
}

template <typename T>
__global__ void knn_kernel(const T* __restrict__ xyz, const T* __restrict__ query, T* __restrict__ dist2,
                           int64_t* __restrict__ idx, int64_t B, int64_t N, int64_t M, int32_t K) {
  const int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (q >= B * M) return;
  knn_one(xyz + (q / M) * N * 3, N, query + q * 3, K, dist2 + q * K, idx + q * K);
}

template <typename T>
__global__ void interpolate_kernel(const T* __restrict__ feats, const int64_t* __restrict__ idx,
                                   const T* __restrict__ weight, T* __restrict__ out, int64_t B, int64_t C, int64_t N,
                                   int64_t M, int32_t K) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= B * C * M) return;
  const int64_t m = e % M, bc = e / M, q = (bc / C) * M + m;
  out[e] = interpolate_one(feats + bc * N, idx + q * K, weight + q * K, K);
}

template <typename T>
__global__ void interpolate_backward_kernel(const T* __restrict__ grad_out, const int64_t* __restrict__ idx,
                                            const T* __restrict__ weight, T* __restrict__ grad_feats, int64_t B,
                                            int64_t C, int64_t N, int64_t M, int32_t K) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= B * C * M) return;
  const int64_t m = e % M, bc = e / M, q = (bc / C) * M + m;
  for (int32_t k = 0; k < K; ++k) atomicAdd(grad_feats + bc * N + idx[q * K + k], grad_out[e] * weight[q * K + k]);
}

}  // namespace

template <typename T>
cudaError_t furthest_point_sample(const T* xyz, T* dist, int64_t* out, int64_t B, int64_t N, int64_t M,
                                  cudaStream_t stream) {
  if (B * M == 0) return cudaSuccess;
  fps_kernel<T><<<static_cast<unsigned int>(B), kFpsThreads, 0, stream>>>(xyz, dist, out, N, M);
  return cudaGetLastError();
}

template <typename T>
cudaError_t ball_query_group(const T* xyz, const T* new_xyz, const T* feats, T* out, int32_t* idx, int32_t* counts,
                             int64_t B, int64_t N, int64_t M, int64_t C, T r2, int32_t S, cudaStream_t stream) {
  if (B * M == 0) return cudaSuccess;
  ball_query_kernel<T><<<blocks_for(B * M), kThreads, 0, stream>>>(xyz, new_xyz, idx, counts, B, N, M, r2, S);
  const int64_t total = B * (3 + C) * M * S;
  group_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(xyz, new_xyz, feats, idx, out, B, N, M, C, S);
  return cudaGetLastError();
}

template <typename T>
cudaError_t group_backward(const T* grad_out, const int32_t* idx, T* grad_in, int64_t B, int64_t CH, int64_t N,
                           int64_t M, int32_t S, cudaStream_t stream) {
  const int64_t total = B * CH * M * S;
  if (total == 0) return cudaSuccess;
  group_backward_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(grad_out, idx, grad_in, B, CH, N, M, S);
  return cudaGetLastError();
}

template <typename T>
cudaError_t knn(const T* xyz, const T* query, T* dist2, int64_t* idx, int64_t B, int64_t N, int64_t M, int32_t K,
                cudaStream_t stream) {
  if (B * M == 0) return cudaSuccess;
  knn_kernel<T><<<blocks_for(B * M), kThreads, 0, stream>>>(xyz, query, dist2, idx, B, N, M, K);
  return cudaGetLastError();
}

template <typename T>
cudaError_t interpolate(const T* feats, const int64_t* idx, const T* weight, T* out, int64_t B, int64_t C, int64_t N,
                        int64_t M, int32_t K, cudaStream_t stream) {
  if (B * C * M == 0) return cudaSuccess;
  interpolate_kernel<T><<<blocks_for(B * C * M), kThreads, 0, stream>>>(feats, idx, weight, out, B, C, N, M, K);
  return cudaGetLastError();
}

template <typename T>
cudaError_t interpolate_backward(const T* grad_out, const int64_t* idx, const T* weight, T* grad_feats, int64_t B,
                                 int64_t C, int64_t N, int64_t M, int32_t K, cudaStream_t stream) {
  if (B * C * M == 0) return cudaSuccess;
  interpolate_backward_kernel<T>
      <<<blocks_for(B * C * M), kThreads, 0, stream>>>(grad_out, idx, weight, grad_feats, B, C, N, M, K);
  return cudaGetLastError();
}

#define POINTNET2_INSTANTIATE(T)                                                                                   \
  template cudaError_t furthest_point_sample<T>(const T*, T*, int64_t*, int64_t, int64_t, int64_t, cudaStream_t); \
  template cudaError_t ball_query_group<T>(const T*, const T*, const T*, T*, int32_t*, int32_t*, int64_t, int64_t, \
                                           int64_t, int64_t, T, int32_t, cudaStream_t);                           \
  template cudaError_t group_backward<T>(const T*, const int32_t*, T*, int64_t, int64_t, int64_t, int64_t, int32_t, \
                                         cudaStream_t);                                                           \
  template cudaError_t knn<T>(const T*, const T*, T*, int64_t*, int64_t, int64_t, int64_t, int32_t, cudaStream_t); \
  template cudaError_t interpolate<T>(const T*, const int64_t*, const T*, T*, int64_t, int64_t, int64_t, int64_t,  \
                                      int32_t, cudaStream_t);                                                     \
  template cudaError_t interpolate_backward<T>(const T*, const int64_t*, const T*, T*, int64_t, int64_t, int64_t, \
                                               int64_t, int32_t, cudaStream_t);

POINTNET2_INSTANTIATE(float)
POINTNET2_INSTANTIATE(double)

}  // namespace cuda
}  // namespace pointnet2
