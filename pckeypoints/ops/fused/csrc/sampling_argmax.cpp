// Fused Gaussian sampling-argmax on the CPU: moments of Gumbel-softmax weights without a (B, K, Ns, N) tensor.
//
// For every sample (b, k, s): t_i = l_i + g_i with Gumbel noise g_i regenerated from the counter-based hash of
// pckeypoints/fused/rng.py, weights w_i = softmax_i(t_i / tau), and in one pass over the N points (online softmax
// in blocks of kBlock points: running max m, running sum S) the moments
//   mean_d = sum_i w_i y_id,   var_d = sum_i w_i^2 sigma2_id,
// and the sample's standard normal draw eps_d (its value is mean + sqrt(var) eps).
// A cloud's keypoints share the noise of sample s, each reading it at its own cyclic shift (rng.py): both passes
// draw it once per (cloud, sample) into a buffer of 2N values and read keypoint k's window from it, so the hash
// and the two logarithms cost 1/K per weight, which is left with one exp. The backward pass regenerates the
// noise. With a clip amplitude c > 0 the backward pass gives the weights the authors' clipped-integral gradient
// instead (see backward_clouds). Logits (B, K, N); positions and basis variances are channels-first (Bp, D, N), Bp in {1, B}. Parallel
// over (cloud, sample) (forward) and over clouds (backward); every output element is summed by one task in a
// fixed order, so the results do not depend on the thread count. float loops are branch-free with lane-wise
// partial sums so that they vectorise (AVX-512/AVX2 clones, chosen at run time); double uses std::log / std::exp
// (gradcheck).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace {

constexpr int64_t kBlock = 256;  // points per online-softmax block
constexpr int kLanes = 16;       // independent partial sums per accumulator (vector lanes)

// ---------------------------------------------------------------- counter-based RNG (same as rng.py)
inline uint32_t mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x21f0aaadu;
  x ^= x >> 15;
  x *= 0x735a2d97u;
  return x ^ (x >> 15);
}

struct Keys {
  uint32_t a, b;
};

inline Keys sample_keys(const int64_t* seed, int64_t b, int64_t k, int64_t s) {
  uint32_t h = mix(mix(static_cast<uint32_t>(seed[0])) ^ static_cast<uint32_t>(seed[1]));
  h = mix(mix(mix(h ^ static_cast<uint32_t>(b)) ^ static_cast<uint32_t>(k)) ^ static_cast<uint32_t>(s));
  return {h, mix(h ^ 0x9e3779b9u)};
}

// ---------------------------------------------------------------- branch-free float log and exp (Cephes)
inline float as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint32_t as_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// Natural log of a positive normal float, ~1 ulp.
inline float log_approx(float x) {
  const uint32_t bits = as_bits(x);
  float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 127);
  float m = as_float((bits & 0x007fffffu) | 0x3f800000u);  // [1, 2)
  const bool big = m > 1.41421356f;
  m = big ? 0.5f * m : m;
  e = big ? e + 1.0f : e;
  const float f = m - 1.0f, z = f * f;
  float y = 7.0376836292e-2f;
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  y += e * -2.12194440e-4f;
  y += -0.5f * z;
  return (f + y) + e * 0.693359375f;
}

// exp(x) for x <= 88, exactly 0 below -87 (and for -inf), ~1 ulp.
inline float exp_approx(float x) {
  const bool under = x < -87.0f;
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float fx = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest, branch-free
  x = x - fx * 0.693359375f - fx * -2.12194440e-4f;
  const float z = x * x;
  float y = 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  const float scale = as_float(static_cast<uint32_t>(static_cast<int32_t>(fx) + 127) << 23);
  return under ? 0.0f : y * scale;
}

inline double log_approx(double x) { return std::log(x); }
inline double exp_approx(double x) { return std::exp(x); }

