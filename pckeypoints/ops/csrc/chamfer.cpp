// Chamfer distances on the CPU (pckeypoints/chamfer.py): the nearest-neighbour search and the composite
// distance's greedy coverage, without any (B, N, P)-sized tensor.
//
// nearest: x (B, N, 3) and y (B, G*M, 3), y read as G consecutive groups of M points. For every x_n the nearest
// point of each group (x_to_y, (B, N, G) indices into y) and for every y_j its nearest x (y_to_x, (B, G*M)
// indices into x), by squared Euclidean distance, both in one pass over the point pairs; ties keep the lower
// index. Nothing of size N*G*M is stored, which is what torch.cdist + argmin cost: the dense matrix and two
// unvectorised index reductions over it.
//
// coverage_forward / coverage_backward: the input -> reconstruction term of the composite Chamfer distance
// per input point, cost_n = sum_p w_p d_p + penalty * max(0, 1 - sum_p a_p), with d_p = sqrt(|x_n - y_{idx_np}|^2
// + eps) and the greedy weights w_p = min(a_p, max(0, 1 - sum of the activations of the parts nearer than p)).
// The backward pass recomputes the distances and the order instead of saving them.
//
// Parallel over clouds: each cloud is one task, so the results do not depend on the thread count.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

namespace {

template <typename T>
__attribute__((always_inline)) inline void nearest_one_cloud(const T* x, int64_t n, const T* y, int64_t groups,
                                                             int64_t size, int64_t* x_to_y, int64_t* y_to_x) {
  const int64_t m = groups * size;
  std::vector<T> best_y(m, std::numeric_limits<T>::infinity()), d(size);
  std::vector<T> yx(m), yy(m), yz(m);  // y as columns, so that the loops over a group vectorise
  for (int64_t j = 0; j < m; ++j) {
    yx[j] = y[3 * j];
    yy[j] = y[3 * j + 1];
    yz[j] = y[3 * j + 2];
  }
  std::fill(y_to_x, y_to_x + m, 0);
  for (int64_t i = 0; i < n; ++i) {
    const T px = x[3 * i], py = x[3 * i + 1], pz = x[3 * i + 2];
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t start = g * size;
      for (int64_t j = 0; j < size; ++j) {
        const T dx = px - yx[start + j], dy = py - yy[start + j], dz = pz - yz[start + j];
        d[j] = dx * dx + dy * dy + dz * dz;
      }
      T* best = best_y.data() + start;
      int64_t* arg_y = y_to_x + start;
      for (int64_t j = 0; j < size; ++j) {
        const bool closer = d[j] < best[j];
        best[j] = closer ? d[j] : best[j];
        arg_y[j] = closer ? i : arg_y[j];
      }
      int64_t arg = 0;
      for (int64_t j = 1; j < size; ++j) arg = d[j] < d[arg] ? j : arg;
      x_to_y[i * groups + g] = start + arg;
    }
  }
}

// The float search compiled for AVX-512, AVX2 and baseline x86-64, picked at load time.
#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void search_cloud(const float* x, int64_t n, const float* y, int64_t groups, int64_t size, int64_t* x_to_y,
                  int64_t* y_to_x) {
  nearest_one_cloud(x, n, y, groups, size, x_to_y, y_to_x);
}

void search_cloud(const double* x, int64_t n, const double* y, int64_t groups, int64_t size, int64_t* x_to_y,
                  int64_t* y_to_x) {
  nearest_one_cloud(x, n, y, groups, size, x_to_y, y_to_x);
}

std::vector<torch::Tensor> nearest(const torch::Tensor& x, const torch::Tensor& y, int64_t groups) {
  TORCH_CHECK(x.dim() == 3 && x.size(2) == 3 && y.dim() == 3 && y.size(2) == 3 && x.size(0) == y.size(0),
              "x and y must be (B, N, 3) and (B, M, 3)");
  TORCH_CHECK(x.scalar_type() == y.scalar_type() && x.is_contiguous() && y.is_contiguous(),
              "x and y must be contiguous, of one dtype");
  TORCH_CHECK(groups > 0 && y.size(1) % groups == 0, "y's points must split into equal groups");
  const int64_t B = x.size(0), N = x.size(1), M = y.size(1), size = M / groups;
  auto x_to_y = torch::empty({B, N, groups}, x.options().dtype(torch::kLong));
  auto y_to_x = torch::empty({B, M}, x.options().dtype(torch::kLong));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "chamfer_nearest", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    int64_t* xy = x_to_y.data_ptr<int64_t>();
    int64_t* yx = y_to_x.data_ptr<int64_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t *xb = xp + b * N * 3, *yb = yp + b * M * 3;
        search_cloud(xb, N, yb, groups, size, xy + b * N * groups, yx + b * M);
      }
    });
  });
  return {x_to_y, y_to_x};
}

// Distances d (P) from x to the parts' points y[idx[p]].
template <typename T>
void part_distances(const T* x, const T* y, const int64_t* idx, int64_t P, T eps, T* d) {
  for (int64_t p = 0; p < P; ++p) {
    const T* q = y + 3 * idx[p];
    const T dx = x[0] - q[0], dy = x[1] - q[1], dz = x[2] - q[2];
    d[p] = std::sqrt(dx * dx + dy * dy + dz * dz + eps);
  }
}

