// Per-query logic shared by the CPU (pointnet2_cpu.cpp) and CUDA (pointnet2_kernels.cu) backends.
//
// Every function handles ONE query (one centre / one output point) on raw row-major pointers, so both
// backends produce bit-identical results. Arithmetic goes through mul_rn/add_rn, which forbid fused
// multiply-add on the device (the host build uses -ffp-contract=off), so the results also equal the
// pure-PyTorch reference, which evaluates (dx*dx + dy*dy) + dz*dz in that order.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define P2_HD __host__ __device__ __forceinline__
#else
#define P2_HD inline
#endif

namespace pointnet2 {

template <typename T> P2_HD T mul_rn(T a, T b) { return a * b; }
template <typename T> P2_HD T add_rn(T a, T b) { return a + b; }
#ifdef __CUDA_ARCH__
template <> __device__ __forceinline__ float mul_rn<float>(float a, float b) { return __fmul_rn(a, b); }
template <> __device__ __forceinline__ float add_rn<float>(float a, float b) { return __fadd_rn(a, b); }
template <> __device__ __forceinline__ double mul_rn<double>(double a, double b) { return __dmul_rn(a, b); }
template <> __device__ __forceinline__ double add_rn<double>(double a, double b) { return __dadd_rn(a, b); }
#endif

// Squared distance between point p (3 values) and (cx, cy, cz).
template <typename T> P2_HD T sq_dist(const T* p, T cx, T cy, T cz) {
  const T dx = p[0] - cx, dy = p[1] - cy, dz = p[2] - cz;
  return add_rn(add_rn(mul_rn(dx, dx), mul_rn(dy, dy)), mul_rn(dz, dz));
}

// FPS argmax order: larger distance wins, ties go to the smaller index (torch.argmax semantics).
template <typename T> P2_HD bool fps_better(T d, int64_t i, T best_d, int64_t best_i) {
  return d > best_d || (d == best_d && i < best_i);
}

// Ball query for one centre, first-found in index order.
// Writes nsample indices into idx: the first `count` points with squared distance < r2 (index order),
// the remaining slots repeat idx[0]; an empty ball (count 0) is filled with -1. Returns count.
template <typename T>
P2_HD int32_t ball_query_one(const T* xyz, int64_t n, const T* centre, T r2, int32_t nsample, int32_t* idx) {
  const T cx = centre[0], cy = centre[1], cz = centre[2];
  int32_t count = 0;
  for (int64_t j = 0; j < n && count < nsample; ++j) {
    if (sq_dist(xyz + 3 * j, cx, cy, cz) < r2) idx[count++] = static_cast<int32_t>(j);
  }
  const int32_t pad = count > 0 ? idx[0] : -1;
  for (int32_t s = count; s < nsample; ++s) idx[s] = pad;
  return count;
}

// k nearest neighbours of one query, nearest first, ties broken by the smaller index.
// dist2/idx are the k output slots, kept sorted by insertion (k is small).
template <typename T>
P2_HD void knn_one(const T* xyz, int64_t n, const T* query, int32_t k, T* dist2, int64_t* idx) {
  const T qx = query[0], qy = query[1], qz = query[2];
  int32_t filled = 0;
  for (int64_t j = 0; j < n; ++j) {
    const T d = sq_dist(xyz + 3 * j, qx, qy, qz);
    if (filled == k && !(d < dist2[k - 1])) continue;
    int32_t s = filled < k ? filled++ : k - 1;
    while (s > 0 && d < dist2[s - 1]) {  // strict: an equal earlier index stays in front
      dist2[s] = dist2[s - 1];
      idx[s] = idx[s - 1];
      --s;
    }
    dist2[s] = d;
    idx[s] = j;
  }
}

// Weighted sum of k gathered features of one output point, summed in slot order.
template <typename T>
P2_HD T interpolate_one(const T* feats_row, const int64_t* idx, const T* weight, int32_t k) {
  T acc = mul_rn(feats_row[idx[0]], weight[0]);
  for (int32_t j = 1; j < k; ++j) acc = add_rn(acc, mul_rn(feats_row[idx[j]], weight[j]));
  return acc;
}

}  // namespace pointnet2
