// 2-D convolutions on the CPU through oneDNN, as XLA FFI custom calls.
//
// NHWC activations and HWIO kernels (JAX's layouts; grouped convolutions,
// depthwise included, with the kernel's output features group-major, as
// JAX's feature_group_count has them), bfloat16 inputs and float32 outputs
// (on CPUs with AMX or AVX512-BF16, oneDNN's bf16 kernels take these
// layouts directly) or float32 throughout (for CPUs without bf16
// hardware). Three calls make a differentiable conv (catdog_jax/onednn/
// __init__.py): the forward pass, the gradient of the input and the
// gradient of the kernel. A fourth is the forward pass with a bias added
// and optionally ReLU6 applied by oneDNN as it writes the output (float32
// or bfloat16): a BatchNorm folded into the conv before it, and its
// activation, without a pass of XLA's over the activations. Primitives are
// created once per shape and cached. Every call runs on one thread of this
// library's own, whose OpenMP team (oneDNN's threads) is then the only one:
// XLA calls from several threads of its pool, and each caller would
// otherwise get a team of its own, idle teams spinning against the working
// one on the same cores (a training run was measured livelocked in their
// barriers).

#include <array>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = memory::format_tag;
using Type = memory::data_type;

namespace {

enum class Op { kForward, kBackwardData, kBackwardWeights };

// What fixes a primitive: the op and every extent, stride and padding.
using Key = std::tuple<int, std::array<int64_t, 18>>;

struct Cached {
  dnnl::primitive conv;
  // The kernel's layout that the primitive wants, and the reorder from (or
  // to) HWIO when it is another one.
  memory::desc kernel_desc;
  bool reorder_kernel = false;
};

struct State {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::map<Key, std::shared_ptr<Cached>> cache;
};

// The one thread that runs oneDNN, and the calls waiting for it.
class Worker {
 public:
  Worker() : thread_([this] { Loop(); }) { thread_.detach(); }

  // Runs `task` on the worker thread; returns when it is done.
  void Call(std::function<void()> task) {
    std::packaged_task<void()> packaged(std::move(task));
    auto done = packaged.get_future();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(packaged));
    }
    ready_.notify_one();
    done.get();  // Rethrows what the task threw.
  }

 private:
  void Loop() {
    while (true) {
      std::packaged_task<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return !queue_.empty(); });
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::packaged_task<void()>> queue_;
  std::thread thread_;
};

// Both live until exit, used only on the worker thread (the state) or
// through it.
State& state() {
  static State* s = new State();
  return *s;
}

Worker& worker() {
  static Worker* w = new Worker();
  return *w;
}

struct Geometry {
  int64_t n, h, w, c, kh, kw, f, oh, ow;
  memory::dims strides, pad_lo, pad_hi;
  int64_t groups = 1;
  // The fused forward's epilogue: a float32 bias, ReLU6, a bf16 output.
  bool bias = false, relu6 = false, bf16_out = false;
  // Float32 inputs (and kernel) instead of bfloat16.
  bool f32_in = false;

  Type in() const { return f32_in ? Type::f32 : Type::bf16; }

  memory::dims src() const { return {n, c, h, w}; }
  memory::dims kernel() const {
    if (groups == 1) return {f, c, kh, kw};
    return {groups, f / groups, c / groups, kh, kw};
  }
  memory::dims dst() const { return {n, f, oh, ow}; }
  // JAX's HWIO, which for groups is oneDNN's hwigo: (kh, kw, c/g, f).
  Tag hwio() const { return groups == 1 ? Tag::hwio : Tag::hwigo; }
};

Key KeyOf(Op op, const Geometry& g) {
  return {static_cast<int>(op),
          {g.n, g.h, g.w, g.c, g.kh, g.kw, g.f, g.strides[0], g.strides[1],
           g.pad_lo[0], g.pad_lo[1], g.pad_hi[0], g.pad_hi[1], g.groups,
           g.bias, g.relu6, g.bf16_out, g.f32_in}};
}

memory::desc Nhwc(const memory::dims& dims, Type type) {
  return memory::desc(dims, type, Tag::nhwc);
}

memory::desc AnyLayout(const memory::dims& dims, Type type) {
  return memory::desc(dims, type, Tag::any);
}

memory::desc BiasDesc(const Geometry& g) {
  return memory::desc({g.f}, Type::f32, Tag::a);
}

// ReLU6 applied to the output as oneDNN writes it, when asked.
dnnl::primitive_attr Epilogue(const Geometry& g) {
  dnnl::primitive_attr attr;
  if (g.relu6) {
    dnnl::post_ops ops;
#if DNNL_VERSION_MAJOR >= 3
    ops.append_eltwise(dnnl::algorithm::eltwise_clip, 0.f, 6.f);
#else
    ops.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, 0.f, 6.f);
#endif
    attr.set_post_ops(ops);
  }
  return attr;
}

