// Fused CPU multiresolution hash encoding and a lazy (row-sparse) Adam step.
//
// Same layout and arithmetic as birdnerf/field/hashgrid.py (encode_reference): one table
// (R, F) shared by all levels, level l owning rows [offset_l, offset_l + size_l); dense levels
// index x + (N+1) y + (N+1)^2 z, hashed levels (x * 1 ^ y * 2654435761 ^ z * 805459861) & mask.
// Corners are visited in the reference's order (x outer, z inner), so float32 outputs match it.
//
// Parallelism (OpenMP, at most torch's thread count):
// - forward: over tiles of samples; the position gradient: over samples;
// - table gradient: over levels. Levels own disjoint rows, so each thread accumulates into its
//   own rows without atomics, in sample order (deterministic), and only rows the batch touched
//   are written.
// - lazy Adam: over rows; a row whose gradient is all zero (not hit this step) is left as is.

#include <torch/extension.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace {

struct Levels {
  std::vector<int64_t> resolution, offset;
  std::vector<uint8_t> dense;
  uint32_t mask;
};

// One level's cell for a point: the 8 corner rows and the per-axis fractions.
template <typename scalar_t>
struct Cell {
  int64_t rows[8];
  scalar_t frac[3];
};

template <typename scalar_t>
inline void locate(const scalar_t* xc, int64_t res, bool dense, int64_t offset, uint32_t mask,
                   Cell<scalar_t>& cell) {
  int64_t lo[3];
  for (int d = 0; d < 3; ++d) {
    const scalar_t pos = xc[d] * static_cast<scalar_t>(res);
    scalar_t c = std::floor(pos);
    const scalar_t top = static_cast<scalar_t>(res - 1);
    if (c > top) c = top;
    cell.frac[d] = pos - c;
    lo[d] = static_cast<int64_t>(c);
  }
  int k = 0;
  if (dense) {
    const int64_t side = res + 1;
    for (int cx = 0; cx < 2; ++cx)
      for (int cy = 0; cy < 2; ++cy)
        for (int cz = 0; cz < 2; ++cz)
          cell.rows[k++] = offset + (lo[0] + cx) + side * (lo[1] + cy) + side * side * (lo[2] + cz);
  } else {
    for (int cx = 0; cx < 2; ++cx)
      for (int cy = 0; cy < 2; ++cy)
        for (int cz = 0; cz < 2; ++cz) {
          const uint32_t h = static_cast<uint32_t>(lo[0] + cx) ^
                             static_cast<uint32_t>(lo[1] + cy) * 2654435761u ^
                             static_cast<uint32_t>(lo[2] + cz) * 805459861u;
          cell.rows[k++] = offset + static_cast<int64_t>(h & mask);
        }
  }
}

// Trilinear weight of corner k = (cx, cy, cz) and its derivative along each axis.
template <typename scalar_t>
inline scalar_t weight(const scalar_t* f, int k) {
  const scalar_t wx = (k & 4) ? f[0] : scalar_t(1) - f[0];
  const scalar_t wy = (k & 2) ? f[1] : scalar_t(1) - f[1];
  const scalar_t wz = (k & 1) ? f[2] : scalar_t(1) - f[2];
  return wx * wy * wz;
}

template <typename scalar_t>
inline void clamp_point(const scalar_t* x, scalar_t* xc) {
  for (int d = 0; d < 3; ++d) xc[d] = std::min(std::max(x[d], scalar_t(0)), scalar_t(1));
}

Levels make_levels(const std::vector<int64_t>& resolution, const std::vector<int64_t>& offset,
                   const std::vector<bool>& dense, int64_t mask) {
  TORCH_CHECK(resolution.size() == offset.size() && offset.size() == dense.size(),
              "level lists differ in length");
  Levels lv{resolution, offset, {}, static_cast<uint32_t>(mask)};
  for (bool d : dense) lv.dense.push_back(d ? 1 : 0);
  return lv;
}