// erf(x) within 3e-7 (Abramowitz & Stegun 7.1.28: 1 - (1 + a1 x + ... + a6 x^6)^-16 for x >= 0; 2e-6 in float
// arithmetic), branch-free, no exp; +-1 for large |x| (the power overflows to inf).
inline float erf_approx(float x) {
  const float ax = std::abs(x);
  float p = 0.0000430638f;
  p = p * ax + 0.0002765672f;
  p = p * ax + 0.0001520143f;
  p = p * ax + 0.0092705272f;
  p = p * ax + 0.0422820123f;
  p = p * ax + 0.0705230784f;
  p = p * ax + 1.0f;
  p *= p, p *= p, p *= p, p *= p;  // ^16
  const float y = 1.0f - 1.0f / p;
  return x < 0.0f ? -y : y;
}

inline double erf_approx(double x) { return std::erf(x); }

// U(0, 1) draw of a column: u = ((bits >> 9) + 0.5) 2^-23 (exact in float, never 0 or 1).
template <typename T>
inline T uniform(uint32_t column, Keys key) {
  const uint32_t bits = mix(mix(column ^ key.a) ^ key.b);
  return (static_cast<T>(static_cast<int32_t>(bits >> 9)) + T(0.5)) * T(1.1920928955078125e-07);
}

// Gumbel noise of point column i: -log(-log u).
template <typename T>
inline T gumbel(uint32_t i, Keys key) {
  return -log_approx(-log_approx(uniform<T>(i, key)));
}

// First column of keypoint k's window on its cloud's shared noise: floor(k N / K) (rng.noise_columns).
inline int64_t noise_shift(int64_t k, int64_t K, int64_t N) { return k * N / K; }

// noise[i] = noise[N + i] = Gumbel noise of column i < N under key: every keypoint's window is contiguous.
template <typename T>
inline void fill_noise(T* __restrict noise, int64_t N, Keys key) {
  for (int64_t i = 0; i < N; ++i) noise[i] = gumbel<T>(static_cast<uint32_t>(i), key);
  std::copy(noise, noise + N, noise + N);
}

// Standard normal draw of axis d of a sample (Box-Muller on columns 2^31 + 2d and 2^31 + 2d + 1, as rng.normal).
template <typename T>
inline T normal(int d, Keys key) {
  const uint32_t column = 0x80000000u + 2u * static_cast<uint32_t>(d);
  const T u1 = uniform<T>(column, key), u2 = uniform<T>(column + 1u, key);
  return std::sqrt(T(-2) * std::log(u1)) * std::cos(T(6.283185307179586) * u2);
}

template <typename T>
struct Args {
  const T* logits;  // (B, K, N)
  const T* pos;     // (Bp, D, N)
  const T* var;     // (Bp, D, N)
  const int64_t* seed;
  int64_t B, K, Ns, N, pos_stride;  // pos_stride: D * N, or 0 when Bp = 1
  T inv_tau;
  T clip;  // backward: clipped-integral amplitude in basis standard deviations, 0 for the exact gradient
  // forward outputs (B, K, Ns, D) and (B, K, Ns)
  T *mean, *variance, *noise, *max, *log_sum;
  // backward inputs: forward's max and log_sum (B, K, Ns), mean and variance (B, K, Ns, D); gradients (B, K, Ns, D)
  const T *saved_max, *saved_log_sum, *saved_mean, *saved_variance, *grad_mean, *grad_var;
  const T* sample;  // (B, K, Ns, D): mean + sqrt(variance) noise, read by the clipped gradient
  // backward outputs (B, K, N), (B, D, N)
  T *grad_logits, *grad_pos, *grad_basis_var;
};

