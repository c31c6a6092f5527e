// oneDNN 2-D convolutions for XLA:CPU, called through the XLA FFI (jax.ffi.ffi_call).
//
// Three handlers, one per pass of a float32 NHWC x HWIO -> NHWC convolution
//   y[n, i, j, o] = sum_{a, b, c} x[n, s_h i + a - p_top, s_w j + b - p_left, c] w[a, b, c, o]
// (zero outside the image):
//   DdpmOnednnConvForward        (x, w)   -> y
//   DdpmOnednnConvBackwardData   (dy, w)  -> dx = d<y, dy>/dx   (the transposed convolution)
//   DdpmOnednnConvBackwardWeights(x, dy)  -> dw = d<y, dy>/dw
// each one oneDNN `convolution_direct` primitive with the activations in NHWC (no reorder) and
// the kernel in the layout the primitive picks (`format_tag::any`), reordered from/to HWIO.
// Attributes: `strides` = [s_h, s_w], `padding` = [p_top, p_bottom, p_left, p_right] (>= 0).
// Primitives are built once per shape and cached; executions are serialised (one mutex), since
// the stream and a cached primitive's scratchpad and weight buffers are shared. oneDNN runs its
// own OpenMP threads. Builds against oneDNN 2.x and 3.x.

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Dims = memory::dims;
using Tag = memory::format_tag;
constexpr auto kF32 = memory::data_type::f32;

