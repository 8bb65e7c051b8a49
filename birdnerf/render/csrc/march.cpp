// Fused CPU marching of evaluation rays through an occupancy grid.
//
// The twin of birdnerf/render/sampling.py: march_rays(..., grid, max_samples_per_ray=cap) with
// uniform steps and no stratification, in one pass over the rays instead of one tensor per step.
// Ray r's intervals end at b_j = min(t_near + j * step, t_far) for j = 1, 2, ...; the first
// starts at t_near, every other at the previous end; an interval is kept when it has a length and
// its midpoint lies in the box and in an occupied cell. The same float32 operations, rounded the
// same way, give the same samples: torch's addcmul (step positions, the midpoint in cell units)
// rounds once, as std::fma does; everything else is built with -ffp-contract=off.
//
// A ray keeps its first `cap` samples. Its resume point is the end of its last kept sample when
// it has more occupied samples than that, and t_far otherwise.
//
// Parallelism (OpenMP, at most torch's thread count): over rays, in two passes: each ray marches
// into its own `cap` slots of a scratch buffer, then, after a prefix sum of the counts, copies
// them to their packed place with the sample's point o + d * mid and direction.
//
// composite_round renders a round's samples behind what their rays gathered in earlier rounds:
// the twin of birdnerf/render/volume.py's Gathered.add, in one pass over each ray's samples
// instead of a dozen tensor operations. Same formulas in the same order (the per-ray prefix sum
// of optical depth in double, as exclusive_sum_per_ray); std::exp may round the last bit
// differently from torch's vectorised exp.

#include <torch/extension.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

struct Grid {
  const bool* occupied;
  int64_t rx, ry, rz;

  // The reference's OccupancyGrid._index_of_axes and query: clamp, truncate, look up, and
  // require the point to lie in the box (faces included).
  bool query(float x, float y, float z) const {
    const bool inside = x >= 0.f && x <= static_cast<float>(rx) && y >= 0.f &&
                        y <= static_cast<float>(ry) && z >= 0.f && z <= static_cast<float>(rz);
    if (!inside) return false;
    const int64_t i = static_cast<int64_t>(std::min(std::max(x, 0.f), static_cast<float>(rx - 1)));
    const int64_t j = static_cast<int64_t>(std::min(std::max(y, 0.f), static_cast<float>(ry - 1)));
    const int64_t k = static_cast<int64_t>(std::min(std::max(z, 0.f), static_cast<float>(rz - 1)));
    return occupied[(i * ry + j) * rz + k];
  }
};

void check_rays(const torch::Tensor& t, int64_t n, int64_t cols, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(), what,
              " must be a contiguous float32 CPU tensor");
  TORCH_CHECK(cols == 0 ? (t.dim() == 1 && t.size(0) == n) : (t.dim() == 2 && t.size(0) == n && t.size(1) == cols),
              what, " has the wrong shape");
}

}  // namespace