// Forward over tasks t0..t1 (t = b Ns + s): cloud b's noise of sample s, then the sample of every keypoint.
template <typename T, int D>
[[gnu::always_inline]] inline void forward_samples(const Args<T>& a, int64_t t0, int64_t t1) {
  constexpr T kNegInf = -std::numeric_limits<T>::infinity();
  alignas(64) T t[kBlock], e[kBlock];
  std::vector<T> noise(2 * a.N);
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t s = task % a.Ns, b = task / a.Ns;
    fill_noise(noise.data(), a.N, sample_keys(a.seed, b, 0, s));
    const T* pos = a.pos + b * a.pos_stride;
    const T* var = a.var + b * a.pos_stride;
    for (int64_t k = 0; k < a.K; ++k) {
      const int64_t r = (b * a.K + k) * a.Ns + s;
      const T* logit = a.logits + (b * a.K + k) * a.N;
      const T* g = noise.data() + noise_shift(k, a.K, a.N);
      T m = kNegInf, sum[kLanes] = {}, p[D][kLanes] = {}, q[D][kLanes] = {};
      for (int64_t i0 = 0; i0 < a.N; i0 += kBlock) {
        const int64_t n = std::min(kBlock, a.N - i0), full = n / kLanes * kLanes;
        const int64_t padded = (n + kLanes - 1) / kLanes * kLanes;
        for (int64_t j = 0; j < n; ++j) t[j] = logit[i0 + j] + g[i0 + j];
        for (int64_t j = n; j < padded; ++j) t[j] = kNegInf;
        T lane_max[kLanes];
        for (int l = 0; l < kLanes; ++l) lane_max[l] = kNegInf;
        for (int64_t j = 0; j < padded; j += kLanes)
          for (int l = 0; l < kLanes; ++l) lane_max[l] = std::max(lane_max[l], t[j + l]);
        T block_max = kNegInf;
        for (int l = 0; l < kLanes; ++l) block_max = std::max(block_max, lane_max[l]);
        if (block_max == kNegInf) continue;  // only padded points so far
        if (block_max > m) {  // rescale the running sums to the new maximum
          const T c = exp_approx((m - block_max) * a.inv_tau), c2 = c * c;
          for (int l = 0; l < kLanes; ++l) {
            sum[l] *= c;
            for (int d = 0; d < D; ++d) p[d][l] *= c, q[d][l] *= c2;
          }
          m = block_max;
        }
        for (int64_t j = 0; j < padded; ++j) e[j] = exp_approx((t[j] - m) * a.inv_tau);
        for (int64_t j = 0; j < full; j += kLanes)
          for (int l = 0; l < kLanes; ++l) {
            const T w = e[j + l];
            sum[l] += w;
            for (int d = 0; d < D; ++d) {
              p[d][l] += w * pos[d * a.N + i0 + j + l];
              q[d][l] += w * w * var[d * a.N + i0 + j + l];
            }
          }
        for (int64_t j = full; j < n; ++j) {
          const int l = static_cast<int>(j % kLanes);
          sum[l] += e[j];
          for (int d = 0; d < D; ++d) {
            p[d][l] += e[j] * pos[d * a.N + i0 + j];
            q[d][l] += e[j] * e[j] * var[d * a.N + i0 + j];
          }
        }
      }
      T total = 0, pd[D] = {}, qd[D] = {};
      for (int l = 0; l < kLanes; ++l) {
        total += sum[l];
        for (int d = 0; d < D; ++d) pd[d] += p[d][l], qd[d] += q[d][l];
      }
      const Keys key = sample_keys(a.seed, b, k, s);
      for (int d = 0; d < D; ++d) {
        a.mean[r * D + d] = pd[d] / total;
        a.variance[r * D + d] = qd[d] / (total * total);
        a.noise[r * D + d] = normal<T>(d, key);
      }
      a.max[r] = m;
      a.log_sum[r] = std::log(total);
    }
  }
}

// The weights of sample r over points i0 .. i0 + n into w[0..n) (contiguous local arrays keep the loops vectorised).
template <typename T>
[[gnu::always_inline]] inline void block_weights(const Args<T>& a, const T* logit, const T* g, int64_t r, int64_t i0,
                                                 int64_t n, T* __restrict w) {
  const T m = a.saved_max[r], log_sum = a.saved_log_sum[r];
  for (int64_t j = 0; j < n; ++j) w[j] = exp_approx((logit[i0 + j] + g[i0 + j] - m) * a.inv_tau - log_sum);
}

