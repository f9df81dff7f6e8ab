// CPU backend of the pointnet2 ops: torch bindings over the per-query logic in pointnet2_query.h,
// parallel over queries with at::parallel_for (OpenMP in torch's CPU builds). Inputs are validated and made
// contiguous by pointnet2/ops.py; every op is deterministic.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <limits>
#include <optional>

#include "pointnet2_query.h"

namespace {

using pointnet2::sq_dist;

// xyz (B, N, 3) -> (B, M) long; starts at index 0, argmax ties go to the smaller index.
torch::Tensor furthest_point_sample(const torch::Tensor& xyz, int64_t M) {
  const int64_t B = xyz.size(0), N = xyz.size(1);
  auto out = torch::empty({B, M}, xyz.options().dtype(torch::kLong));
  AT_DISPATCH_FLOATING_TYPES(xyz.scalar_type(), "furthest_point_sample", [&] {
    const scalar_t* pts = xyz.data_ptr<scalar_t>();
    int64_t* sel = out.data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> dist(N);
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* p = pts + b * N * 3;
        std::fill(dist.begin(), dist.end(), std::numeric_limits<scalar_t>::infinity());
        int64_t last = 0;
        sel[b * M] = 0;
        for (int64_t j = 1; j < M; ++j) {
          const scalar_t cx = p[3 * last], cy = p[3 * last + 1], cz = p[3 * last + 2];
          scalar_t best_d = -1;
          int64_t best_i = N;
          for (int64_t n = 0; n < N; ++n) {
            const scalar_t d = std::min(dist[n], sq_dist(p + 3 * n, cx, cy, cz));
            dist[n] = d;
            if (pointnet2::fps_better(d, n, best_d, best_i)) {
              best_d = d;
              best_i = n;
            }
          }
          last = best_i;
          sel[b * M + j] = last;
        }
      }
    });
  });
  return out;
}

// Fused ball query + grouping. xyz (B, N, 3), new_xyz (B, M, 3), feats (B, C, N) or None.
// Returns out (B, 3 + C, M, S), idx (B, M, S) int32, counts (B, M) int32.
std::vector<torch::Tensor> ball_query_group(const torch::Tensor& xyz, const torch::Tensor& new_xyz,
                                            const std::optional<torch::Tensor>& feats, double radius,
                                            int64_t nsample) {
  const int64_t B = xyz.size(0), N = xyz.size(1), M = new_xyz.size(1);
  const int64_t C = feats ? feats->size(1) : 0, CH = 3 + C, S = nsample;
  auto out = torch::empty({B, CH, M, S}, xyz.options());
  auto idx = torch::empty({B, M, S}, xyz.options().dtype(torch::kInt));
  auto counts = torch::empty({B, M}, xyz.options().dtype(torch::kInt));
  AT_DISPATCH_FLOATING_TYPES(xyz.scalar_type(), "ball_query_group", [&] {
    const scalar_t* pts = xyz.data_ptr<scalar_t>();
    const scalar_t* ctr = new_xyz.data_ptr<scalar_t>();
    const scalar_t* f = feats ? feats->data_ptr<scalar_t>() : nullptr;
    const scalar_t r2 = static_cast<scalar_t>(radius * radius);
    scalar_t* o = out.data_ptr<scalar_t>();
    int32_t* id = idx.data_ptr<int32_t>();
    int32_t* cnt = counts.data_ptr<int32_t>();
    // pass 1, parallel over queries: neighbour indices
    at::parallel_for(0, B * M, 16, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q)
        cnt[q] = pointnet2::ball_query_one(pts + (q / M) * N * 3, N, ctr + q * 3, r2, static_cast<int32_t>(S),
                                           id + q * S);
    });
    // pass 2, parallel over output planes (b, ch): contiguous writes, reads within one cloud's row
    at::parallel_for(0, B * CH, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t b = p / CH, ch = p % CH;
        const int32_t* rows = id + b * M * S;
        scalar_t* dst = o + p * M * S;
        if (ch < 3) {
          const scalar_t* src = pts + b * N * 3 + ch;
          for (int64_t m = 0; m < M; ++m) {
            const scalar_t centre = ctr[(b * M + m) * 3 + ch];
            for (int64_t s = m * S; s < (m + 1) * S; ++s) dst[s] = rows[s] < 0 ? scalar_t(0) : src[3 * rows[s]] - centre;
          }
        } else {
          const scalar_t* src = f + (b * C + ch - 3) * N;
          for (int64_t e = 0; e < M * S; ++e) dst[e] = rows[e] < 0 ? scalar_t(0) : src[rows[e]];
        }
      }
    });
  });
  return {out, idx, counts};
}