// The forward primitive descriptor (the backward ones need the plain one
// as a hint).
dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g,
                                                      const dnnl::engine& e) {
  auto src = Nhwc(g.src(), g.in());
  auto kernel = AnyLayout(g.kernel(), g.in());
  auto dst = Nhwc(g.dst(), g.bf16_out ? Type::bf16 : Type::f32);
  auto bias = g.bias ? BiasDesc(g) : memory::desc();
  auto attr = Epilogue(g);
#if DNNL_VERSION_MAJOR >= 3
  return {e,        dnnl::prop_kind::forward_training,
          dnnl::algorithm::convolution_direct,
          src,      kernel,
          bias,     dst,
          g.strides, g.pad_lo,
          g.pad_hi, attr};
#else
  return {{dnnl::prop_kind::forward_training,
           dnnl::algorithm::convolution_direct, src, kernel, bias, dst,
           g.strides, g.pad_lo, g.pad_hi},
          attr, e};
#endif
}

std::shared_ptr<Cached> Create(Op op, const Geometry& g, const dnnl::engine& e) {
  auto cached = std::make_shared<Cached>();
  auto forward = ForwardDesc(g, e);
  if (op == Op::kForward) {
    cached->conv = dnnl::convolution_forward(forward);
    cached->kernel_desc = forward.weights_desc();
  } else if (op == Op::kBackwardData) {
    auto dsrc = Nhwc(g.src(), Type::f32);
    auto kernel = AnyLayout(g.kernel(), g.in());
    auto ddst = Nhwc(g.dst(), g.in());
#if DNNL_VERSION_MAJOR >= 3
    dnnl::convolution_backward_data::primitive_desc pd(
        e, dnnl::algorithm::convolution_direct, dsrc, kernel, ddst,
        g.strides, g.pad_lo, g.pad_hi, forward);
#else
    dnnl::convolution_backward_data::primitive_desc pd(
        {dnnl::algorithm::convolution_direct, dsrc, kernel, ddst, g.strides,
         g.pad_lo, g.pad_hi},
        e, forward);
#endif
    cached->conv = dnnl::convolution_backward_data(pd);
    cached->kernel_desc = pd.weights_desc();
  } else {
    auto src = Nhwc(g.src(), g.in());
    auto dkernel = AnyLayout(g.kernel(), Type::f32);
    auto ddst = Nhwc(g.dst(), g.in());
#if DNNL_VERSION_MAJOR >= 3
    dnnl::convolution_backward_weights::primitive_desc pd(
        e, dnnl::algorithm::convolution_direct, src, dkernel, ddst,
        g.strides, g.pad_lo, g.pad_hi, forward);
#else
    dnnl::convolution_backward_weights::primitive_desc pd(
        {dnnl::algorithm::convolution_direct, src, dkernel, ddst, g.strides,
         g.pad_lo, g.pad_hi},
        e, forward);
#endif
    cached->conv = dnnl::convolution_backward_weights(pd);
    cached->kernel_desc = pd.diff_weights_desc();
  }
  Type hwio_type = op == Op::kBackwardWeights ? Type::f32 : g.in();
  cached->reorder_kernel =
      cached->kernel_desc != memory::desc(g.kernel(), hwio_type, g.hwio());
  return cached;
}

std::shared_ptr<Cached> Get(Op op, const Geometry& g) {
  State& s = state();
  auto& entry = s.cache[KeyOf(op, g)];
  if (!entry) entry = Create(op, g, s.engine);
  return entry;
}

ffi::Error Check(bool ok, const char* what) {
  return ok ? ffi::Error::Success() : ffi::Error::InvalidArgument(what);
}

// Two inputs both bfloat16 or both float32.
bool SameInputType(const ffi::AnyBuffer& a, const ffi::AnyBuffer& b) {
  return a.element_type() == b.element_type() &&
         (a.element_type() == ffi::BF16 || a.element_type() == ffi::F32);
}

