// 2-D convolutions on XLA:CPU through oneDNN: forward, input gradient, weight gradient.
//
// XLA FFI custom calls for gnj/nn/onednn_conv.py, built and loaded by onednn_kernel.py. Layouts
// are gnj's: activations channels-last (N, H, W, C), kernels (KH, KW, C/G, O) for G groups
// (output channel o belongs to group o / (O/G)). With dy = ∂L/∂y:
//
//   forward:      y[n,i,j,o]  = Σ_{a,b,c} x[n, s_h·i + d_h·a − p_t, s_w·j + d_w·b − p_l, g·C/G + c]
//                                         · w[a, b, c, o],   g = o / (O/G), x = 0 outside
//   input grad:   dx = the adjoint of x ↦ y at fixed w        (convolution_backward_data)
//   weight grad:  dw = the adjoint of w ↦ y at fixed x        (convolution_backward_weights)
//
// Activations and their gradients are bound to oneDNN as plain NHWC; the kernel is declared
// `format_tag::any`, so oneDNN picks its blocked layout, and one reorder inside the call moves
// the kernel (or the weight gradient) between gnj's (KH, KW, C/G, O) and that layout. Binding
// the kernel as fixed HWIO instead made oneDNN's backward passes fall back to a generic GEMM
// kernel, 2–9× slower (docs/performance.md).
//
// Primitives are created once per convolution geometry and kept in a process-wide map guarded
// by a mutex; executions are concurrent-safe because every call passes its own scratchpad
// (scratchpad_mode::user, a per-thread buffer) and its own memory objects.
//
// Threads: each geometry carries the OpenMP thread count it is created and run with (0: the
// OpenMP default, i.e. $OMP_NUM_THREADS or the cores this process may use); the caller picks
// 1 for small convs, where forking a team costs more than it saves. Multi-threaded executions
// are serialised by a mutex: XLA may run two independent convs at once on two of its threads,
// and two OpenMP teams on the same cores would oversubscribe them.

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Dims = memory::dims;

enum Pass : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// One convolution: batch, input map and channels, output map and channels, kernel, strides,
// paddings (top, bottom, left, right), dilations (1 = none), groups, OpenMP threads (0: the
// default), the pass and the dtype.
constexpr int kFields = 21;
struct Geometry {
  int64_t n, h, w, c, oh, ow, o, kh, kw, sh, sw, pt, pb, pl, pr, dh, dw, g, threads, pass, dtype;
  std::array<int64_t, kFields> Key() const {
    return {n,  h,  w,  c,  oh, ow, o, kh,      kw,   sh,   sw,
            pt, pb, pl, pr, dh, dw, g, threads, pass, dtype};
  }
};

// Sets the calling thread's OpenMP team size for the scope (threads > 0), as oneDNN reads it
// both when it creates a primitive and when it runs one.
class ThreadScope {
 public:
  explicit ThreadScope(int64_t threads) : saved_(omp_get_max_threads()), set_(threads > 0) {
    if (set_) omp_set_num_threads(static_cast<int>(threads));
  }
  ~ThreadScope() {
    if (set_) omp_set_num_threads(saved_);
  }

 private:
  int saved_;
  bool set_;
};