// origins, dirs, o_cells, d_cells: (N, 3); t_near, t_far: (N,); occupied: (rx, ry, rz) bool.
// o_cells and d_cells are the rays in cell units, (origins - lo) / cell and dirs / cell.
// Returns ray_indices (S,) int64, t_starts (S,), t_ends (S,), t_resume (N,), points (S, 3) and
// sample directions (S, 3).
std::vector<torch::Tensor> march_occupied(torch::Tensor origins, torch::Tensor dirs,
                                          torch::Tensor o_cells, torch::Tensor d_cells,
                                          torch::Tensor t_near, torch::Tensor t_far, double step,
                                          torch::Tensor occupied, int64_t cap) {
  const int64_t n = origins.size(0);
  check_rays(origins, n, 3, "origins");
  check_rays(dirs, n, 3, "dirs");
  check_rays(o_cells, n, 3, "o_cells");
  check_rays(d_cells, n, 3, "d_cells");
  check_rays(t_near, n, 0, "t_near");
  check_rays(t_far, n, 0, "t_far");
  TORCH_CHECK(occupied.scalar_type() == torch::kBool && occupied.dim() == 3 && occupied.is_contiguous() &&
                  occupied.device().is_cpu(),
              "occupied must be a contiguous (rx, ry, rz) bool CPU tensor");
  TORCH_CHECK(cap >= 1, "cap must be at least 1");
  TORCH_CHECK(step > 0, "step must be positive");
  const Grid grid{occupied.data_ptr<bool>(), occupied.size(0), occupied.size(1), occupied.size(2)};
  const float a = static_cast<float>(step);
  const float* tn = t_near.data_ptr<float>();
  const float* tf = t_far.data_ptr<float>();
  const float* oc = o_cells.data_ptr<float>();
  const float* dc = d_cells.data_ptr<float>();

  std::vector<float> starts(static_cast<size_t>(n * cap)), ends(static_cast<size_t>(n * cap));
  std::vector<int64_t> counts(static_cast<size_t>(n) + 1, 0);
  auto t_resume = torch::empty({n}, t_near.options());
  float* resume = t_resume.data_ptr<float>();

#pragma omp parallel for schedule(dynamic, 64) num_threads(at::get_num_threads())
  for (int64_t r = 0; r < n; ++r) {
    const float t0 = tn[r], t1 = tf[r];
    resume[r] = t1;
    if (!(t1 > t0)) continue;
    // _interval_counts: ceil((t_far - t_near) / step - 1), at least 0, plus the first interval.
    const float span = std::max(std::ceil((t1 - t0) / a - 1.f), 0.f);
    const int64_t intervals = static_cast<int64_t>(span) + 1;
    const float* o = oc + 3 * r;
    const float* d = dc + 3 * r;
    float* my_starts = starts.data() + r * cap;
    float* my_ends = ends.data() + r * cap;
    int64_t kept = 0;
    float start = t0;
    for (int64_t j = 0; j < intervals; ++j) {
      const float end = std::min(std::fma(static_cast<float>(j + 1), a, t0), t1);
      if (end > start) {
        const float mid = 0.5f * (start + end);
        if (grid.query(std::fma(d[0], mid, o[0]), std::fma(d[1], mid, o[1]), std::fma(d[2], mid, o[2]))) {
          if (kept == cap) {  // one more occupied sample than kept: resume after the last kept
            resume[r] = my_ends[cap - 1];
            break;
          }
          my_starts[kept] = start;
          my_ends[kept] = end;
          ++kept;
        }
      }
      start = end;
    }
    counts[r + 1] = kept;
  }
  for (int64_t r = 0; r < n; ++r) counts[r + 1] += counts[r];
  const int64_t total = counts[n];

  auto float_opts = t_near.options();
  auto ray_indices = torch::empty({total}, float_opts.dtype(torch::kInt64));
  auto t_starts = torch::empty({total}, float_opts);
  auto t_ends = torch::empty({total}, float_opts);
  auto points = torch::empty({total, 3}, float_opts);
  auto sample_dirs = torch::empty({total, 3}, float_opts);
  int64_t* ri = ray_indices.data_ptr<int64_t>();
  float* ts = t_starts.data_ptr<float>();
  float* te = t_ends.data_ptr<float>();
  float* pts = points.data_ptr<float>();
  float* sd = sample_dirs.data_ptr<float>();
  const float* op = origins.data_ptr<float>();
  const float* dp = dirs.data_ptr<float>();

#pragma omp parallel for schedule(static) num_threads(at::get_num_threads())
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t k = 0, s = counts[r]; s < counts[r + 1]; ++k, ++s) {
      const float t0 = starts[r * cap + k], t1 = ends[r * cap + k];
      const float mid = 0.5f * (t0 + t1);
      ri[s] = r;
      ts[s] = t0;
      te[s] = t1;
      for (int c = 0; c < 3; ++c) {
        pts[3 * s + c] = op[3 * r + c] + dp[3 * r + c] * mid;
        sd[3 * s + c] = dp[3 * r + c];
      }
    }
  }
  return {ray_indices, t_starts, t_ends, t_resume, points, sample_dirs};
}