// Exact gradient of sample r's weights, added to out (B, K, N row of keypoint k) and stored in weight[0..N):
//   dL/dw_i = sum_d gm_d y_id + 2 w_i sum_d gv_d sigma2_id,  dL/dl_i = w_i (dL/dw_i - dot) / tau,
//   dot = sum_i w_i dL/dw_i = sum_d gm_d mean_d + 2 gv_d var_d (from the forward moments), subtracted per axis:
//   dL/dw_i - dot = sum_d gm_d (y_id - mean_d) + 2 gv_d (w_i sigma2_id - var_d), exactly 0 for one-hot weights
//   (mean = y_i, var = sigma2_i, w_i = 1), so that the rounding error is not amplified by 1 / tau.
template <typename T, int D>
[[gnu::always_inline]] inline void exact_logit_grads(const Args<T>& a, const T* logit, const T* g, const T* pos,
                                                     const T* var, int64_t r, T* out, T* weight) {
  alignas(64) T w[kBlock], dw[kBlock];
  for (int64_t i0 = 0; i0 < a.N; i0 += kBlock) {
    const int64_t n = std::min(kBlock, a.N - i0);
    block_weights(a, logit, g, r, i0, n, w);
    for (int64_t j = 0; j < n; ++j) dw[j] = 0;
    for (int d = 0; d < D; ++d) {
      const T gm = a.grad_mean[r * D + d], gv = a.grad_var[r * D + d];
      const T mu = a.saved_mean[r * D + d], nu = a.saved_variance[r * D + d];
      const T* y = pos + d * a.N + i0;
      const T* v = var + d * a.N + i0;
      for (int64_t j = 0; j < n; ++j) dw[j] += gm * (y[j] - mu) + 2 * gv * (w[j] * v[j] - nu);
    }
    for (int64_t j = 0; j < n; ++j) out[i0 + j] += w[j] * dw[j] * a.inv_tau, weight[i0 + j] = w[j];
  }
}

// Clipped-integral gradient of sample r's weights (the authors' estimator with the basis draws summed
// analytically): dL/dw_i = sum_d c sigma_id E[sign(y_id + eps_id - s_d) | w, s] gm_d for the sample s of mean m
// and variance V, with the point's share rho = w_i^2 sigma_id^2 / V of V:
//   E[sign(...) | w, s] = erf((y_id - s_d + (w_i sigma_id^2 / V_d)(s_d - m_d)) / (sqrt2 sigma_id sqrt(1 - rho)))
// (pckeypoints/fused/reference.py, clipped_weight_grads); the variance path adds nothing to the weights.
// dL/dl_i = w_i (dL/dw_i - dot) / tau with dot = sum_i w_i dL/dw_i from a first pass that keeps w and dL/dw in
// weight[0..N) and dw[0..N). amplitude and inv_width hold c sigma and 1 / (sqrt2 sigma) of the cloud, (D, N).
template <typename T, int D, bool Isotropic>
[[gnu::always_inline]] inline void clipped_logit_grads(const Args<T>& a, const T* logit, const T* g, const T* pos,
                                                       const T* var, const T* amplitude, const T* inv_width,
                                                       int64_t r, T* out, T* weight, T* dw) {
  const T eps = std::numeric_limits<T>::epsilon();
  alignas(64) T w[kBlock], grad[kBlock], share[kBlock], scale[kBlock];
  T dot[kLanes] = {};
  for (int64_t i0 = 0; i0 < a.N; i0 += kBlock) {
    const int64_t n = std::min(kBlock, a.N - i0);
    block_weights(a, logit, g, r, i0, n, w);
    for (int64_t j = 0; j < n; ++j) grad[j] = 0;
    if constexpr (Isotropic) {  // one sigma per point: the share of V and the erf's scale are the same on every axis
      const T inv_v = T(1) / a.saved_variance[r * D];
      for (int64_t j = 0; j < n; ++j) {
        share[j] = w[j] * var[i0 + j] * inv_v;
        scale[j] = inv_width[i0 + j] / std::sqrt(std::max(T(1) - w[j] * share[j], eps));
      }
    }
    for (int d = 0; d < D; ++d) {
      const T gm = a.grad_mean[r * D + d], centre = a.sample[r * D + d];
      const T drift = centre - a.saved_mean[r * D + d], inv_v = T(1) / a.saved_variance[r * D + d];
      const T* y = pos + d * a.N + i0;
      const T* v = var + d * a.N + i0;
      const T* amp = amplitude + (Isotropic ? 0 : d * a.N) + i0;
      const T* inv = inv_width + d * a.N + i0;
      if constexpr (Isotropic) {
        for (int64_t j = 0; j < n; ++j) grad[j] += gm * amp[j] * erf_approx((y[j] - centre + share[j] * drift) * scale[j]);
      } else {
        for (int64_t j = 0; j < n; ++j) {
          const T sh = w[j] * v[j] * inv_v, rest = std::max(T(1) - w[j] * sh, eps);
          grad[j] += gm * amp[j] * erf_approx((y[j] - centre + sh * drift) * inv[j] / std::sqrt(rest));
        }
      }
    }
  for (int64_t j = 0; j < n; ++j) {
      grad[j] = w[j] > 0 ? grad[j] : T(0);  // padding (w = 0) may have sigma = 0
      dot[j % kLanes] += w[j] * grad[j];
      weight[i0 + j] = w[j], dw[i0 + j] = grad[j];
    }
  }
  T total = 0;
  for (int l = 0; l < kLanes; ++l) total += dot[l];
  for (int64_t i = 0; i < a.N; ++i) out[i] += weight[i] * (dw[i] - total) * a.inv_tau;
}