// grad_out (B, CH, M, S), idx (B, M, S) -> grad_in (B, CH, N): scatter-add, parallel over (b, ch) rows.
torch::Tensor group_backward(const torch::Tensor& grad_out, const torch::Tensor& idx, int64_t N) {
  const int64_t B = grad_out.size(0), CH = grad_out.size(1), M = grad_out.size(2), S = grad_out.size(3);
  auto grad_in = torch::zeros({B, CH, N}, grad_out.options());
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "group_backward", [&] {
    const scalar_t* g = grad_out.data_ptr<scalar_t>();
    const int32_t* id = idx.data_ptr<int32_t>();
    scalar_t* gi = grad_in.data_ptr<scalar_t>();
    at::parallel_for(0, B * CH, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int32_t* row = id + (r / CH) * M * S;
        const scalar_t* src = g + r * M * S;
        scalar_t* dst = gi + r * N;
        for (int64_t e = 0; e < M * S; ++e)
          if (row[e] >= 0) dst[row[e]] += src[e];
      }
    });
  });
  return grad_in;
}

// xyz (B, N, 3), query (B, M, 3) -> dist2 (B, M, K), idx (B, M, K) long, nearest first.
std::vector<torch::Tensor> knn(const torch::Tensor& xyz, const torch::Tensor& query, int64_t K) {
  const int64_t B = xyz.size(0), N = xyz.size(1), M = query.size(1);
  auto dist2 = torch::empty({B, M, K}, xyz.options());
  auto idx = torch::empty({B, M, K}, xyz.options().dtype(torch::kLong));
  AT_DISPATCH_FLOATING_TYPES(xyz.scalar_type(), "knn", [&] {
    const scalar_t* pts = xyz.data_ptr<scalar_t>();
    const scalar_t* qs = query.data_ptr<scalar_t>();
    scalar_t* d = dist2.data_ptr<scalar_t>();
    int64_t* id = idx.data_ptr<int64_t>();
    at::parallel_for(0, B * M, 16, [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q)
        pointnet2::knn_one(pts + (q / M) * N * 3, N, qs + q * 3, static_cast<int32_t>(K), d + q * K, id + q * K);
    });
  });
  return {dist2, idx};
}

// feats (B, C, N), idx and weight (B, M, K) -> (B, C, M).
torch::Tensor interpolate(const torch::Tensor& feats, const torch::Tensor& idx, const torch::Tensor& weight) {
  const int64_t B = feats.size(0), C = feats.size(1), N = feats.size(2), M = idx.size(1), K = idx.size(2);
  auto out = torch::empty({B, C, M}, feats.options());
  AT_DISPATCH_FLOATING_TYPES(feats.scalar_type(), "interpolate", [&] {
    const scalar_t* f = feats.data_ptr<scalar_t>();
    const int64_t* id = idx.data_ptr<int64_t>();
    const scalar_t* w = weight.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, B * C, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t q0 = (r / C) * M;
        for (int64_t m = 0; m < M; ++m)
          o[r * M + m] = pointnet2::interpolate_one(f + r * N, id + (q0 + m) * K, w + (q0 + m) * K,
                                                    static_cast<int32_t>(K));
      }
    });
  });
  return out;
}

// grad_out (B, C, M) -> grad_feats (B, C, N), parallel over (b, c) rows.
torch::Tensor interpolate_backward(const torch::Tensor& grad_out, const torch::Tensor& idx,
                                   const torch::Tensor& weight, int64_t N) {
  const int64_t B = grad_out.size(0), C = grad_out.size(1), M = grad_out.size(2), K = idx.size(2);
  auto grad_feats = torch::zeros({B, C, N}, grad_out.options());
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "interpolate_backward", [&] {
    const scalar_t* g = grad_out.data_ptr<scalar_t>();
    const int64_t* id = idx.data_ptr<int64_t>();
    const scalar_t* w = weight.data_ptr<scalar_t>();
    scalar_t* gf = grad_feats.data_ptr<scalar_t>();
    at::parallel_for(0, B * C, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t q0 = (r / C) * M;
        for (int64_t m = 0; m < M; ++m)
          for (int64_t k = 0; k < K; ++k) gf[r * N + id[(q0 + m) * K + k]] += g[r * M + m] * w[(q0 + m) * K + k];
      }
    });
  });
  return grad_feats;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("furthest_point_sample", &furthest_point_sample);
  m.def("ball_query_group", &ball_query_group);
  m.def("group_backward", &group_backward);
  m.def("knn", &knn);
  m.def("interpolate", &interpolate);
  m.def("interpolate_backward", &interpolate_backward);
}
