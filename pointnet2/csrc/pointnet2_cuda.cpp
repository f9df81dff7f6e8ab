// CUDA backend of the pointnet2 ops: torch bindings over the plain-CUDA launchers in pointnet2_cuda.h.
// Same functions and return values as pointnet2_cpu.cpp. Inputs are validated and made contiguous by
// pointnet2/ops.py. Backward passes use atomicAdd, so float gradients may differ in the last bits run to run.
#include <torch/extension.h>

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <optional>

#include "pointnet2_cuda.h"

namespace {

namespace k = pointnet2::cuda;

void check(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "pointnet2 CUDA kernel ", what, " failed: ", cudaGetErrorString(err));
}

torch::Tensor furthest_point_sample(const torch::Tensor& xyz, int64_t M) {
  const c10::cuda::CUDAGuard guard(xyz.device());
  const int64_t B = xyz.size(0), N = xyz.size(1);
  auto out = torch::empty({B, M}, xyz.options().dtype(torch::kLong));
  auto dist = torch::empty({B, N}, xyz.options());
  AT_DISPATCH_FLOATING_TYPES(xyz.scalar_type(), "furthest_point_sample", [&] {
    check(k::furthest_point_sample(xyz.data_ptr<scalar_t>(), dist.data_ptr<scalar_t>(), out.data_ptr<int64_t>(), B,
                                   N, M, c10::cuda::getCurrentCUDAStream()),
          "furthest_point_sample");
  });
  return out;
}

std::vector<torch::Tensor> ball_query_group(const torch::Tensor& xyz, const torch::Tensor& new_xyz,
                                            const std::optional<torch::Tensor>& feats, double radius,
                                            int64_t nsample) {
  const c10::cuda::CUDAGuard guard(xyz.device());
  const int64_t B = xyz.size(0), N = xyz.size(1), M = new_xyz.size(1), C = feats ? feats->size(1) : 0;
  auto out = torch::empty({B, 3 + C, M, nsample}, xyz.options());
  auto idx = torch::empty({B, M, nsample}, xyz.options().dtype(torch::kInt));
  auto counts = torch::empty({B, M}, xyz.options().dtype(torch::kInt));
  AT_DISPATCH_FLOATING_TYPES(xyz.scalar_type(), "ball_query_group", [&] {
    check(k::ball_query_group(xyz.data_ptr<scalar_t>(), new_xyz.data_ptr<scalar_t>(),
                              feats ? feats->data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(),
                              idx.data_ptr<int32_t>(), counts.data_ptr<int32_t>(), B, N, M, C,
                              static_cast<scalar_t>(radius * radius), static_cast<int32_t>(nsample),
                              c10::cuda::getCurrentCUDAStream()),
          "ball_query_group");
  });
  return {out, idx, counts};
}

torch::Tensor group_backward(const torch::Tensor& grad_out, const torch::Tensor& idx, int64_t N) {
  const c10::cuda::CUDAGuard guard(grad_out.device());
  const int64_t B = grad_out.size(0), CH = grad_out.size(1), M = grad_out.size(2), S = grad_out.size(3);
  auto grad_in = torch::zeros({B, CH, N}, grad_out.options());
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "group_backward", [&] {
    check(k::group_backward(grad_out.data_ptr<scalar_t>(), idx.data_ptr<int32_t>(), grad_in.data_ptr<scalar_t>(), B,
                            CH, N, M, static_cast<int32_t>(S), c10::cuda::getCurrentCUDAStream()),
          "group_backward");
  });
  return grad_in;
}

std::vector<torch::Tensor> knn(const torch::Tensor& xyz, const torch::Tensor& query, int64_t K) {
  const c10::cuda::CUDAGuard guard(xyz.device());
  const int64_t B = xyz.size(0), N = xyz.size(1), M = query.size(1);
  auto dist2 = torch::empty({B, M, K}, xyz.options());
  auto idx = torch::empty({B, M, K}, xyz.options().dtype(torch::kLong));
  AT_DISPATCH_FLOATING_TYPES(xyz.scalar_type(), "knn", [&] {
    check(k::knn(xyz.data_ptr<scalar_t>(), query.data_ptr<scalar_t>(), dist2.data_ptr<scalar_t>(),
                 idx.data_ptr<int64_t>(), B, N, M, static_cast<int32_t>(K), c10::cuda::getCurrentCUDAStream()),
          "knn");
  });
  return {dist2, idx};
}

torch::Tensor interpolate(const torch::Tensor& feats, const torch::Tensor& idx, const torch::Tensor& weight) {
  const c10::cuda::CUDAGuard guard(feats.device());
  const int64_t B = feats.size(0), C = feats.size(1), N = feats.size(2), M = idx.size(1), K = idx.size(2);
  auto out = torch::empty({B, C, M}, feats.options());
  AT_DISPATCH_FLOATING_TYPES(feats.scalar_type(), "interpolate", [&] {
    check(k::interpolate(feats.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), weight.data_ptr<scalar_t>(),
                         out.data_ptr<scalar_t>(), B, C, N, M, static_cast<int32_t>(K),
                         c10::cuda::getCurrentCUDAStream()),
          "interpolate");
  });
  return out;
}

torch::Tensor interpolate_backward(const torch::Tensor& grad_out, const torch::Tensor& idx,
                                   const torch::Tensor& weight, int64_t N) {
  const c10::cuda::CUDAGuard guard(grad_out.device());
  const int64_t B = grad_out.size(0), C = grad_out.size(1), M = grad_out.size(2), K = idx.size(2);
  auto grad_feats = torch::zeros({B, C, N}, grad_out.options());
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "interpolate_backward", [&] {
    check(k::interpolate_backward(grad_out.data_ptr<scalar_t>(), idx.data_ptr<int64_t>(), weight.data_ptr<scalar_t>(),
                                  grad_feats.data_ptr<scalar_t>(), B, C, N, M, static_cast<int32_t>(K),
                                  c10::cuda::getCurrentCUDAStream()),
          "interpolate_backward");
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