// The parts in the greedy order, nearest first (ties by index), as far as the coverage needs them: order[0, used)
// are the parts nearer than the point where the activations a reach 1 (all P if they never do); returns used.
// The first picks are selected one at a time (a point is usually covered by a few parts), the rest sorted.
template <typename T>
int64_t greedy_order(const T* d, const T* a, int64_t P, int64_t* order) {
  constexpr int64_t kSelect = 4;
  const auto nearer = [d](int64_t i, int64_t j) { return d[i] < d[j] || (d[i] == d[j] && i < j); };
  std::iota(order, order + P, 0);
  int64_t used = 0;
  T before = 0;
  for (; used < P && before < 1; ++used) {
    if (used == kSelect) {
      std::sort(order + used, order + P, nearer);
      for (; used < P && before < 1; ++used) before += a[order[used]];
      break;
    }
    std::iter_swap(order + used, std::min_element(order + used, order + P, nearer));
    before += a[order[used]];
  }
  return used;
}

// x (B, N, 3), y (B, M, 3), act (B, P), idx (B, N, P) into y -> cost (B, N).
torch::Tensor coverage_forward(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& act,
                               const torch::Tensor& idx, double penalty, double eps) {
  const int64_t B = x.size(0), N = x.size(1), M = y.size(1), P = act.size(1);
  auto cost = torch::empty({B, N}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "coverage_forward", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *yp = y.data_ptr<scalar_t>(), *ap = act.data_ptr<scalar_t>();
    const int64_t* ip = idx.data_ptr<int64_t>();
    scalar_t* out = cost.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> d(P);
      std::vector<int64_t> order(P);
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* a = ap + b * P;
        const scalar_t missing = std::max<scalar_t>(0, 1 - std::accumulate(a, a + P, scalar_t(0)));
        for (int64_t n = 0; n < N; ++n) {
          part_distances<scalar_t>(xp + (b * N + n) * 3, yp + b * M * 3, ip + (b * N + n) * P, P, eps, d.data());
          const int64_t used = greedy_order(d.data(), a, P, order.data());
          scalar_t total = 0, before = 0;
          for (int64_t k = 0; k < used; ++k) {
            const int64_t p = order[k];
            total += std::min(a[p], 1 - before) * d[p];
            before += a[p];
          }
          out[b * N + n] = total + static_cast<scalar_t>(penalty) * missing;
        }
      }
    });
  });
  return cost;
}

// grad_cost (B, N) -> grad_x (B, N, 3), grad_y (B, M, 3), grad_act (B, P).
std::vector<torch::Tensor> coverage_backward(const torch::Tensor& grad_cost, const torch::Tensor& x,
                                             const torch::Tensor& y, const torch::Tensor& act,
                                             const torch::Tensor& idx, double penalty, double eps) {
  const int64_t B = x.size(0), N = x.size(1), M = y.size(1), P = act.size(1);
  auto grad_x = torch::zeros_like(x), grad_y = torch::zeros_like(y), grad_act = torch::zeros_like(act);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "coverage_backward", [&] {
    const scalar_t *xp = x.data_ptr<scalar_t>(), *yp = y.data_ptr<scalar_t>(), *ap = act.data_ptr<scalar_t>();
    const scalar_t* gp = grad_cost.data_ptr<scalar_t>();
    const int64_t* ip = idx.data_ptr<int64_t>();
    scalar_t *gx = grad_x.data_ptr<scalar_t>(), *gy = grad_y.data_ptr<scalar_t>(), *ga = grad_act.data_ptr<scalar_t>();
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> d(P), clamped(P);
      std::vector<int64_t> order(P);
      for (int64_t b = b0; b < b1; ++b) {
        const scalar_t* a = ap + b * P;
        const bool uncovered = std::accumulate(a, a + P, scalar_t(0)) < 1;
        scalar_t uncovered_grad = 0;
        for (int64_t n = 0; n < N; ++n) {
          const scalar_t g = gp[b * N + n];
          const scalar_t* xn = xp + (b * N + n) * 3;
          const int64_t* in = ip + (b * N + n) * P;
          part_distances<scalar_t>(xn, yp + b * M * 3, in, P, eps, d.data());
          const int64_t used = greedy_order(d.data(), a, P, order.data());
          // w_p = a_p (gradient to a_p) or w_p = 1 - (activations before p) (gradient -1 to each of them)
          scalar_t before = 0;
          for (int64_t k = 0; k < used; ++k) {
            const int64_t p = order[k];
            const bool takes_all = a[p] <= 1 - before;
            clamped[k] = takes_all ? 0 : d[p];
            if (takes_all) ga[b * P + p] += g * d[p];
            const scalar_t w = takes_all ? a[p] : 1 - before;
            before += a[p];
            const scalar_t* q = yp + (b * M + in[p]) * 3;
            for (int c = 0; c < 3; ++c) {
              const scalar_t grad = g * w * (xn[c] - q[c]) / d[p];
              gx[(b * N + n) * 3 + c] += grad;
              gy[(b * M + in[p]) * 3 + c] -= grad;
            }
          }
          scalar_t later = 0;  // sum of d over the clamped parts after position k
          for (int64_t k = used - 1; k >= 0; --k) {
            ga[b * P + order[k]] -= g * later;
            later += clamped[k];
          }
          uncovered_grad += g;
        }
        if (uncovered)
          for (int64_t p = 0; p < P; ++p) ga[b * P + p] -= static_cast<scalar_t>(penalty) * uncovered_grad;
      }
    });
  });
  return {grad_x, grad_y, grad_act};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("nearest", &nearest);
  m.def("coverage_forward", &coverage_forward);
  m.def("coverage_backward", &coverage_backward);
}