// What one call needs: the conv primitive, the kernel's layout for it, and the reorder between
// gnj's kernel layout and that one (to it for forward / input grad, from it for weight grad).
struct Plan {
  dnnl::primitive conv;
  dnnl::primitive reorder;
  memory::desc x_md, y_md, w_user_md, w_prim_md;
  bool reorder_needed = false;
  size_t scratch_bytes = 0;
  std::string impl;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::data_type DataType(int64_t dtype) {
  return dtype == 1 ? memory::data_type::bf16 : memory::data_type::f32;
}

// gnj's (KH, KW, C/G, O) kernel as a strided oneDNN descriptor of logical dims (O, C, KH, KW),
// or (G, O/G, C/G, KH, KW) when grouped.
memory::desc UserKernel(const Geometry& q) {
  const int64_t ci = q.c / q.g, o = q.o;
  const memory::data_type dt = DataType(q.dtype);
  if (q.g == 1) return memory::desc({o, ci, q.kh, q.kw}, dt, Dims{1, o, q.kw * ci * o, ci * o});
  return memory::desc({q.g, o / q.g, ci, q.kh, q.kw}, dt,
                      Dims{o / q.g, 1, o, q.kw * ci * o, ci * o});
}

std::unique_ptr<Plan> MakePlan(const Geometry& q) {
  ThreadScope threads(q.threads);
  auto plan = std::make_unique<Plan>();
  dnnl::engine& eng = Engine();
  const memory::data_type dt = DataType(q.dtype);
  plan->x_md = memory::desc({q.n, q.c, q.h, q.w}, dt, memory::format_tag::nhwc);
  plan->y_md = memory::desc({q.n, q.o, q.oh, q.ow}, dt, memory::format_tag::nhwc);
  plan->w_user_md = UserKernel(q);
  const memory::desc w_any(plan->w_user_md.get_dims(), dt, memory::format_tag::any);
  const Dims strides{q.sh, q.sw}, dilates{q.dh - 1, q.dw - 1}, pad_l{q.pt, q.pl},
      pad_r{q.pb, q.pr};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const auto algo = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::primitive_desc fwd(eng, dnnl::prop_kind::forward_training, algo,
                                                plan->x_md, w_any, plan->y_md, strides, dilates,
                                                pad_l, pad_r, attr);
  dnnl::primitive_desc_base pd = fwd;
  if (q.pass == kForward) {
    plan->w_prim_md = fwd.weights_desc();
    plan->conv = dnnl::convolution_forward(fwd);
  } else if (q.pass == kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc bwd(eng, algo, plan->x_md, w_any, plan->y_md,
                                                        strides, dilates, pad_l, pad_r, fwd,
                                                        attr);
    plan->w_prim_md = bwd.weights_desc();
    plan->conv = dnnl::convolution_backward_data(bwd);
    pd = bwd;
  } else {
    dnnl::convolution_backward_weights::primitive_desc bwd(eng, algo, plan->x_md, w_any,
                                                           plan->y_md, strides, dilates, pad_l,
                                                           pad_r, fwd, attr);
    plan->w_prim_md = bwd.diff_weights_desc();
    plan->conv = dnnl::convolution_backward_weights(bwd);
    pd = bwd;
  }
  plan->impl = pd.impl_info_str();
  plan->scratch_bytes = pd.scratchpad_desc().get_size();
  plan->reorder_needed = plan->w_prim_md != plan->w_user_md;
  if (plan->reorder_needed) {
    const bool to_prim = q.pass != kBackwardWeights;
    dnnl::reorder::primitive_desc rpd(eng, to_prim ? plan->w_user_md : plan->w_prim_md, eng,
                                      to_prim ? plan->w_prim_md : plan->w_user_md, attr);
    plan->reorder = dnnl::reorder(rpd);
    plan->scratch_bytes = std::max(plan->scratch_bytes, rpd.scratchpad_desc().get_size());
  }
  return plan;
}

std::mutex plans_mutex;
std::map<std::array<int64_t, kFields>, std::unique_ptr<Plan>> plans;
std::mutex team_mutex;  // one multi-threaded execution at a time

// The cached plan for q (created on first use); throws dnnl::error if oneDNN rejects q.
const Plan& GetPlan(const Geometry& q) {
  std::lock_guard<std::mutex> lock(plans_mutex);
  auto& slot = plans[q.Key()];
  if (!slot) {
    try {
      slot = MakePlan(q);
    } catch (...) {
      plans.erase(q.Key());
      throw;
    }
  }
  return *slot;
}

// A per-thread, 64-byte aligned buffer that only grows.
struct Buffer {
  void* data = nullptr;
  size_t size = 0;
  void* Get(size_t bytes) {
    if (bytes > size) {
      std::free(data);
      size = (bytes + 63) / 64 * 64;
      data = std::aligned_alloc(64, size);
      if (data == nullptr) size = 0;
    }
    return data;
  }
  ~Buffer() { std::free(data); }
};

void Run(const Geometry& q, void* x, void* w, void* y) {
  const Plan& plan = GetPlan(q);
  std::unique_lock<std::mutex> team(team_mutex, std::defer_lock);
  if (q.threads != 1) team.lock();
  ThreadScope threads(q.threads);
  thread_local Buffer scratch_buf, kernel_buf;
  thread_local dnnl::stream stream(Engine());
  dnnl::engine& eng = Engine();
  const int64_t scratch_bytes = std::max<int64_t>(static_cast<int64_t>(plan.scratch_bytes), 1);
  memory scratch(memory::desc({scratch_bytes}, memory::data_type::u8, memory::format_tag::a),
                 eng, scratch_buf.Get(static_cast<size_t>(scratch_bytes)));
  memory xm(plan.x_md, eng, x), ym(plan.y_md, eng, y), wu(plan.w_user_md, eng, w);
  memory wp = wu;
  if (plan.reorder_needed)
    wp = memory(plan.w_prim_md, eng, kernel_buf.Get(plan.w_prim_md.get_size()));
  if (q.pass == kForward) {
    if (plan.reorder_needed)
      plan.reorder.execute(stream, {{DNNL_ARG_FROM, wu}, {DNNL_ARG_TO, wp},
                                    {DNNL_ARG_SCRATCHPAD, scratch}});
    plan.conv.execute(stream, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wp}, {DNNL_ARG_DST, ym},
                               {DNNL_ARG_SCRATCHPAD, scratch}});
  } else if (q.pass == kBackwardData) {  // x is dx (written), y is dy
    if (plan.reorder_needed)
      plan.reorder.execute(stream, {{DNNL_ARG_FROM, wu}, {DNNL_ARG_TO, wp},
                                    {DNNL_ARG_SCRATCHPAD, scratch}});
    plan.conv.execute(stream, {{DNNL_ARG_DIFF_SRC, xm}, {DNNL_ARG_WEIGHTS, wp},
                               {DNNL_ARG_DIFF_DST, ym}, {DNNL_ARG_SCRATCHPAD, scratch}});
  } else {  // w is dw (written)
    plan.conv.execute(stream, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_DIFF_WEIGHTS, wp},
                               {DNNL_ARG_DIFF_DST, ym}, {DNNL_ARG_SCRATCHPAD, scratch}});
    if (plan.reorder_needed)
      plan.reorder.execute(stream, {{DNNL_ARG_FROM, wp}, {DNNL_ARG_TO, wu},
                                    {DNNL_ARG_SCRATCHPAD, scratch}});
  }
  stream.wait();
}