void check_inputs(const torch::Tensor& x, const torch::Tensor& table) {
  TORCH_CHECK(x.device().is_cpu() && table.device().is_cpu(), "the fused hash grid runs on the CPU");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3, "x must be (N, 3)");
  TORCH_CHECK(table.dim() == 2, "table must be (R, F)");
  TORCH_CHECK(x.scalar_type() == table.scalar_type(), "x and table must share a dtype");
}

// OpenMP pragmas cannot sit inside AT_DISPATCH's macro arguments: loops go through these helpers.
template <typename Body>
inline void parallel_static(int64_t n, const Body& body) {
#pragma omp parallel for schedule(static) num_threads(at::get_num_threads())
  for (int64_t i = 0; i < n; ++i) body(i);
}

template <typename Body>
inline void parallel_dynamic(int64_t n, const Body& body) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(at::get_num_threads())
  for (int64_t i = 0; i < n; ++i) body(i);
}

// Calls body(F) with F a compile-time 2 (the default layout: loops over features unroll) or nf.
template <typename Body>
inline void with_features(int64_t nf, const Body& body) {
  if (nf == 2) {
    body(std::integral_constant<int64_t, 2>{});
  } else {
    body(nf);
  }
}

}  // namespace

// Features (N, L * F), row-major, so the matrix products that read them need no copy. Samples
// are split in tiles of FORWARD_TILE rows, each tile computed (every level) and written by one
// thread; consecutive samples lie along a ray, so a tile's cells at each level are few and stay in
// that core's cache. (One thread per level over the whole batch, with feature-major output, was
// 1.6x slower once the transposing copy the MLPs need was counted.)
constexpr int64_t FORWARD_TILE = 256;

torch::Tensor encode_forward(torch::Tensor x, torch::Tensor table, std::vector<int64_t> resolution,
                             std::vector<int64_t> offset, std::vector<bool> dense, int64_t mask) {
  check_inputs(x, table);
  TORCH_CHECK(table.size(1) <= 8, "the fused hash grid takes at most 8 features per level");
  x = x.contiguous();
  table = table.contiguous();
  const Levels lv = make_levels(resolution, offset, dense, mask);
  const int64_t n = x.size(0), n_levels = lv.resolution.size(), nf = table.size(1);
  const int64_t width = n_levels * nf;
  auto out = torch::empty({n, width}, table.options());
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "encode_forward", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* tp = table.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    parallel_static((n + FORWARD_TILE - 1) / FORWARD_TILE, [&](int64_t tile) {
      const int64_t lo = tile * FORWARD_TILE, hi = std::min(n, lo + FORWARD_TILE);
      Cell<scalar_t> cell;
      scalar_t xc[3], acc[8];
      with_features(nf, [&](auto F) {
        for (int64_t l = 0; l < n_levels; ++l) {
          for (int64_t i = lo; i < hi; ++i) {
            clamp_point(xp + 3 * i, xc);
            locate(xc, lv.resolution[l], lv.dense[l], lv.offset[l], lv.mask, cell);
            for (int64_t f = 0; f < F; ++f) acc[f] = 0;
            for (int k = 0; k < 8; ++k) {
              const scalar_t w = weight(cell.frac, k);
              const scalar_t* t = tp + cell.rows[k] * F;
              for (int64_t f = 0; f < F; ++f) acc[f] += w * t[f];
            }
            for (int64_t f = 0; f < F; ++f) op[i * width + l * F + f] = acc[f];
          }
        }
      });
    });
  });
  return out;
}

