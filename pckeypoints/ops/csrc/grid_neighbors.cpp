// Ragged radius and k-NN searches on the CPU through a uniform grid (pckeypoints/grid_search.py).
//
// x (N, 3) points and y (M, 3) queries in B clouds (offsets ptr_x, ptr_y (B + 1)); each cloud's points are
// bucketed into cubic cells (a counting sort, index order kept inside a cell) and a query reads only the cells
// near it. The results equal pointnet2's brute-force kernels (pointnet2/csrc/pointnet2_query.h) exactly: the
// same squared distance (dx*dx + dy*dy) + dz*dz in the points' dtype (built with -ffp-contract=off), the same
// rules:
//
// radius: the points with d2 < r2 (r2 = r * r in double, then cast), the first max_num of them by index
//   (max_num < 0: all); with ignore_same the point of the query's own global index is left out first.
//   Cells are at least r (a little more, for rounding) wide, so the 27 cells around a query hold its ball;
//   where the ball is much larger than max_num, a scan of the cloud in index order that stops at the
//   max_num-th hit (the brute-force kernel's) is cheaper, and runs instead.
// knn: the k smallest (d2, index) pairs, nearest first, ties to the smaller index (fewer where the cloud has
//   fewer points). Rings of cells are read outwards until the k-th distance is below the distance to the
//   unread cells. drop_self (a k-NN graph, x = y, searched with k + 1): the query's own point is left out,
//   where exact duplicates hide it the farthest of the k + 1.
//
// Both return (row, col): row the query's global index, col the point's, sorted by query, then by index
// (radius) or nearest first (knn). Queries run in fixed chunks in parallel; results do not depend on the
// thread count.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

constexpr int64_t kChunk = 256;  // queries per parallel task

template <typename T>
inline T sq_dist(const T* p, T cx, T cy, T cz) {
  const T dx = p[0] - cx, dy = p[1] - cy, dz = p[2] - cz;
  return (dx * dx + dy * dy) + dz * dz;
}

// Uniform grid over one cloud's points: cell (i, j, l) holds order[start[c] .. start[c + 1]) (local indices,
// increasing), c = (i * dims[1] + j) * dims[2] + l.
struct Grid {
  double lo[3] = {0, 0, 0};
  double cell = 1;
  int64_t dims[3] = {1, 1, 1};
  std::vector<int64_t> start, order;

  int64_t coord(double v, int a) const {  // unclamped cell coordinate, kept in a sane range
    const double c = std::floor((v - lo[a]) / cell);
    return static_cast<int64_t>(std::min(std::max(c, -2.0), static_cast<double>(dims[a] + 1)));
  }
};

// Cell width at least `min_cell` giving about `target` cells over the bounding box of extents e.
double cell_width(const double* e, double target, double min_cell) {
  double volume = 1;
  int d = 0;
  for (int a = 0; a < 3; ++a) {
    if (e[a] > 0) {
      volume *= e[a];
      ++d;
    }
  }
  double cell = d ? std::pow(volume / std::max(target, 1.0), 1.0 / d) : 1.0;
  cell = std::max(cell, min_cell);
  for (int it = 0; it < 64; ++it) {  // at most ~4 target cells (flat or thin clouds)
    double cells = 1;
    for (int a = 0; a < 3; ++a) cells *= std::floor(e[a] / cell) + 1;
    if (cells <= 4 * std::max(target, 1.0) + 8) break;
    cell *= 1.25;
  }
  return cell > 0 ? cell : 1.0;
}

