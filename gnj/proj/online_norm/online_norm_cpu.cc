// Online Normalization (Chiley et al., NeurIPS 2019): training forward and backward on XLA:CPU.
//
// XLA FFI custom calls for gnj/proj/online_norm/layer.py, built and loaded by kernel.py.
// Heavy arrays are (N, D, C), C innermost; the N samples are k streams of n = N/k consecutive
// samples, each stream starting from the same (mu0, var0) or (u0, v0). Per channel, sample t:
//
//   forward:  s = sqrt(var + eps),  y_t = (x_t - mu) / s             (the PREVIOUS stats)
//             mean_y = mean_D(y_t),  mean_y2 = mean_D(y_t^2)
//             d = mu_x - mu = s * mean_y,  var_x = s^2 * (mean_y2 - mean_y^2)
//             var <- af * var + (1 - af) * var_x + af * (1 - af) * d^2,  mu <- mu + (1 - af) * d
//   backward: c = 1 - ab,  dx_t = (g_t - c * v * y_t) / s - c * u     (the PREVIOUS v, u)
//             v <- v * (1 - c * mean_y2) + mean_D(g_t * y_t)
//             u <- ab * u + (mean_D(g_t) - c * v_prev * mean_y) / s
//
// y_t and dx_t need only the previous stats, so each direction is ONE sweep over a sample
// (read x, write y; read g and y, write dx) that also accumulates the sums the next stats
// need. The variance is that of y, i.e. of x shifted by the running mean: well conditioned.
// Outputs: forward y, the (N, C) residuals s, mean_y, mean_y2 and the final mu, var averaged
// over the k streams; backward dx and the final u, v averaged over the streams. One thread:
// on the 2-core machine this was written on, a second one over channel halves was slower at
// every shape tried, and one over streams helped only streams=2 at small sizes
// (docs/proj/online_norm.md#cpu-kernel).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// The hot loops run over tiles of kTile pixel rows. Within a tile each channel's partial sums
// are kept in T (in registers when C is one 64-byte cache line, W > 0: 16 floats or 8 doubles;
// else in an L1-resident array, each row swept contiguously) and join the per-channel double
// accumulators after the tile: a float32 sum is float-rounded over at most kTile terms and
// double beyond; T = double is all double.
//
// Each row also prefetches the inputs' row about kAhead bytes further on: a forward sweep over
// (32, 3136, 256) float32 took 29 ms without it and 20 ms with it, against 16 ms for a plain
// read + write pass (2-core AMD EPYC, Zen 1).
constexpr int64_t kTile = 16;
constexpr int64_t kAhead = 4096;

template <typename T>
constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(T));

struct Shape {
  int64_t k, n, d, c;  // streams, samples per stream, pixels, channels
};

// One tile: `rows` rows of stride ld (= C); the first pf rows prefetch `ahead` elements on.
struct Tile {
  int64_t rows, ld, pf, ahead;
};

template <typename T>
inline void PrefetchRow(const T* row, int64_t w) {
  for (int64_t c = 0; c < w; c += kLine<T>) __builtin_prefetch(row + c);
}

// Moves a tile's per-channel partial sums (in T) into the double accumulators, leaving the
// partials zero for the next tile.
template <typename T>
inline void FlushPartials(int64_t nc, T* __restrict pa, T* __restrict pb, double* __restrict sa,
                          double* __restrict sb) {
  for (int64_t c = 0; c < nc; ++c) {
    sa[c] += static_cast<double>(pa[c]);
    sb[c] += static_cast<double>(pb[c]);
    pa[c] = pb[c] = T(0);
  }
}

// One forward tile: y = (x − m)·inv; Σy, Σy² added to sum, sq. W > 0 fixes C = W at compile
// time (partials in registers); W = 0 keeps the partials in ps, pq (c entries, zero on entry
// and on exit).
template <typename T, int64_t W>
inline void ForwardTile(const T* __restrict x, T* __restrict y, Tile tl, int64_t c_rt,
                        const T* __restrict m, const T* __restrict inv, double* __restrict sum,
                        double* __restrict sq, T* __restrict ps, T* __restrict pq) {
  const int64_t nc = W > 0 ? W : c_rt;
  T rs[W > 0 ? W : 1] = {}, rq[W > 0 ? W : 1] = {};
  if constexpr (W > 0) ps = rs, pq = rq;
  for (int64_t p = 0; p < tl.rows; ++p) {
    const T* __restrict xp = x + p * tl.ld;
    T* __restrict yp = y + p * tl.ld;
    if (p < tl.pf) PrefetchRow(xp + tl.ahead, nc);
    for (int64_t c = 0; c < nc; ++c) {
      const T v = (xp[c] - m[c]) * inv[c];
      yp[c] = v;
      ps[c] += v;
      pq[c] += v * v;
    }
  }
  FlushPartials(nc, ps, pq, sum, sq);
}