// The geometry from an NHWC input's and an HWIO kernel's extents, the
// output's, and the attributes.
ffi::ErrorOr<Geometry> GeometryOf(ffi::Span<const int64_t> nhwc,
                                  ffi::Span<const int64_t> hwio,
                                  ffi::Span<const int64_t> out,
                                  ffi::Span<const int64_t> strides,
                                  ffi::Span<const int64_t> padding,
                                  int64_t groups) {
  if (nhwc.size() != 4 || hwio.size() != 4 || out.size() != 4 ||
      strides.size() != 2 || padding.size() != 4) {
    return ffi::Unexpected(
        ffi::Error::InvalidArgument("onednn conv: expected NHWC, HWIO, "
                                    "2 strides, 4 pads"));
  }
  if (groups < 1 || nhwc[3] != hwio[2] * groups || hwio[3] % groups != 0) {
    return ffi::Unexpected(ffi::Error::InvalidArgument(
        "onednn conv: channels, kernel and groups disagree"));
  }
  Geometry g{nhwc[0], nhwc[1], nhwc[2], nhwc[3], hwio[0], hwio[1], hwio[3],
             out[1],  out[2],  {strides[0], strides[1]},
             {padding[0], padding[2]}, {padding[1], padding[3]}, groups};
  return g;
}

// On the worker thread only. `bias`: the fused forward's, else null.
void RunHere(Op op, const Geometry& g, void* src, void* kernel, void* dst,
             void* bias) {
  auto cached = Get(op, g);
  State& s = state();
  const dnnl::engine& e = s.engine;
  Type hwio_type = op == Op::kBackwardWeights ? Type::f32 : g.in();
  memory user_kernel(memory::desc(g.kernel(), hwio_type, g.hwio()), e,
                     kernel);
  memory conv_kernel = user_kernel;
  if (cached->reorder_kernel) conv_kernel = memory(cached->kernel_desc, e);
  if (op == Op::kForward) {
    if (cached->reorder_kernel)
      dnnl::reorder(user_kernel, conv_kernel)
          .execute(s.stream, user_kernel, conv_kernel);
    memory in(Nhwc(g.src(), g.in()), e, src);
    memory out(Nhwc(g.dst(), g.bf16_out ? Type::bf16 : Type::f32), e, dst);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, in},
                                         {DNNL_ARG_WEIGHTS, conv_kernel},
                                         {DNNL_ARG_DST, out}};
    if (g.bias) args.insert({DNNL_ARG_BIAS, memory(BiasDesc(g), e, bias)});
    cached->conv.execute(s.stream, args);
  } else if (op == Op::kBackwardData) {
    // Here `src` is the output gradient and `dst` the input gradient.
    if (cached->reorder_kernel)
      dnnl::reorder(user_kernel, conv_kernel)
          .execute(s.stream, user_kernel, conv_kernel);
    memory ddst(Nhwc(g.dst(), g.in()), e, src);
    memory dsrc(Nhwc(g.src(), Type::f32), e, dst);
    cached->conv.execute(s.stream, {{DNNL_ARG_DIFF_DST, ddst},
                                    {DNNL_ARG_WEIGHTS, conv_kernel},
                                    {DNNL_ARG_DIFF_SRC, dsrc}});
  } else {
    // Here `kernel` is the (output) kernel gradient and `dst` the output
    // gradient, an input.
    memory in(Nhwc(g.src(), g.in()), e, src);
    memory ddst(Nhwc(g.dst(), g.in()), e, dst);
    cached->conv.execute(s.stream, {{DNNL_ARG_SRC, in},
                                    {DNNL_ARG_DIFF_DST, ddst},
                                    {DNNL_ARG_DIFF_WEIGHTS, conv_kernel}});
    if (cached->reorder_kernel)
      dnnl::reorder(conv_kernel, user_kernel)
          .execute(s.stream, conv_kernel, user_kernel);
  }
  s.stream.wait();
}

void Run(Op op, const Geometry& g, void* src, void* kernel, void* dst,
         void* bias = nullptr) {
  worker().Call([=] { RunHere(op, g, src, kernel, dst, bias); });
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer kernel,
                   ffi::Result<ffi::AnyBuffer> y,
                   ffi::Span<const int64_t> strides,
                   ffi::Span<const int64_t> padding, int64_t groups) {
  if (auto e = Check(SameInputType(x, kernel) &&
                         y->element_type() == ffi::F32,
                     "onednn conv forward: bf16 or f32 inputs -> f32");
      e.failure())
    return e;
  auto g = GeometryOf(x.dimensions(), kernel.dimensions(), y->dimensions(),
                      strides, padding, groups);
  if (g.has_error()) return g.error();
  g->f32_in = x.element_type() == ffi::F32;
  Run(Op::kForward, *g, x.untyped_data(), kernel.untyped_data(),
      y->untyped_data());
  return ffi::Error::Success();
}