// rays: (S,) int64 ray of each sample, each ray's samples consecutive and in marching order;
// sigmas, t_starts, t_ends: (S,); rgbs: (S, 3). The rays' state, updated in place: rgb (N, 3),
// opacity, depth_sum, optical (N,), and first_hit (N,) (an empty tensor when not asked for),
// set where the optical depth first reaches hit_optical (-log(1 - first-hit opacity)).
void composite_round(torch::Tensor rays, torch::Tensor sigmas, torch::Tensor rgbs,
                     torch::Tensor t_starts, torch::Tensor t_ends, torch::Tensor rgb,
                     torch::Tensor opacity, torch::Tensor depth_sum, torch::Tensor optical,
                     torch::Tensor first_hit, double hit_optical) {
  const int64_t n_samples = rays.size(0), n = optical.size(0);
  TORCH_CHECK(rays.device().is_cpu() && rays.scalar_type() == torch::kInt64 && rays.is_contiguous() &&
                  rays.dim() == 1,
              "rays must be a contiguous int64 CPU vector");
  check_rays(sigmas, n_samples, 0, "sigmas");
  check_rays(t_starts, n_samples, 0, "t_starts");
  check_rays(t_ends, n_samples, 0, "t_ends");
  check_rays(rgbs, n_samples, 3, "rgbs");
  check_rays(rgb, n, 3, "rgb");
  check_rays(opacity, n, 0, "opacity");
  check_rays(depth_sum, n, 0, "depth_sum");
  check_rays(optical, n, 0, "optical");
  const bool want_hit = first_hit.numel() > 0;
  if (want_hit) check_rays(first_hit, n, 0, "first_hit");

  const int64_t* ri = rays.data_ptr<int64_t>();
  std::vector<int64_t> begin;  // first sample of each run of one ray
  for (int64_t s = 0; s < n_samples; ++s) {
    if (s == 0 || ri[s] != ri[s - 1]) begin.push_back(s);
  }
  begin.push_back(n_samples);
  const int64_t runs = static_cast<int64_t>(begin.size()) - 1;

  const float* sg = sigmas.data_ptr<float>();
  const float* c = rgbs.data_ptr<float>();
  const float* ts = t_starts.data_ptr<float>();
  const float* te = t_ends.data_ptr<float>();
  float* out_rgb = rgb.data_ptr<float>();
  float* out_opacity = opacity.data_ptr<float>();
  float* out_depth = depth_sum.data_ptr<float>();
  float* out_optical = optical.data_ptr<float>();
  float* out_hit = want_hit ? first_hit.data_ptr<float>() : nullptr;
  const float hit_at = static_cast<float>(hit_optical);

#pragma omp parallel for schedule(static) num_threads(at::get_num_threads())
  for (int64_t run = 0; run < runs; ++run) {
    const int64_t r = ri[begin[run]];
    const float before = out_optical[r];  // optical depth of the earlier rounds
    const float carried = std::exp(-before);
    double prefix = 0.0;  // this round's optical depth before the sample
    for (int64_t s = begin[run]; s < begin[run + 1]; ++s) {
      const float step = sg[s] * (te[s] - ts[s]);
      const float exclusive = static_cast<float>(prefix);
      const float w = std::exp(-exclusive) * -std::expm1(-step) * carried;
      out_opacity[r] += w;
      for (int k = 0; k < 3; ++k) out_rgb[3 * r + k] += w * c[3 * s + k];
      out_depth[r] += w * 0.5f * (ts[s] + te[s]);
      if (want_hit && before + exclusive + step >= hit_at) out_hit[r] = std::min(out_hit[r], ts[s]);
      prefix += static_cast<double>(step);
      out_optical[r] += step;  // the weights above read `before`, the optical depth at round start
    }
  }
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("march_occupied", &march_occupied, "occupied samples of evaluation rays, packed");
  m.def("composite_round", &composite_round, "a round's samples rendered behind earlier rounds");
}