// Gradient of the table, (R, F): zero except the rows the batch touched.
// grad_out is (N, L * F) as produced by the forward.
torch::Tensor encode_backward_table(torch::Tensor grad_out, torch::Tensor x, int64_t table_rows,
                                    std::vector<int64_t> resolution, std::vector<int64_t> offset,
                                    std::vector<bool> dense, int64_t mask) {
  const Levels lv = make_levels(resolution, offset, dense, mask);
  const int64_t n = x.size(0), n_levels = lv.resolution.size();
  const int64_t nf = grad_out.size(1) / n_levels;
  x = x.contiguous();
  // Level-major copy of the incoming gradient: each level's thread then reads contiguous memory.
  auto g_levels = grad_out.reshape({n, n_levels, nf}).transpose(0, 1).contiguous();  // (L, N, F)
  auto grad_table = torch::zeros({table_rows, nf}, grad_out.options());
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "encode_backward_table", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* gp = g_levels.data_ptr<scalar_t>();
    scalar_t* gt = grad_table.data_ptr<scalar_t>();
    parallel_dynamic(n_levels, [&](int64_t j) {
      const int64_t l = n_levels - 1 - j;  // finest (slowest) levels first
      Cell<scalar_t> cell;
      scalar_t xc[3];
      const scalar_t* gl = gp + l * n * nf;
      with_features(nf, [&](auto F) {
        for (int64_t i = 0; i < n; ++i) {
          clamp_point(xp + 3 * i, xc);
          locate(xc, lv.resolution[l], lv.dense[l], lv.offset[l], lv.mask, cell);
          const scalar_t* g = gl + i * F;
          for (int k = 0; k < 8; ++k) {
            const scalar_t w = weight(cell.frac, k);
            scalar_t* t = gt + cell.rows[k] * F;
            for (int64_t f = 0; f < F; ++f) t[f] += w * g[f];
          }
        }
      });
    });
  });
  return grad_table;
}

// Gradient of the positions, (N, 3); zero on an axis where x lies outside [0, 1] (clamped).
torch::Tensor encode_backward_x(torch::Tensor grad_out, torch::Tensor x, torch::Tensor table,
                                std::vector<int64_t> resolution, std::vector<int64_t> offset,
                                std::vector<bool> dense, int64_t mask) {
  const Levels lv = make_levels(resolution, offset, dense, mask);
  const int64_t n = x.size(0), n_levels = lv.resolution.size(), nf = table.size(1);
  x = x.contiguous();
  table = table.contiguous();
  grad_out = grad_out.contiguous();
  auto grad_x = torch::empty({n, 3}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "encode_backward_x", [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* tp = table.data_ptr<scalar_t>();
    const scalar_t* gp = grad_out.data_ptr<scalar_t>();
    scalar_t* gx = grad_x.data_ptr<scalar_t>();
    parallel_static(n, [&](int64_t i) {
      scalar_t xc[3];
      clamp_point(xp + 3 * i, xc);
      Cell<scalar_t> cell;
      scalar_t acc[3] = {0, 0, 0};
      for (int64_t l = 0; l < n_levels; ++l) {
        locate(xc, lv.resolution[l], lv.dense[l], lv.offset[l], lv.mask, cell);
        const scalar_t* g = gp + i * n_levels * nf + l * nf;
        const scalar_t* f = cell.frac;
        scalar_t level_acc[3] = {0, 0, 0};
        for (int k = 0; k < 8; ++k) {
          const scalar_t* t = tp + cell.rows[k] * nf;
          scalar_t dot = 0;
          for (int64_t c = 0; c < nf; ++c) dot += g[c] * t[c];
          const scalar_t wx = (k & 4) ? f[0] : scalar_t(1) - f[0];
          const scalar_t wy = (k & 2) ? f[1] : scalar_t(1) - f[1];
          const scalar_t wz = (k & 1) ? f[2] : scalar_t(1) - f[2];
          const scalar_t sx = (k & 4) ? scalar_t(1) : scalar_t(-1);
          const scalar_t sy = (k & 2) ? scalar_t(1) : scalar_t(-1);
          const scalar_t sz = (k & 1) ? scalar_t(1) : scalar_t(-1);
          level_acc[0] += dot * sx * wy * wz;
          level_acc[1] += dot * wx * sy * wz;
          level_acc[2] += dot * wx * wy * sz;
        }
        const scalar_t res = static_cast<scalar_t>(lv.resolution[l]);
        for (int d = 0; d < 3; ++d) acc[d] += level_acc[d] * res;
      }
      for (int d = 0; d < 3; ++d) {
        const scalar_t v = xp[3 * i + d];
        gx[3 * i + d] = (v >= scalar_t(0) && v <= scalar_t(1)) ? acc[d] : scalar_t(0);
      }
    });
  });
  return grad_x;
}