ffi::Error BackwardData(ffi::AnyBuffer dy, ffi::AnyBuffer kernel,
                        ffi::Result<ffi::AnyBuffer> dx,
                        ffi::Span<const int64_t> strides,
                        ffi::Span<const int64_t> padding, int64_t groups) {
  if (auto e = Check(SameInputType(dy, kernel) &&
                         dx->element_type() == ffi::F32,
                     "onednn conv input gradient: bf16 or f32 inputs -> f32");
      e.failure())
    return e;
  auto g = GeometryOf(dx->dimensions(), kernel.dimensions(), dy.dimensions(),
                      strides, padding, groups);
  if (g.has_error()) return g.error();
  g->f32_in = dy.element_type() == ffi::F32;
  Run(Op::kBackwardData, *g, dy.untyped_data(), kernel.untyped_data(),
      dx->untyped_data());
  return ffi::Error::Success();
}

ffi::Error BackwardWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy,
                           ffi::Result<ffi::AnyBuffer> dkernel,
                           ffi::Span<const int64_t> strides,
                           ffi::Span<const int64_t> padding, int64_t groups) {
  if (auto e = Check(SameInputType(x, dy) &&
                         dkernel->element_type() == ffi::F32,
                     "onednn conv kernel gradient: bf16 or f32 inputs -> f32");
      e.failure())
    return e;
  auto g = GeometryOf(x.dimensions(), dkernel->dimensions(), dy.dimensions(),
                      strides, padding, groups);
  if (g.has_error()) return g.error();
  g->f32_in = x.element_type() == ffi::F32;
  Run(Op::kBackwardWeights, *g, x.untyped_data(), dkernel->untyped_data(),
      dy.untyped_data());
  return ffi::Error::Success();
}

ffi::Error ForwardFused(ffi::AnyBuffer x, ffi::AnyBuffer kernel,
                        ffi::AnyBuffer bias, ffi::Result<ffi::AnyBuffer> y,
                        ffi::Span<const int64_t> strides,
                        ffi::Span<const int64_t> padding, int64_t groups,
                        bool relu6) {
  bool bf16_out = y->element_type() == ffi::BF16;
  bool f32_in = x.element_type() == ffi::F32;
  if (auto e = Check(SameInputType(x, kernel) &&
                         bias.element_type() == ffi::F32 &&
                         (y->element_type() == ffi::F32 ||
                          (bf16_out && !f32_in)),
                     "onednn fused conv: bf16 inputs -> f32 or bf16, f32 "
                     "inputs -> f32 (an f32 bias)");
      e.failure())
    return e;
  auto g = GeometryOf(x.dimensions(), kernel.dimensions(), y->dimensions(),
                      strides, padding, groups);
  if (g.has_error()) return g.error();
  if (auto e = Check(bias.dimensions().size() == 1 &&
                         bias.dimensions()[0] == g->f,
                     "onednn fused conv: one bias per output feature");
      e.failure())
    return e;
  g->bias = true;
  g->relu6 = relu6;
  g->bf16_out = bf16_out;
  g->f32_in = f32_in;
  Run(Op::kForward, *g, x.untyped_data(), kernel.untyped_data(),
      y->untyped_data(), bias.untyped_data());
  return ffi::Error::Success();
}

}  // namespace

// Two buffers in, one out, the strides, the (lo, hi) paddings and the
// number of groups.
#define CATDOG_CONV_BINDING                    \
  ffi::Ffi::Bind()                             \
      .Arg<ffi::AnyBuffer>()                   \
      .Arg<ffi::AnyBuffer>()                   \
      .Ret<ffi::AnyBuffer>()                   \
      .Attr<ffi::Span<const int64_t>>("strides") \
      .Attr<ffi::Span<const int64_t>>("padding") \
      .Attr<int64_t>("groups")

XLA_FFI_DEFINE_HANDLER_SYMBOL(CatdogConvForward, Forward, CATDOG_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CatdogConvBackwardData, BackwardData,
                              CATDOG_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CatdogConvBackwardWeights, BackwardWeights,
                              CATDOG_CONV_BINDING);
// The input, kernel and bias; the output; as above, and whether ReLU6.
XLA_FFI_DEFINE_HANDLER_SYMBOL(CatdogConvForwardFused, ForwardFused,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const int64_t>>("strides")
                                  .Attr<ffi::Span<const int64_t>>("padding")
                                  .Attr<int64_t>("groups")
                                  .Attr<bool>("relu6"));

// The kernel oneDNN picks for a small bf16 (or, with `f32`, float32) conv
// on this CPU (for example "brgconv:avx512_core_amx_bf16"), or "" when it
// has none.
extern "C" const char* CatdogConvKernelName(int f32) {
  static std::string name;
  try {
    worker().Call([f32] {
      Geometry g{1, 8, 8, 16, 3, 3, 16, 8, 8, {1, 1}, {1, 1}, {1, 1}};
      g.f32_in = f32 != 0;
      name = ForwardDesc(g, state().engine).impl_info_str();
    });
  } catch (...) {
    name = "";
  }
  return name.c_str();
}