template <typename T>
Grid build_grid(const T* x, int64_t n, double target, double min_cell) {
  Grid g;
  double hi[3], e[3];
  for (int a = 0; a < 3; ++a) {
    g.lo[a] = std::numeric_limits<double>::infinity();
    hi[a] = -std::numeric_limits<double>::infinity();
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int a = 0; a < 3; ++a) {
      g.lo[a] = std::min(g.lo[a], static_cast<double>(x[3 * i + a]));
      hi[a] = std::max(hi[a], static_cast<double>(x[3 * i + a]));
    }
  }
  if (n == 0) {
    for (int a = 0; a < 3; ++a) g.lo[a] = hi[a] = 0;
  }
  for (int a = 0; a < 3; ++a) e[a] = hi[a] - g.lo[a];
  g.cell = cell_width(e, target, min_cell);
  for (int a = 0; a < 3; ++a) g.dims[a] = static_cast<int64_t>(std::floor(e[a] / g.cell)) + 1;
  const int64_t cells = g.dims[0] * g.dims[1] * g.dims[2];
  std::vector<int64_t> cell_of(n);
  g.start.assign(cells + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t c[3];
    for (int a = 0; a < 3; ++a) c[a] = std::min(std::max(g.coord(x[3 * i + a], a), int64_t(0)), g.dims[a] - 1);
    cell_of[i] = (c[0] * g.dims[1] + c[1]) * g.dims[2] + c[2];
    ++g.start[cell_of[i] + 1];
  }
  for (int64_t c = 0; c < cells; ++c) g.start[c + 1] += g.start[c];
  g.order.resize(n);
  std::vector<int64_t> fill(g.start.begin(), g.start.end() - 1);
  for (int64_t i = 0; i < n; ++i) g.order[fill[cell_of[i]]++] = i;
  return g;
}

// Calls visit(local index) for the points of the cells [c - R, c + R] (clamped) at Chebyshev distance exactly
// R from the query's cell c (all of them when shell is false).
template <typename F>
void visit_cells(const Grid& g, const int64_t* c, int64_t R, bool shell, F&& visit) {
  int64_t from[3], to[3];
  for (int a = 0; a < 3; ++a) {
    from[a] = std::max(c[a] - R, int64_t(0));
    to[a] = std::min(c[a] + R, g.dims[a] - 1);
  }
  for (int64_t i = from[0]; i <= to[0]; ++i) {
    for (int64_t j = from[1]; j <= to[1]; ++j) {
      const bool inner_ij = std::abs(i - c[0]) < R && std::abs(j - c[1]) < R;
      for (int64_t l = from[2]; l <= to[2]; ++l) {
        if (shell && inner_ij && std::abs(l - c[2]) < R) {
          l = std::min(c[2] + R - 1, to[2]);  // skip the inner cells of this column
          continue;
        }
        const int64_t cell = (i * g.dims[1] + j) * g.dims[2] + l;
        for (int64_t s = g.start[cell]; s < g.start[cell + 1]; ++s) visit(g.order[s]);
      }
    }
  }
}

// Calls range(from, to) for the non-empty ranges of grid.order of the 27 cells around the query's cell c.
template <typename F>
void visit_ranges(const Grid& g, const int64_t* c, F&& range) {
  int64_t from[3], to[3];
  for (int a = 0; a < 3; ++a) {
    from[a] = std::max(c[a] - 1, int64_t(0));
    to[a] = std::min(c[a] + 1, g.dims[a] - 1);
  }
  for (int64_t i = from[0]; i <= to[0]; ++i) {
    for (int64_t j = from[1]; j <= to[1]; ++j) {
      const int64_t row = (i * g.dims[1] + j) * g.dims[2];
      for (int64_t l = from[2]; l <= to[2]; ++l) {
        if (g.start[row + l] < g.start[row + l + 1]) range(g.start[row + l], g.start[row + l + 1]);
      }
    }
  }
}

struct Clouds {
  std::vector<int64_t> px, py;  // offsets
  std::vector<int64_t> cloud_of;  // cloud of each query
};

Clouds clouds(const torch::Tensor& ptr_x, const torch::Tensor& ptr_y, int64_t m) {
  Clouds c;
  auto ax = ptr_x.accessor<int64_t, 1>();
  auto ay = ptr_y.accessor<int64_t, 1>();
  for (int64_t b = 0; b < ptr_x.size(0); ++b) {
    c.px.push_back(ax[b]);
    c.py.push_back(ay[b]);
  }
  c.cloud_of.assign(m, 0);
  for (int64_t b = 0; b + 1 < static_cast<int64_t>(c.py.size()); ++b) {
    for (int64_t q = c.py[b]; q < c.py[b + 1]; ++q) c.cloud_of[q] = b;
  }
  return c;
}