// One backward tile: dx = g·inv − a·y − b; Σg, Σg·y added to sg, sgy (partials as above).
template <typename T, int64_t W>
inline void BackwardTile(const T* __restrict g, const T* __restrict y, T* __restrict dx, Tile tl,
                         int64_t c_rt, const T* __restrict inv, const T* __restrict a,
                         const T* __restrict b, double* __restrict sg, double* __restrict sgy,
                         T* __restrict pg, T* __restrict pgy) {
  const int64_t nc = W > 0 ? W : c_rt;
  T rg[W > 0 ? W : 1] = {}, rgy[W > 0 ? W : 1] = {};
  if constexpr (W > 0) pg = rg, pgy = rgy;
  for (int64_t p = 0; p < tl.rows; ++p) {
    const T* __restrict gp = g + p * tl.ld;
    const T* __restrict yp = y + p * tl.ld;
    T* __restrict dp = dx + p * tl.ld;
    if (p < tl.pf) {
      PrefetchRow(gp + tl.ahead, nc);
      PrefetchRow(yp + tl.ahead, nc);
    }
    for (int64_t c = 0; c < nc; ++c) {
      const T gv = gp[c], yv = yp[c];
      dp[c] = gv * inv[c] - a[c] * yv - b[c];
      pg[c] += gv;
      pgy[c] += gv * yv;
    }
  }
  FlushPartials(nc, pg, pgy, sg, sgy);
}

// Calls tile(offset, Tile) for the tiles of sample `row` (global index), prefetching no
// further than the end of the buffer.
template <typename T, typename F>
inline void Tiles(Shape sh, int64_t row, F tile) {
  const int64_t row_bytes = sh.c * static_cast<int64_t>(sizeof(T));
  const int64_t ahead = (kAhead + row_bytes - 1) / row_bytes;  // pixel rows, >= 1
  const int64_t avail = (sh.k * sh.n - row) * sh.d;            // rows left in the buffer
  for (int64_t p0 = 0; p0 < sh.d; p0 += kTile) {
    const int64_t rows = std::min(kTile, sh.d - p0);
    const int64_t pf = std::clamp<int64_t>(avail - p0 - ahead, 0, rows);
    tile(p0 * sh.c, Tile{rows, sh.c, pf, ahead * sh.c});
  }
}