// Backward over clouds b0..b1, sample by sample (the cloud's noise of sample s, then every keypoint): the logits'
// gradient (exact_logit_grads, or clipped_logit_grads when a.clip > 0) and the basis' ordinary gradients
// dL/dy_id = sum w_i gm_d, dL/dsigma2_id = sum w_i^2 gv_d. The gradients arrive zeroed and are summed over
// samples in place.
template <typename T, int D>
[[gnu::always_inline]] inline void backward_clouds(const Args<T>& a, int64_t b0, int64_t b1) {
  std::vector<T> noise(2 * a.N), weight(a.N), dw(a.clip > 0 ? a.N : 0);
  std::vector<T> amplitude(a.clip > 0 ? D * a.N : 0), inv_width(amplitude.size());
  bool isotropic = true;  // every axis of every point has the same variance (the fixed and k-NN bases)
  for (int64_t b = b0; b < b1; ++b) {
    const T* pos = a.pos + b * a.pos_stride;
    const T* var = a.var + b * a.pos_stride;
    T* grad_pos = a.grad_pos ? a.grad_pos + b * D * a.N : nullptr;
    T* grad_var = a.grad_basis_var ? a.grad_basis_var + b * D * a.N : nullptr;
    if (a.clip > 0 && (b == b0 || a.pos_stride)) {  // the cloud's basis (once if the clouds share it)
      isotropic = true;
      for (int64_t i = 0; i < D * a.N; ++i) {
        const T sigma = std::sqrt(var[i]);
        amplitude[i] = a.clip * sigma;
        inv_width[i] = T(1) / (T(1.4142135623730951) * sigma);
        isotropic = isotropic && var[i] == var[i % a.N];
      }
    }
    for (int64_t s = 0; s < a.Ns; ++s) {
      fill_noise(noise.data(), a.N, sample_keys(a.seed, b, 0, s));
      for (int64_t k = 0; k < a.K; ++k) {
        const int64_t r = (b * a.K + k) * a.Ns + s;
        const T* logit = a.logits + (b * a.K + k) * a.N;
        const T* g = noise.data() + noise_shift(k, a.K, a.N);
        T* out = a.grad_logits + (b * a.K + k) * a.N;
        if (a.clip > 0 && isotropic)
          clipped_logit_grads<T, D, true>(a, logit, g, pos, var, amplitude.data(), inv_width.data(), r, out,
                                          weight.data(), dw.data());
        else if (a.clip > 0)
          clipped_logit_grads<T, D, false>(a, logit, g, pos, var, amplitude.data(), inv_width.data(), r, out,
                                           weight.data(), dw.data());
        else
          exact_logit_grads<T, D>(a, logit, g, pos, var, r, out, weight.data());
        for (int d = 0; d < D && grad_pos; ++d) {
          const T gm = a.grad_mean[r * D + d];
          for (int64_t i = 0; i < a.N; ++i) grad_pos[d * a.N + i] += weight[i] * gm;
        }
        for (int d = 0; d < D && grad_var; ++d) {
          const T gv = a.grad_var[r * D + d];
          for (int64_t i = 0; i < a.N; ++i) grad_var[d * a.N + i] += weight[i] * weight[i] * gv;
        }
      }
    }
  }
}