// Geometry from the activation (N, H, W, C), kernel (KH, KW, C/G, O) and output (N, OH, OW, O)
// dimensions and the attribute conv = (sh, sw, pt, pb, pl, pr, dh, dw, G, threads).
ffi::Error MakeGeometry(ffi::Span<const int64_t> xd, ffi::Span<const int64_t> wd,
                        ffi::Span<const int64_t> yd, ffi::Span<const int64_t> conv, int64_t pass,
                        int64_t dtype, Geometry* q) {
  if (conv.size() != 10)
    return ffi::Error::InvalidArgument("onednn_conv: attribute conv must have 10 entries");
  *q = Geometry{xd[0],   xd[1],   xd[2],   xd[3],   yd[1],   yd[2],   yd[3],
                wd[0],   wd[1],   conv[0], conv[1], conv[2], conv[3], conv[4],
                conv[5], conv[6], conv[7], conv[8], conv[9], pass,    dtype};
  if (q->g < 1 || q->c % q->g || q->o % q->g || wd[2] != q->c / q->g || wd[3] != q->o ||
      yd[0] != q->n)
    return ffi::Error::InvalidArgument("onednn_conv: inconsistent shapes");
  return ffi::Error::Success();
}

ffi::Error Execute(const Geometry& q, void* x, void* w, void* y) {
  try {
    Run(q, x, w, y);
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("onednn_conv: ") + e.what());
  }
  return ffi::Error::Success();
}