// Runs sample(row, a, b) for the samples of each of the sh.k streams in order (row: the
// global sample index), with the stream's per-channel state (a, b) starting at (a0, b0) and
// updated in place, and writes the mean of the streams' final states to (a_out, b_out).
template <typename T, typename F>
void EachSample(Shape sh, const T* a0, const T* b0, T* a_out, T* b_out, F sample) {
  const int64_t C = sh.c;
  std::vector<double> a(C), b(C), a_acc(C), b_acc(C);
  for (int64_t j = 0; j < sh.k; ++j) {
    std::copy(a0, a0 + C, a.begin());
    std::copy(b0, b0 + C, b.begin());
    for (int64_t t = 0; t < sh.n; ++t) sample(j * sh.n + t, a, b);
    for (int64_t c = 0; c < C; ++c) {
      a_acc[c] += a[c];
      b_acc[c] += b[c];
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    a_out[c] = static_cast<T>(a_acc[c] / static_cast<double>(sh.k));
    b_out[c] = static_cast<T>(b_acc[c] / static_cast<double>(sh.k));
  }
}

template <typename T>
void ForwardAll(const T* x, const T* mu0, const T* var0, double af, double eps, Shape sh, T* y,
                T* s_out, T* my_out, T* my2_out, T* mu_out, T* var_out) {
  constexpr int64_t L = kLine<T>;
  const int64_t C = sh.c;
  std::vector<double> sum(C), sq(C), s(C);
  std::vector<T> mt(C), invt(C), ps(C), pq(C);  // μ and 1/s in T for the hot loop; partials (0)
  const double inv_d = 1.0 / static_cast<double>(sh.d);
  EachSample(sh, mu0, var0, mu_out, var_out, [&](int64_t row, std::vector<double>& mu,
                                                 std::vector<double>& var) {
    for (int64_t c = 0; c < C; ++c) {
      s[c] = std::sqrt(var[c] + eps);
      mt[c] = static_cast<T>(mu[c]);
      invt[c] = static_cast<T>(1.0 / s[c]);
      sum[c] = sq[c] = 0.0;
    }
    const T* xt = x + row * sh.d * C;
    T* yt = y + row * sh.d * C;
    Tiles<T>(sh, row, [&](int64_t off, Tile tl) {
      if (C == L)
        ForwardTile<T, L>(xt + off, yt + off, tl, C, mt.data(), invt.data(), sum.data(),
                          sq.data(), nullptr, nullptr);
      else
        ForwardTile<T, 0>(xt + off, yt + off, tl, C, mt.data(), invt.data(), sum.data(),
                          sq.data(), ps.data(), pq.data());
    });
    for (int64_t c = 0; c < C; ++c) {
      const double my = sum[c] * inv_d, my2 = sq[c] * inv_d;
      const double d = s[c] * my;  // μ_x − μ_{t−1}
      const double var_x = std::max(0.0, s[c] * s[c] * (my2 - my * my));
      s_out[row * C + c] = static_cast<T>(s[c]);
      my_out[row * C + c] = static_cast<T>(my);
      my2_out[row * C + c] = static_cast<T>(my2);
      var[c] = af * var[c] + (1.0 - af) * var_x + af * (1.0 - af) * d * d;
      mu[c] += (1.0 - af) * d;
    }
  });
}

template <typename T>
void BackwardAll(const T* g, const T* y, const T* s_in, const T* my_in, const T* my2_in,
                 const T* u0, const T* v0, double ab, Shape sh, T* dx, T* u_out, T* v_out) {
  constexpr int64_t L = kLine<T>;
  const int64_t C = sh.c;
  const double cb = 1.0 - ab;
  std::vector<double> inv(C), sg(C), sgy(C);
  // 1/s, c·v/s (the coefficient of y) and c·u in T for the hot loop; partial sums (0)
  std::vector<T> invt(C), at(C), bt(C), pg(C), pgy(C);
  const double inv_d = 1.0 / static_cast<double>(sh.d);
  EachSample(sh, u0, v0, u_out, v_out, [&](int64_t row, std::vector<double>& u,
                                           std::vector<double>& v) {
    for (int64_t c = 0; c < C; ++c) {
      inv[c] = 1.0 / static_cast<double>(s_in[row * C + c]);
      invt[c] = static_cast<T>(inv[c]);
      at[c] = static_cast<T>(cb * v[c] * inv[c]);
      bt[c] = static_cast<T>(cb * u[c]);
      sg[c] = sgy[c] = 0.0;
    }
    const int64_t base = row * sh.d * C;
    const T* gt = g + base;
    const T* yt = y + base;
    T* dxt = dx + base;
    Tiles<T>(sh, row, [&](int64_t off, Tile tl) {
      if (C == L)
        BackwardTile<T, L>(gt + off, yt + off, dxt + off, tl, C, invt.data(), at.data(),
                           bt.data(), sg.data(), sgy.data(), nullptr, nullptr);
      else
        BackwardTile<T, 0>(gt + off, yt + off, dxt + off, tl, C, invt.data(), at.data(),
                           bt.data(), sg.data(), sgy.data(), pg.data(), pgy.data());
    });
    for (int64_t c = 0; c < C; ++c) {
      const double my = my_in[row * C + c], my2 = my2_in[row * C + c];
      const double v_prev = v[c];
      v[c] = v_prev * (1.0 - cb * my2) + sgy[c] * inv_d;
      u[c] = ab * u[c] + (sg[c] * inv_d - cb * v_prev * my) * inv[c];
    }
  });
}

ffi::Error CheckShape(ffi::AnyBuffer::Dimensions dims, int64_t channels, int64_t streams,
                      Shape* sh) {
  if (dims[2] != channels)
    return ffi::Error::InvalidArgument("online_norm: the state must be (C,) for x (N, D, C)");
  if (streams < 1 || dims[0] % streams != 0)
    return ffi::Error::InvalidArgument("online_norm: streams must divide N");
  *sh = Shape{streams, dims[0] / streams, dims[1], dims[2]};
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error Forward(ffi::Buffer<DT, 3> x, ffi::Buffer<DT, 1> mu0, ffi::Buffer<DT, 1> var0,
                   double alpha_f, double eps, int64_t streams, ffi::ResultBuffer<DT, 3> y,
                   ffi::ResultBuffer<DT, 2> s, ffi::ResultBuffer<DT, 2> mean_y,
                   ffi::ResultBuffer<DT, 2> mean_y2, ffi::ResultBuffer<DT, 1> mu,
                   ffi::ResultBuffer<DT, 1> var) {
  Shape sh;
  if (ffi::Error e = CheckShape(x.dimensions(), mu0.dimensions()[0], streams, &sh); e.failure())
    return e;
  ForwardAll(x.typed_data(), mu0.typed_data(), var0.typed_data(), alpha_f, eps, sh,
             y->typed_data(), s->typed_data(), mean_y->typed_data(), mean_y2->typed_data(),
             mu->typed_data(), var->typed_data());
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error Backward(ffi::Buffer<DT, 3> g, ffi::Buffer<DT, 3> y, ffi::Buffer<DT, 2> s,
                    ffi::Buffer<DT, 2> mean_y, ffi::Buffer<DT, 2> mean_y2,
                    ffi::Buffer<DT, 1> u0, ffi::Buffer<DT, 1> v0, double alpha_b,
                    int64_t streams, ffi::ResultBuffer<DT, 3> dx, ffi::ResultBuffer<DT, 1> u,
                    ffi::ResultBuffer<DT, 1> v) {
  Shape sh;
  if (ffi::Error e = CheckShape(g.dimensions(), u0.dimensions()[0], streams, &sh); e.failure())
    return e;
  BackwardAll(g.typed_data(), y.typed_data(), s.typed_data(), mean_y.typed_data(),
              mean_y2.typed_data(), u0.typed_data(), v0.typed_data(), alpha_b, sh,
              dx->typed_data(), u->typed_data(), v->typed_data());
  return ffi::Error::Success();
}

template <ffi::DataType DT>
auto ForwardBinding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::Buffer<DT, 3>>()  // x (N, D, C)
      .template Arg<ffi::Buffer<DT, 1>>()  // mu0 (C,)
      .template Arg<ffi::Buffer<DT, 1>>()  // var0 (C,)
      .template Attr<double>("alpha_f")
      .template Attr<double>("eps")
      .template Attr<int64_t>("streams")
      .template Ret<ffi::Buffer<DT, 3>>()  // y
      .template Ret<ffi::Buffer<DT, 2>>()  // s (N, C)
      .template Ret<ffi::Buffer<DT, 2>>()  // mean_y
      .template Ret<ffi::Buffer<DT, 2>>()  // mean_y2
      .template Ret<ffi::Buffer<DT, 1>>()  // mu (C,)
      .template Ret<ffi::Buffer<DT, 1>>();  // var
}

template <ffi::DataType DT>
auto BackwardBinding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::Buffer<DT, 3>>()  // g (N, D, C)
      .template Arg<ffi::Buffer<DT, 3>>()  // y
      .template Arg<ffi::Buffer<DT, 2>>()  // s (N, C)
      .template Arg<ffi::Buffer<DT, 2>>()  // mean_y
      .template Arg<ffi::Buffer<DT, 2>>()  // mean_y2
      .template Arg<ffi::Buffer<DT, 1>>()  // u0 (C,)
      .template Arg<ffi::Buffer<DT, 1>>()  // v0
      .template Attr<double>("alpha_b")
      .template Attr<int64_t>("streams")
      .template Ret<ffi::Buffer<DT, 3>>()  // dx
      .template Ret<ffi::Buffer<DT, 1>>()  // u (C,)
      .template Ret<ffi::Buffer<DT, 1>>();  // v
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GnjOnlineNormFwdF32, Forward<ffi::F32>, ForwardBinding<ffi::F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(GnjOnlineNormFwdF64, Forward<ffi::F64>, ForwardBinding<ffi::F64>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(GnjOnlineNormBwdF32, Backward<ffi::F32>,
                              BackwardBinding<ffi::F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(GnjOnlineNormBwdF64, Backward<ffi::F64>,
                              BackwardBinding<ffi::F64>());