// float kernels compiled for AVX-512, AVX2 and baseline x86-64, picked at load time.
#if defined(__GNUC__) && defined(__x86_64__)
#define PCKP_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PCKP_CLONES
#endif

#define PCKP_FLOAT_KERNELS(D)                                                                                      \
  PCKP_CLONES void forward_f##D(const Args<float>& a, int64_t lo, int64_t hi) { forward_samples<float, D>(a, lo, hi); } \
  PCKP_CLONES void backward_f##D(const Args<float>& a, int64_t lo, int64_t hi) {                                   \
    backward_clouds<float, D>(a, lo, hi);                                                                          \
  }
PCKP_FLOAT_KERNELS(1)
PCKP_FLOAT_KERNELS(2)
PCKP_FLOAT_KERNELS(3)

using Kernel = void (*)(const Args<float>&, int64_t, int64_t);

template <typename T>
void run(bool forward, const Args<T>& a, int64_t D, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    static const Kernel fwd[] = {forward_f1, forward_f2, forward_f3};
    static const Kernel bwd[] = {backward_f1, backward_f2, backward_f3};
    (forward ? fwd : bwd)[D - 1](a, begin, end);
  } else {
    switch (D) {
      case 1: return forward ? forward_samples<T, 1>(a, begin, end) : backward_clouds<T, 1>(a, begin, end);
      case 2: return forward ? forward_samples<T, 2>(a, begin, end) : backward_clouds<T, 2>(a, begin, end);
      default: return forward ? forward_samples<T, 3>(a, begin, end) : backward_clouds<T, 3>(a, begin, end);
    }
  }
}

template <typename T>
Args<T> make_args(const torch::Tensor& logits, const torch::Tensor& pos, const torch::Tensor& var,
                  const torch::Tensor& seed, int64_t Ns, double inv_tau) {
  Args<T> a{};
  a.logits = logits.data_ptr<T>();
  a.pos = pos.data_ptr<T>();
  a.var = var.data_ptr<T>();
  a.seed = seed.data_ptr<int64_t>();
  a.B = logits.size(0), a.K = logits.size(1), a.N = logits.size(2), a.Ns = Ns;
  a.pos_stride = pos.size(0) == 1 ? 0 : pos.size(1) * pos.size(2);
  a.inv_tau = static_cast<T>(std::min(inv_tau, static_cast<double>(std::numeric_limits<T>::max())));
  return a;
}

void check_inputs(const torch::Tensor& logits, const torch::Tensor& pos, const torch::Tensor& var,
                  const torch::Tensor& seed) {
  TORCH_CHECK(logits.dim() == 3 && pos.dim() == 3 && pos.sizes() == var.sizes(), "fused sampling: bad shapes");
  TORCH_CHECK(pos.size(1) >= 1 && pos.size(1) <= 3, "fused sampling supports 1 to 3 dimensions, got ", pos.size(1));
  TORCH_CHECK(pos.size(2) == logits.size(2) && (pos.size(0) == 1 || pos.size(0) == logits.size(0)),
              "fused sampling: positions do not match the logits");
  TORCH_CHECK(logits.is_contiguous() && pos.is_contiguous() && var.is_contiguous() && seed.is_contiguous(),
              "fused sampling: inputs must be contiguous");
  TORCH_CHECK(seed.scalar_type() == torch::kLong && seed.numel() == 2, "fused sampling: seed must be (2,) int64");
}