std::vector<torch::Tensor> gather_chunks(std::vector<std::vector<int64_t>>& rows,
                                         std::vector<std::vector<int64_t>>& cols) {
  int64_t total = 0;
  for (const auto& r : rows) total += static_cast<int64_t>(r.size());
  auto row = torch::empty({total}, torch::kLong), col = torch::empty({total}, torch::kLong);
  int64_t* rp = row.data_ptr<int64_t>();
  int64_t* cp = col.data_ptr<int64_t>();
  for (size_t t = 0; t < rows.size(); ++t) {
    std::copy(rows[t].begin(), rows[t].end(), rp);
    std::copy(cols[t].begin(), cols[t].end(), cp);
    rp += rows[t].size();
    cp += cols[t].size();
  }
  return {row, col};
}

template <typename T>
std::vector<Grid> grids(const T* x, const Clouds& c, double target_per_point, double min_cell) {
  const int64_t B = static_cast<int64_t>(c.px.size()) - 1;
  std::vector<Grid> g(B);
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t n = c.px[b + 1] - c.px[b];
      g[b] = build_grid(x + 3 * c.px[b], n, n * target_per_point, min_cell);
    }
  });
  return g;
}

std::vector<torch::Tensor> radius(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& ptr_x,
                                  const torch::Tensor& ptr_y, double r, int64_t max_num, bool ignore_same) {
  const int64_t M = y.size(0);
  const Clouds c = clouds(ptr_x, ptr_y, M);
  const int64_t chunks = (M + kChunk - 1) / kChunk;
  std::vector<std::vector<int64_t>> rows(chunks), cols(chunks);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "grid_radius", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    const scalar_t r2 = static_cast<scalar_t>(r * r);
    const std::vector<Grid> g = grids(xp, c, 1.0, r * (1 + 1e-4));  // ~1 cell per point, cells wider than r
    at::parallel_for(0, chunks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<int64_t> hits;
      std::vector<std::pair<int64_t, int64_t>> heads;  // the non-empty [from, to) ranges of grid.order to read
      for (int64_t t = t0; t < t1; ++t) {
        for (int64_t q = t * kChunk; q < std::min(M, (t + 1) * kChunk); ++q) {
          const int64_t b = c.cloud_of[q], base = c.px[b], n = c.px[b + 1] - base;
          const Grid& grid = g[b];
          if (n == 0) continue;
          const scalar_t* ctr = yp + 3 * q;
          int64_t cell[3];
          for (int a = 0; a < 3; ++a) cell[a] = grid.coord(ctr[a], a);
          hits.clear();
          auto test = [&](int64_t j) {
            if (sq_dist(xp + 3 * (base + j), ctr[0], ctr[1], ctr[2]) < r2 && !(ignore_same && base + j == q)) {
              hits.push_back(base + j);
            }
          };
          heads.clear();
          int64_t candidates = 0;
          visit_ranges(grid, cell, [&](int64_t from, int64_t to) {
            heads.push_back({from, to});
            candidates += to - from;
          });
          // the ball holds about a third of the candidates, so a scan in index order stops after about
          // 3 n max_num / candidates points: test the candidates where that is more (with some slack for
          // collecting and sorting the hits)
          if (max_num < 0 || static_cast<double>(candidates) * candidates <= 2.0 * n * max_num) {
            for (const auto& h : heads) {
              for (int64_t s = h.first; s < h.second; ++s) test(grid.order[s]);
            }
            if (max_num >= 0 && static_cast<int64_t>(hits.size()) > max_num) {
              std::nth_element(hits.begin(), hits.begin() + max_num, hits.end());
              hits.resize(max_num);
            }
            std::sort(hits.begin(), hits.end());
          } else {  // a ball much larger than max_num: scan the cloud in index order, stop at the max_num-th hit
            for (int64_t j = 0; j < n && static_cast<int64_t>(hits.size()) < max_num; ++j) test(j);
          }
          rows[t].insert(rows[t].end(), hits.size(), q);
          cols[t].insert(cols[t].end(), hits.begin(), hits.end());
        }
      }
    });
  });
  return gather_chunks(rows, cols);
}