enum class Pass { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// One convolution's geometry; x: N H W C, w: KH KW C O, y: N OH OW O.
struct Geometry {
  int64_t n, h, w, c, kh, kw, o, oh, ow, sh, sw, pt, pb, pl, pr;
  std::array<int64_t, 15> key() const {
    return {n, h, w, c, kh, kw, o, oh, ow, sh, sw, pt, pb, pl, pr};
  }
  memory::desc x(Tag tag = Tag::nhwc) const { return {{n, c, h, w}, kF32, tag}; }
  memory::desc y(Tag tag = Tag::nhwc) const { return {{n, o, oh, ow}, kF32, tag}; }
  memory::desc k(Tag tag = Tag::hwio) const { return {{o, c, kh, kw}, kF32, tag}; }
  Dims strides() const { return {sh, sw}; }
  Dims pad_l() const { return {pt, pl}; }
  Dims pad_r() const { return {pb, pr}; }
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// The forward primitive descriptor: the primitive of the forward pass, and the hint the
// backward ones need. oneDNN 3 takes the arguments directly; 2 through an op descriptor.
dnnl::convolution_forward::primitive_desc ForwardPd(const Geometry& g) {
  const auto prop = dnnl::prop_kind::forward_training;
  const auto alg = dnnl::algorithm::convolution_direct;
#if DNNL_VERSION_MAJOR >= 3
  return {Engine(), prop, alg, g.x(), g.k(Tag::any), g.y(), g.strides(), g.pad_l(), g.pad_r(),
          UserScratchpad()};
#else
  return {{prop, alg, g.x(), g.k(Tag::any), g.y(), g.strides(), g.pad_l(), g.pad_r()},
          UserScratchpad(), Engine()};
#endif
}

// The primitive descriptor of a backward pass P (convolution_backward_data or _weights), with
// the forward one as its hint.
template <typename P>
typename P::primitive_desc BackwardPd(const Geometry& g,
                                      const dnnl::convolution_forward::primitive_desc& fwd) {
  const auto alg = dnnl::algorithm::convolution_direct;
#if DNNL_VERSION_MAJOR >= 3
  return {Engine(), alg, g.x(), g.k(Tag::any), g.y(), g.strides(), g.pad_l(), g.pad_r(), fwd,
          UserScratchpad()};
#else
  return {{alg, g.x(), g.k(Tag::any), g.y(), g.strides(), g.pad_l(), g.pad_r()},
          UserScratchpad(), Engine(), fwd};
#endif
}

// A cached primitive, its kernel layout and the buffers it needs besides its arguments.
struct Plan {
  dnnl::primitive conv;
  memory::desc kernel;             // the primitive's layout of w (or dw)
  bool reorder_kernel = false;     // kernel layout != HWIO
  dnnl::reorder to_or_from_hwio;   // HWIO -> kernel (forward, backward data), or back
  std::vector<char> kernel_buffer;
  std::vector<char> scratchpad;
};

std::unique_ptr<Plan> MakePlan(Pass pass, const Geometry& g) {
  auto plan = std::make_unique<Plan>();
  const auto fwd = ForwardPd(g);
  memory::desc scratch;
  if (pass == Pass::kForward) {
    plan->conv = dnnl::convolution_forward(fwd);
    plan->kernel = fwd.weights_desc();
    scratch = fwd.scratchpad_desc();
  } else if (pass == Pass::kBackwardData) {
    const auto pd = BackwardPd<dnnl::convolution_backward_data>(g, fwd);
    plan->conv = dnnl::convolution_backward_data(pd);
    plan->kernel = pd.weights_desc();
    scratch = pd.scratchpad_desc();
  } else {
    const auto pd = BackwardPd<dnnl::convolution_backward_weights>(g, fwd);
    plan->conv = dnnl::convolution_backward_weights(pd);
    plan->kernel = pd.diff_weights_desc();
    scratch = pd.scratchpad_desc();
  }
  plan->reorder_kernel = plan->kernel != g.k();
  if (plan->reorder_kernel) {
    plan->kernel_buffer.resize(plan->kernel.get_size());
    const memory::desc hwio = g.k();
    plan->to_or_from_hwio = pass == Pass::kBackwardWeights
                                ? dnnl::reorder(memory(plan->kernel, Engine(), nullptr),
                                                memory(hwio, Engine(), nullptr))
                                : dnnl::reorder(memory(hwio, Engine(), nullptr),
                                                memory(plan->kernel, Engine(), nullptr));
  }
  plan->scratchpad.resize(scratch.get_size());
  return plan;
}

std::mutex& ExecuteMutex() {
  static std::mutex mutex;
  return mutex;
}

Plan& CachedPlan(Pass pass, const Geometry& g) {  // Call with ExecuteMutex held.
  static std::map<std::pair<int, std::array<int64_t, 15>>, std::unique_ptr<Plan>> cache;
  auto& plan = cache[{static_cast<int>(pass), g.key()}];
  if (!plan) plan = MakePlan(pass, g);
  return *plan;
}

// Runs one pass: x (or dx), w (or dw), y (or dy) point at NHWC / HWIO / NHWC float32 arrays.
void Run(Pass pass, const Geometry& g, float* x, float* w, float* y) {
  std::lock_guard<std::mutex> lock(ExecuteMutex());
  Plan& plan = CachedPlan(pass, g);
  dnnl::engine& engine = Engine();
  static dnnl::stream stream(engine);  // Guarded by ExecuteMutex, like the plans.
  memory x_mem(g.x(), engine, x), y_mem(g.y(), engine, y), w_mem(g.k(), engine, w);
  memory kernel_mem = plan.reorder_kernel
                          ? memory(plan.kernel, engine, plan.kernel_buffer.data())
                          : w_mem;
  std::unordered_map<int, memory> args;
  if (pass != Pass::kBackwardWeights && plan.reorder_kernel) {
    plan.to_or_from_hwio.execute(stream, w_mem, kernel_mem);
  }
  if (pass == Pass::kForward) {
    args = {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, kernel_mem}, {DNNL_ARG_DST, y_mem}};
  } else if (pass == Pass::kBackwardData) {
    args = {{DNNL_ARG_DIFF_DST, y_mem}, {DNNL_ARG_WEIGHTS, kernel_mem},
            {DNNL_ARG_DIFF_SRC, x_mem}};
  } else {
    args = {{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_DIFF_DST, y_mem},
            {DNNL_ARG_DIFF_WEIGHTS, kernel_mem}};
  }
  if (!plan.scratchpad.empty()) {
    const memory::desc scratch({static_cast<int64_t>(plan.scratchpad.size())},
                               memory::data_type::u8, Tag::x);
    args.insert({DNNL_ARG_SCRATCHPAD, memory(scratch, engine, plan.scratchpad.data())});
  }
  plan.conv.execute(stream, args);
  if (pass == Pass::kBackwardWeights && plan.reorder_kernel) {
    plan.to_or_from_hwio.execute(stream, kernel_mem, w_mem);
  }
  stream.wait();
}

// The geometry from x (N H W C) and w (KH KW C O) dimensions and the attributes; an error
// names what is wrong (the Python wrapper checks the same, so these guard direct calls).
ffi::Error MakeGeometry(ffi::Span<const int64_t> x, ffi::Span<const int64_t> w,
                        ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding,
                        Geometry* g) {
  if (x.size() != 4 || w.size() != 4 || strides.size() != 2 || padding.size() != 4) {
    return ffi::Error::InvalidArgument(
        "onednn conv: needs a rank-4 NHWC input, a rank-4 HWIO kernel, 2 strides and 4 pads");
  }
  *g = {x[0], x[1], x[2], x[3], w[0], w[1], w[3], 0, 0,
        strides[0], strides[1], padding[0], padding[1], padding[2], padding[3]};
  if (w[2] != g->c) return ffi::Error::InvalidArgument("onednn conv: kernel's C != input's C");
  for (int64_t v : padding) {
    if (v < 0) return ffi::Error::InvalidArgument("onednn conv: negative padding");
  }
  if (g->sh < 1 || g->sw < 1) return ffi::Error::InvalidArgument("onednn conv: stride < 1");
  g->oh = (g->h + g->pt + g->pb - g->kh) / g->sh + 1;
  g->ow = (g->w + g->pl + g->pr - g->kw) / g->sw + 1;
  if (g->oh < 1 || g->ow < 1) return ffi::Error::InvalidArgument("onednn conv: empty output");
  return ffi::Error::Success();
}

ffi::Error CheckY(const Geometry& g, ffi::Span<const int64_t> y) {
  if (y.size() != 4 || y[0] != g.n || y[1] != g.oh || y[2] != g.ow || y[3] != g.o) {
    return ffi::Error::InvalidArgument("onednn conv: output shape does not match the geometry");
  }
  return ffi::Error::Success();
}

template <typename F>
ffi::Error Guarded(F&& f) {
  try {
    f();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("onednn conv: ") + e.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;
using I64s = ffi::Span<const int64_t>;

// Checks the shapes against each other and the attributes, then runs the pass.
ffi::Error CheckedRun(Pass pass, I64s x_dims, I64s w_dims, I64s y_dims, float* x, float* w,
                      float* y, I64s strides, I64s padding) {
  Geometry g;
  if (auto e = MakeGeometry(x_dims, w_dims, strides, padding, &g); e.failure()) return e;
  if (auto e = CheckY(g, y_dims); e.failure()) return e;
  return Guarded([&] { Run(pass, g, x, w, y); });
}

ffi::Error Forward(F32 x, F32 w, ffi::ResultBuffer<ffi::F32> y, I64s strides, I64s padding) {
  return CheckedRun(Pass::kForward, x.dimensions(), w.dimensions(), y->dimensions(),
                    x.typed_data(), w.typed_data(), y->typed_data(), strides, padding);
}

ffi::Error BackwardData(F32 dy, F32 w, ffi::ResultBuffer<ffi::F32> dx, I64s strides,
                        I64s padding) {
  return CheckedRun(Pass::kBackwardData, dx->dimensions(), w.dimensions(), dy.dimensions(),
                    dx->typed_data(), w.typed_data(), dy.typed_data(), strides, padding);
}

ffi::Error BackwardWeights(F32 x, F32 dy, ffi::ResultBuffer<ffi::F32> dw, I64s strides,
                           I64s padding) {
  return CheckedRun(Pass::kBackwardWeights, x.dimensions(), dw->dimensions(), dy.dimensions(),
                    x.typed_data(), dw->typed_data(), dy.typed_data(), strides, padding);
}

}  // namespace

// Every handler: two float32 operands, one float32 result, the strides and the padding.
#define DDPM_CONV_BINDING \
  ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>().Attr<I64s>("strides").Attr<I64s>("padding")

XLA_FFI_DEFINE_HANDLER_SYMBOL(DdpmOnednnConvForward, Forward, DDPM_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(DdpmOnednnConvBackwardData, BackwardData, DDPM_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(DdpmOnednnConvBackwardWeights, BackwardWeights, DDPM_CONV_BINDING);

// The oneDNN version the library runs with, major * 10000 + minor * 100 + patch.
extern "C" int DdpmOnednnVersion() {
  const dnnl_version_t* v = dnnl_version();
  return v->major * 10000 + v->minor * 100 + v->patch;
}