// logits (B, K, N), pos and var (Bp, D, N), seed (2,) int64 ->
// mean, variance (B, K, Ns, D), max, log_sum (B, K, Ns) of the online softmax, and each sample's standard
// normal draw (B, K, Ns, D).
std::vector<torch::Tensor> forward(const torch::Tensor& logits, const torch::Tensor& pos, const torch::Tensor& var,
                                   const torch::Tensor& seed, int64_t Ns, double inv_tau) {
  check_inputs(logits, pos, var, seed);
  const int64_t B = logits.size(0), K = logits.size(1), D = pos.size(1);
  auto mean = torch::empty({B, K, Ns, D}, logits.options());
  auto variance = torch::empty_like(mean);
  auto max = torch::empty({B, K, Ns}, logits.options());
  auto log_sum = torch::empty_like(max);
  auto noise = torch::empty_like(mean);
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "fused_sampling_forward", [&] {
    auto a = make_args<scalar_t>(logits, pos, var, seed, Ns, inv_tau);
    a.mean = mean.data_ptr<scalar_t>(), a.variance = variance.data_ptr<scalar_t>();
    a.noise = noise.data_ptr<scalar_t>();
    a.max = max.data_ptr<scalar_t>(), a.log_sum = log_sum.data_ptr<scalar_t>();
    at::parallel_for(0, B * Ns, 1, [&](int64_t t0, int64_t t1) { run<scalar_t>(true, a, D, t0, t1); });
  });
  return {mean, variance, max, log_sum, noise};
}

// Vector-Jacobian product of forward's (mean, variance) with (grad_mean, grad_var), given forward's max, log_sum,
// mean and variance; with clip > 0 the logits' part is the clipped-integral gradient around sample
// (B, K, Ns, D), the samples mean + sqrt(variance) noise (an empty tensor when clip = 0). Returns grad_logits (B, K, N) and, when
// asked for, grad_pos and grad_var of the basis (B, D, N) (undefined tensors otherwise).
std::vector<torch::Tensor> backward(const torch::Tensor& logits, const torch::Tensor& pos, const torch::Tensor& var,
                                    const torch::Tensor& seed, double inv_tau, const torch::Tensor& max,
                                    const torch::Tensor& log_sum, const torch::Tensor& mean,
                                    const torch::Tensor& variance, const torch::Tensor& grad_mean,
                                    const torch::Tensor& grad_var, bool need_pos, bool need_var,
                                    const torch::Tensor& sample, double clip) {
  check_inputs(logits, pos, var, seed);
  TORCH_CHECK(clip >= 0 && (clip == 0 || (sample.sizes() == mean.sizes() && sample.is_contiguous())),
              "fused sampling: the clipped gradient needs a contiguous sample of the mean's shape");
  TORCH_CHECK(grad_mean.is_contiguous() && grad_var.is_contiguous() && mean.is_contiguous() &&
                  variance.is_contiguous() && max.is_contiguous() && log_sum.is_contiguous(),
              "fused sampling: gradients must be contiguous");
  const int64_t B = logits.size(0), N = logits.size(2), D = pos.size(1), Ns = max.size(2);
  auto grad_logits = torch::zeros_like(logits);
  torch::Tensor grad_pos, grad_basis_var;
  if (need_pos) grad_pos = torch::zeros({B, D, N}, logits.options());
  if (need_var) grad_basis_var = torch::zeros({B, D, N}, logits.options());
  AT_DISPATCH_FLOATING_TYPES(logits.scalar_type(), "fused_sampling_backward", [&] {
    auto a = make_args<scalar_t>(logits, pos, var, seed, Ns, inv_tau);
    a.saved_max = max.data_ptr<scalar_t>(), a.saved_log_sum = log_sum.data_ptr<scalar_t>();
    a.grad_mean = grad_mean.data_ptr<scalar_t>(), a.grad_var = grad_var.data_ptr<scalar_t>();
    a.saved_mean = mean.data_ptr<scalar_t>(), a.saved_variance = variance.data_ptr<scalar_t>();
    a.clip = static_cast<scalar_t>(clip);
    a.sample = clip > 0 ? sample.data_ptr<scalar_t>() : nullptr;
    a.grad_logits = grad_logits.data_ptr<scalar_t>();
    a.grad_pos = need_pos ? grad_pos.data_ptr<scalar_t>() : nullptr;
    a.grad_basis_var = need_var ? grad_basis_var.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) { run<scalar_t>(false, a, D, b0, b1); });
  });
  return {grad_logits, grad_pos, grad_basis_var};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward);
  m.def("backward", &backward);
}