constexpr int64_t DtypeCode(ffi::DataType dt) { return dt == ffi::DataType::BF16 ? 1 : 0; }

template <ffi::DataType DT>
ffi::Error Forward(ffi::Buffer<DT, 4> x, ffi::Buffer<DT, 4> w, ffi::Span<const int64_t> conv,
                   ffi::ResultBuffer<DT, 4> y) {
  Geometry q;
  if (auto e = MakeGeometry(x.dimensions(), w.dimensions(), y->dimensions(), conv, kForward,
                            DtypeCode(DT), &q);
      e.failure())
    return e;
  return Execute(q, x.untyped_data(), w.untyped_data(), y->untyped_data());
}

template <ffi::DataType DT>
ffi::Error BackwardData(ffi::Buffer<DT, 4> dy, ffi::Buffer<DT, 4> w,
                        ffi::Span<const int64_t> conv, ffi::ResultBuffer<DT, 4> dx) {
  Geometry q;
  if (auto e = MakeGeometry(dx->dimensions(), w.dimensions(), dy.dimensions(), conv,
                            kBackwardData, DtypeCode(DT), &q);
      e.failure())
    return e;
  return Execute(q, dx->untyped_data(), w.untyped_data(), dy.untyped_data());
}

template <ffi::DataType DT>
ffi::Error BackwardWeights(ffi::Buffer<DT, 4> x, ffi::Buffer<DT, 4> dy,
                           ffi::Span<const int64_t> conv, ffi::ResultBuffer<DT, 4> dw) {
  Geometry q;
  if (auto e = MakeGeometry(x.dimensions(), dw->dimensions(), dy.dimensions(), conv,
                            kBackwardWeights, DtypeCode(DT), &q);
      e.failure())
    return e;
  return Execute(q, x.untyped_data(), dw->untyped_data(), dy.untyped_data());
}

template <ffi::DataType DT>
auto Binding() {
  return ffi::Ffi::Bind()
      .Arg<ffi::Buffer<DT, 4>>()
      .template Arg<ffi::Buffer<DT, 4>>()
      .template Attr<ffi::Span<const int64_t>>("conv")
      .template Ret<ffi::Buffer<DT, 4>>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GnjOnednnConvFwdF32, Forward<ffi::F32>, Binding<ffi::F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(GnjOnednnConvBwdDataF32, BackwardData<ffi::F32>,
                              Binding<ffi::F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(GnjOnednnConvBwdWeightsF32, BackwardWeights<ffi::F32>,
                              Binding<ffi::F32>());

// Called from Python (ctypes) when a convolution is traced: creates and caches the plan of
// `geometry` (the 21 Geometry fields in order) and writes oneDNN's implementation name into
// `info` (at most `size` bytes), or the reason oneDNN rejected it. Returns 1 if supported.
extern "C" int GnjOnednnConvPlan(const int64_t* geometry, char* info, int64_t size) {
  Geometry q;
  std::memcpy(&q, geometry, sizeof(Geometry));
  std::string text;
  int ok = 0;
  try {
    text = GetPlan(q).impl;
    ok = 1;
  } catch (const dnnl::error& e) {
    text = e.what();
  } catch (const std::exception& e) {
    text = e.what();
  }
  if (size > 0) {
    std::strncpy(info, text.c_str(), static_cast<size_t>(size) - 1);
    info[size - 1] = '\0';
  }
  return ok;
}