std::vector<torch::Tensor> knn(const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& ptr_x,
                               const torch::Tensor& ptr_y, int64_t k, double per_cell, bool drop_self) {
  const int64_t M = y.size(0);
  const Clouds c = clouds(ptr_x, ptr_y, M);
  const int64_t chunks = (M + kChunk - 1) / kChunk;
  std::vector<std::vector<int64_t>> rows(chunks), cols(chunks);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "grid_knn", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    const std::vector<Grid> g = grids(xp, c, 1.0 / std::max(per_cell, 1e-3), 0.0);  // ~per_cell points per cell
    at::parallel_for(0, chunks, 1, [&](int64_t t0, int64_t t1) {
      std::vector<scalar_t> best_d(k);
      std::vector<int64_t> best_i(k);
      for (int64_t t = t0; t < t1; ++t) {
        for (int64_t q = t * kChunk; q < std::min(M, (t + 1) * kChunk); ++q) {
          const int64_t b = c.cloud_of[q], base = c.px[b], n = c.px[b + 1] - base;
          const Grid& grid = g[b];
          if (n == 0) continue;
          const scalar_t* ctr = yp + 3 * q;
          int64_t cell[3];
          for (int a = 0; a < 3; ++a) cell[a] = grid.coord(ctr[a], a);
          int64_t filled = 0;
          const int64_t kk = std::min(k, n);
          auto offer = [&](int64_t j) {  // keep the kk smallest (d2, j), sorted
            const scalar_t d = sq_dist(xp + 3 * (base + j), ctr[0], ctr[1], ctr[2]);
            if (filled == kk && !(d < best_d[kk - 1] || (d == best_d[kk - 1] && j < best_i[kk - 1]))) return;
            int64_t s = filled < kk ? filled++ : kk - 1;
            while (s > 0 && (d < best_d[s - 1] || (d == best_d[s - 1] && j < best_i[s - 1]))) {
              best_d[s] = best_d[s - 1];
              best_i[s] = best_i[s - 1];
              --s;
            }
            best_d[s] = d;
            best_i[s] = j;
          };
          for (int64_t R = 0;; ++R) {
            visit_cells(grid, cell, R, R > 0, offer);
            bool all = true;
            double bound = std::numeric_limits<double>::infinity();  // distance to the unread cells
            for (int a = 0; a < 3; ++a) {
              all = all && cell[a] - R <= 0 && cell[a] + R >= grid.dims[a] - 1;
              if (cell[a] - R > 0) bound = std::min(bound, ctr[a] - (grid.lo[a] + (cell[a] - R) * grid.cell));
              if (cell[a] + R < grid.dims[a] - 1) {
                bound = std::min(bound, grid.lo[a] + (cell[a] + R + 1) * grid.cell - ctr[a]);
              }
            }
            if (all) break;
            if (filled == kk && bound > 0 && static_cast<double>(best_d[kk - 1]) < bound * bound * (1 - 1e-4)) break;
          }
          int64_t skip = -1;  // drop_self: the query's own point, else (hidden by duplicates) the farthest of k
          if (drop_self) {
            for (int64_t s = 0; s < filled && skip < 0; ++s) skip = base + best_i[s] == q ? s : -1;
            if (skip < 0 && filled == k) skip = k - 1;
          }
          rows[t].insert(rows[t].end(), filled - (skip >= 0), q);
          for (int64_t s = 0; s < filled; ++s) {
            if (s != skip) cols[t].push_back(base + best_i[s]);
          }
        }
      }
    });
  });
  return gather_chunks(rows, cols);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("radius", &radius);
  m.def("knn", &knn);
}