// One Adam step on the rows of `param` (viewed as (rows, cols)) whose gradient is not all zero;
// other rows, and their moments, are left as they are. Same arithmetic as torch.optim.Adam's
// single-tensor step: m = lerp(m, g, 1 - beta1); v = v * beta2 + (1 - beta2) g^2;
// p -= step_size * m / (sqrt(v) / bias_correction2_sqrt + eps). Returns the number of rows updated.
int64_t lazy_adam_step(torch::Tensor param, torch::Tensor grad, torch::Tensor exp_avg,
                       torch::Tensor exp_avg_sq, double step_size, double beta1, double beta2,
                       double eps, double bias_correction2_sqrt) {
  TORCH_CHECK(param.is_contiguous() && grad.is_contiguous() && exp_avg.is_contiguous() &&
                  exp_avg_sq.is_contiguous(),
              "lazy Adam needs contiguous tensors");
  TORCH_CHECK(param.sizes() == grad.sizes() && param.sizes() == exp_avg.sizes() &&
                  param.sizes() == exp_avg_sq.sizes(),
              "lazy Adam tensors differ in shape");
  const int64_t rows = param.dim() == 0 ? 1 : param.size(0);
  const int64_t cols = rows == 0 ? 0 : param.numel() / rows;
  int64_t updated = 0;
  AT_DISPATCH_FLOATING_TYPES(param.scalar_type(), "lazy_adam_step", [&] {
    scalar_t* p = param.data_ptr<scalar_t>();
    const scalar_t* g = grad.data_ptr<scalar_t>();
    scalar_t* m = exp_avg.data_ptr<scalar_t>();
    scalar_t* v = exp_avg_sq.data_ptr<scalar_t>();
    const scalar_t w1 = static_cast<scalar_t>(1.0 - beta1);
    const scalar_t b2 = static_cast<scalar_t>(beta2), w2 = static_cast<scalar_t>(1.0 - beta2);
    const scalar_t bc2 = static_cast<scalar_t>(bias_correction2_sqrt);
    const scalar_t e = static_cast<scalar_t>(eps), lr = static_cast<scalar_t>(step_size);
    std::vector<uint8_t> per_row(rows, 0);
    parallel_static(rows, [&](int64_t r) {
      const scalar_t* gr = g + r * cols;
      bool hit = false;
      for (int64_t c = 0; c < cols; ++c) hit |= gr[c] != scalar_t(0);
      if (!hit) return;
      per_row[r] = 1;
      for (int64_t c = r * cols; c < (r + 1) * cols; ++c) {
        const scalar_t gc = g[c];
        m[c] = m[c] + w1 * (gc - m[c]);
        v[c] = v[c] * b2 + w2 * gc * gc;
        p[c] -= lr * (m[c] / (std::sqrt(v[c]) / bc2 + e));
      }
    });
    for (uint8_t hit : per_row) updated += hit;
  });
  return updated;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("encode_forward", &encode_forward, "hash-grid features (N, L*F)");
  m.def("encode_backward_table", &encode_backward_table, "table gradient, touched rows only");
  m.def("encode_backward_x", &encode_backward_x, "position gradient (N, 3)");
  m.def("lazy_adam_step", &lazy_adam_step, "Adam on the rows with a non-zero gradient");
}
