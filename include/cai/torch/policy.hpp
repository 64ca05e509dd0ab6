// cai/torch/policy.hpp — LibTorch models as cai policies and scalar models (component cai::torch).
//
//   cai::torch_lm<Module>            a causal LM as cai::trainable_policy and cai::sampling_policy
//   cai::torch_scalar_model<Module>  a scalar head (reward, cost, value) as cai::scalar_model and
//                                    cai::trainable_scalar_model
//   cai::load_torchscript(path)      torch::jit::load with cai errors
//
// Module is either a TorchScript module (torch::jit::script::Module, e.g. from cai::load_torchscript) or a C++
// torch::nn module handle (std::shared_ptr<Impl> or a TORCH_MODULE holder) whose forward(at::Tensor) returns the
// output. The adapter holds the module (both are shared handles: the caller's copy sees the same parameters).
//   LM:      forward(ids (B, T) int64) -> logits (B, T, V), logits[b, t] predicting ids[b, t + 1] (a TorchScript
//            forward may also return a tuple or list whose first element is the logits, or a dict with "logits").
//            Optional key-value cache, used by sample(): a method forward_cached(ids (B, L), past) -> (logits (B, L, V),
//            past') where past is a list of tensors the model owns (empty on the first call) and positions continue
//            from the cached length; a TorchScript module exports it with @torch.jit.export (List[Tensor]), a C++
//            module declares `at::Tensor forward_cached(const at::Tensor&, std::vector<at::Tensor>& past)`.
//   scalar:  forward(ids) -> values (B, T) or (B, T, 1), one scalar per position (cai/concepts/scalar_model.hpp).
// Every forward runs on the module's current device (that of its first parameter, read at each call; the CPU for a
// module without parameters, which the adapters accept for inference — step() and zero_grad() then refuse, naming
// "module") with ids built from the token batch; the positions a row's mask marks as padding are fed options.pad_id
// (right padding: a causal model's real positions never see them). Before each forward the module is put in eval()
// mode, or train() mode with options.eval_mode = false.
//
// Training forward (torch_lm::train_forward), with temperature tau and the cai alignment of DESIGN.md:
//   logp[b, t] = log softmax(logits[b, t - 1] / tau)[ids[b, t]],  entropy[b, t] = H(softmax(logits[b, t - 1] / tau))
// on the scored positions (mask and loss_mask both 1, t >= 1; 0 elsewhere). Two interchangeable ways compute it
// (options.logits_path): cai_host — cai::token_logprobs over a zero-copy view of CPU logits (fp32, bf16 or fp16),
// one pass with no (B, T, V) temporary, and backward(handle, grads) writes dlogits with cai::token_logprobs_backward
// and pushes them into autograd with logits.backward(dlogits); torch_ops — log_softmax + gather (+ entropy) as torch
// operations, backward through torch::autograd::backward on logp and entropy (any device: this is the CUDA path,
// running on LibTorch's current stream). automatic = cai_host for CPU logits, torch_ops otherwise. Either way the
// gradients of ANY cai loss (dL/dlogp, dL/dentropy) reach the module's parameters through torch autograd, and
// unscored positions give exactly 0 and pass no gradient (torch_ops zeroes the unscored logit rows before its
// log_softmax, so NaN or -inf there — a model that masks padding — cannot leak into the parameters).
// The handle is move-only and keeps the autograd graph alive until backward() consumes it (or it is destroyed);
// backward() checks its arguments before it consumes the handle, so a rejected call can be retried.
//
// Optimiser: options.optimizer(parameters) builds a torch::optim optimiser (default AdamW, betas (0.9, 0.999),
// eps 1e-8, weight decay 0). zero_grad() clears the gradients; step(lr) sets lr on every parameter group, computes
// the global gradient L2 norm (in fp64, one device-to-host read), scales the gradients by max_grad_norm / (norm +
// 1e-6) when options.max_grad_norm > 0 and the norm exceeds it (torch::nn::utils::clip_grad_norm_'s rule), steps, and
// returns the pre-clip norm. A non-finite norm skips the step (the parameters stay as they were) and is returned, so a
// trainer logs it. options.eval_mode (default true) keeps the module in eval() mode — dropout off — so that training
// log-probs equal sampling and reference log-probs (RLHF needs them to match); set it false to train with dropout.
//
// Sampling (torch_lm::sample): rows are grouped by prompt length; each group decodes in lockstep, with the model's
// key-value cache when it has forward_cached (options.use_cache) and otherwise by re-running the whole prefix.
// Tokens are drawn by cai::draw_token (temperature, top-k, top-p; row b from rng_stream(derive_seed(seed, b))), and
// the behaviour log-probs are those of the unrestricted distribution at the sampling temperature: they equal
// log_probs(..., temperature) up to float rounding (the tests bound the difference).
//
// Bad input: a module whose output is not (B, T, V) / (B, T) [(B, T, 1)], or whose vocabulary differs from
// options.vocab (when given) or from the first forward's, is cai::shape_error naming "module"; token ids outside
// [0, V) on real positions (negative ids for a scalar model, whose vocabulary is unknown), or a real token at a
// position >= options.max_seq (when set), are cai::invalid_argument naming "batch.tokens"; options.pad_id outside the
// vocabulary names "options.pad_id"; mismatched batch / gradient shapes are cai::shape_error naming the argument; a
// missing file is cai::invalid_argument and an unreadable one cai::parse_error, both naming "path"; any exception
// LibTorch raises (c10::Error, or the TorchScript interpreter's std::runtime_error) becomes cai::error naming the call
// and quoting LibTorch's message (its error line, without the backtrace).
//
//   auto lm = cai::torch_lm(cai::load_torchscript("policy.pt"));
//   auto ref = cai::torch_lm(cai::load_torchscript("policy.pt"));      // a separate, frozen copy
//   cai::train_dpo(lm, ref, tok, pairs, cai::dpo::sigmoid{.beta = 0.1}, {.batch_size = 8});
#pragma once

#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../algorithms/logprobs.hpp"
#include "../algorithms/sampling.hpp"
#include "../concepts/types.hpp"
#include "../core/error.hpp"
#include "../core/host.hpp"
#include "../core/rng.hpp"
#include "tensor.hpp"

namespace cai {

/// How torch_lm computes per-token log-probs and entropy from logits (see the header comment).
enum class torch_logits_path { automatic, cai_host, torch_ops };

/// Options of torch_lm and torch_scalar_model (fields a scalar model does not use are ignored).
struct torch_model_options {
  std::int64_t vocab = 0;         ///< expected vocabulary, checked at every forward; 0: from a one-token probe forward
  std::int64_t max_seq = 0;       ///< longest sequence sample() may build; 0: not checked
  std::int64_t pad_id = 0;        ///< id fed at padding positions
  bool eval_mode = true;          ///< keep the module in eval() mode (dropout off)
  bool use_cache = true;          ///< sample with forward_cached when the module has it
  double max_grad_norm = 0.0;     ///< > 0: clip the global gradient norm before each step
  torch_logits_path logits_path = torch_logits_path::automatic;
  bool threaded = true;           ///< cai_host path on cai::threaded_host (same bits as cai::host at any thread count)
  /// Builds the optimiser over the module's parameters; empty: AdamW (lr set by each step()).
  std::function<std::unique_ptr<::torch::optim::Optimizer>(std::vector<at::Tensor>)> optimizer{};
};

/// Loads a TorchScript module onto `device`; cai::invalid_argument (missing file) or cai::parse_error (not a
/// TorchScript archive) naming "path".
inline ::torch::jit::script::Module load_torchscript(const std::filesystem::path& path, c10::Device device = c10::kCPU) {
  constexpr std::string_view call = "cai::load_torchscript";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    detail::fail_argument(call, "path", "an existing TorchScript file", path.string());
  try {
    return ::torch::jit::load(path.string(), device);
  } catch (const std::exception& e) {
    std::string what = e.what();
    if (auto nl = what.find('\n'); nl != std::string::npos) what.resize(nl);  // LibTorch appends a C++ backtrace
    detail::fail_argument<parse_error>(call, "path", "a TorchScript archive (torch.jit.save)", detail::concat(path.string(), ": ", what));
  }
}

namespace detail::tch {

using jit_module = ::torch::jit::script::Module;

template <class M>
concept nn_module_handle = requires(M& m, const at::Tensor& t) {
  { m->forward(t) } -> std::convertible_to<at::Tensor>;
  { m->parameters() } -> std::convertible_to<std::vector<at::Tensor>>;
  m->train(true);
};

template <class M>
concept torch_module = std::same_as<M, jit_module> || nn_module_handle<M>;

/// The informative line of a LibTorch message: the TorchScript interpreter's "...Error: <cause>" line when there is
/// one (it comes after a banner and the TorchScript traceback), else the first non-empty line (c10::Error appends a
/// C++ backtrace after it).
inline std::string first_line(const char* what) {
  const std::string_view s = what;
  std::string_view first, cause;
  for (std::size_t at = 0; at <= s.size();) {
    const auto nl = std::min(s.find('\n', at), s.size());
    const auto line = s.substr(at, nl - at);
    if (first.empty() && line.find_first_not_of(" \t\r") != std::string_view::npos) first = line;
    const auto colon = line.find("Error: ");
    if (colon != std::string_view::npos && line.find_first_of(" \t") > colon) cause = line;  // "RuntimeError: ..."
    at = nl + 1;
  }
  return std::string(cause.empty() ? first : cause);
}

/// Runs f, turning any LibTorch exception into cai::error naming `call`.
template <class F>
decltype(auto) guarded(std::string_view call, F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const cai::error&) {
    throw;
  } catch (const c10::Error& e) {
    throw cai::error(detail::concat(call, ": LibTorch raised: ", first_line(e.what_without_backtrace())));
  } catch (const std::exception& e) {  // the TorchScript interpreter rethrows as std::runtime_error (JITException too)
    throw cai::error(detail::concat(call, ": LibTorch raised: ", first_line(e.what())));
  }
}

inline at::Tensor output_tensor(const c10::IValue& v, std::string_view call) {
  if (v.isTensor()) return v.toTensor();
  if (v.isTuple() && !v.toTupleRef().elements().empty() && v.toTupleRef().elements()[0].isTensor())
    return v.toTupleRef().elements()[0].toTensor();
  if (v.isTensorList() && v.toTensorList().size() > 0) return v.toTensorList().get(0);
  if (v.isList() && v.toListRef().size() > 0 && v.toListRef()[0].isTensor()) return v.toListRef()[0].toTensor();
  if (v.isGenericDict())
    for (const auto& kv : v.toGenericDict())
      if (kv.key().isString() && kv.key().toStringRef() == "logits" && kv.value().isTensor()) return kv.value().toTensor();
  detail::fail_argument<shape_error>(call, "module", "a forward returning a tensor (or a tuple / list / dict with it first / \"logits\")",
                                     v.tagKind());
}

template <torch_module M>
at::Tensor call_forward(M& m, const at::Tensor& ids, std::string_view call) {
  if constexpr (std::same_as<M, jit_module>) {
    return output_tensor(guarded(call, [&] { return m.forward({ids}); }), call);
  } else {
    return guarded(call, [&] { return at::Tensor(m->forward(ids)); });
  }
}

template <torch_module M>
bool has_cache(const M& m) {
  if constexpr (std::same_as<M, jit_module>) return m.find_method("forward_cached").has_value();
  else return requires(M& mm, const at::Tensor& t, std::vector<at::Tensor>& p) { { mm->forward_cached(t, p) } -> std::convertible_to<at::Tensor>; };
}

template <torch_module M>
at::Tensor call_cached(M& m, const at::Tensor& ids, std::vector<at::Tensor>& past, std::string_view call) {
  if constexpr (std::same_as<M, jit_module>) {
    const auto out = guarded(call, [&] {
      c10::List<at::Tensor> p;
      for (const auto& t : past) p.push_back(t);
      return m.get_method("forward_cached")({ids, p});
    });
    if (!out.isTuple() || out.toTupleRef().elements().size() != 2 || !out.toTupleRef().elements()[0].isTensor() ||
        !out.toTupleRef().elements()[1].isTensorList())
      detail::fail_argument<shape_error>(call, "module", "forward_cached returning (logits, List[Tensor])", out.tagKind());
    past = out.toTupleRef().elements()[1].toTensorVector();
    return out.toTupleRef().elements()[0].toTensor();
  } else if constexpr (requires(M& mm, const at::Tensor& t, std::vector<at::Tensor>& p) { mm->forward_cached(t, p); }) {
    return guarded(call, [&] { return at::Tensor(m->forward_cached(ids, past)); });
  } else {
    return call_forward(m, ids, call);  // unreachable: has_cache() is false
  }
}

template <torch_module M>
std::vector<at::Tensor> parameters_of(M& m) {
  if constexpr (std::same_as<M, jit_module>) {
    std::vector<at::Tensor> v;
    for (const auto& p : m.parameters()) v.push_back(p);
    return v;
  } else {
    return m->parameters();
  }
}

template <torch_module M>
void set_train(M& m, bool on) {
  if constexpr (std::same_as<M, jit_module>) m.train(on);
  else m->train(on);
}

/// What both adapters share: the module, its device, the optimiser and the token-batch plumbing.
template <torch_module M>
class torch_model_base {
 public:
  const M& module() const noexcept { return m_; }
  M& module() noexcept { return m_; }
  /// The module's current device: that of its first parameter (the CPU for a module without parameters).
  c10::Device device() const { return params_.empty() ? c10::Device(c10::kCPU) : params_.front().device(); }
  const torch_model_options& options() const noexcept { return o_; }
  std::vector<at::Tensor> parameters() { return parameters_of(m_); }

  /// Clears the parameters' gradients.
  void zero_grad() {
    require_trainable(call_ + "::zero_grad");
    opt_->zero_grad();
  }

  /// Writes the module: a TorchScript module with its save() (read it back with cai::load_torchscript), a C++ module
  /// with torch::save. Errors are cai::error naming the path.
  void save(const std::filesystem::path& path) {
    const std::string call = call_ + "::save";
    try {
      if constexpr (std::same_as<M, jit_module>) m_.save(path.string());
      else ::torch::save(m_, path.string());
    } catch (const c10::Error& e) {
      throw cai::error(detail::concat(call, ": cannot write '", path.string(), "': ", first_line(e.what_without_backtrace())));
    } catch (const std::exception& e) {
      throw cai::error(detail::concat(call, ": cannot write '", path.string(), "': ", first_line(e.what())));
    }
  }

  /// One optimiser step at `learning_rate` (see the header comment); returns the pre-clip global gradient norm.
  float step(double learning_rate) {
    if (!(learning_rate >= 0.0) || !std::isfinite(learning_rate))
      detail::fail_argument(call_ + "::step", "learning_rate", "a finite value >= 0", learning_rate);
    require_trainable(call_ + "::step");
    return guarded(call_ + "::step", [&] {
      for (auto& g : opt_->param_groups()) g.options().set_lr(learning_rate);
      std::vector<at::Tensor> with_grad, norms;
      for (auto& p : params_)
        if (p.grad().defined()) {
          with_grad.push_back(p);
          norms.push_back(at::linalg_vector_norm(p.grad().detach(), 2, c10::nullopt, false, at::kDouble));
        }
      // One device-to-host read for the whole norm, accumulated in fp64.
      const double norm = norms.empty() ? 0.0 : at::linalg_vector_norm(at::stack(norms), 2).item<double>();
      if (!std::isfinite(norm)) return static_cast<float>(norm);  // skip the step (see the header comment)
      if (o_.max_grad_norm > 0.0 && norm > o_.max_grad_norm) {
        const double scale = o_.max_grad_norm / (norm + 1e-6);
        ::torch::NoGradGuard ng;
        for (auto& p : with_grad) p.grad().mul_(scale);
      }
      opt_->step();
      return static_cast<float>(norm);
    });
  }

  torch_model_base(const torch_model_base&) = delete;  // a copy would share the parameters: clone the module instead
  torch_model_base& operator=(const torch_model_base&) = delete;
  torch_model_base(torch_model_base&&) noexcept = default;
  torch_model_base& operator=(torch_model_base&&) noexcept = default;

 protected:
  torch_model_base(M m, torch_model_options o, std::string call) : m_(std::move(m)), o_(std::move(o)), call_(std::move(call)) {
    if (o_.vocab < 0) detail::fail_argument(call_, "options.vocab", "a value >= 0 (0: inferred)", o_.vocab);
    if (o_.max_seq < 0) detail::fail_argument(call_, "options.max_seq", "a value >= 0 (0: unchecked)", o_.max_seq);
    if (o_.pad_id < 0) detail::fail_argument(call_, "options.pad_id", "a value >= 0", o_.pad_id);
    if (!(o_.max_grad_norm >= 0.0) || !std::isfinite(o_.max_grad_norm))
      detail::fail_argument(call_, "options.max_grad_norm", "a finite value >= 0 (0: no clipping)", o_.max_grad_norm);
    if constexpr (!std::same_as<M, jit_module>)
      if (!m_) detail::fail_argument(call_, "module", "a module", "an empty module handle");
    params_ = parameters_of(m_);
    if (params_.empty()) return;  // usable for inference (a programmatic reward, a frozen rule); step() refuses
    opt_ = guarded(call_, [&] {
      return o_.optimizer ? o_.optimizer(params_)
                          : std::unique_ptr<::torch::optim::Optimizer>(std::make_unique<::torch::optim::AdamW>(
                                params_, ::torch::optim::AdamWOptions(1e-5).weight_decay(0.0)));
    });
    if (!opt_) detail::fail_argument(call_, "options.optimizer", "a factory returning an optimiser", "nullptr");
  }

  /// Puts the module in the mode options.eval_mode asks for (before every forward: the module is shared).
  void set_mode() { set_train(m_, !o_.eval_mode); }

  void require_trainable(const std::string& call) const {
    if (!opt_) detail::fail_argument(call, "module", "a module with parameters to train", "a module without parameters");
  }

  /// ids (B, T) int64 on the CPU: the batch's tokens, pad_id where the mask is 0, every shape and id checked (vocab
  /// 0: unknown, ids need only be >= 0).
  at::Tensor ids_of(const token_batch& batch, std::string_view call, std::int64_t vocab) const {
    check_token_batch(call, batch, vocab, o_.max_seq);
    const std::int64_t B = batch.tokens.extent(0), T = batch.tokens.extent(1);
    if (B == 0 || T == 0) detail::fail_argument<shape_error>(call, "batch.tokens", "at least one row and one position", detail::concat(B, "x", T));
    auto ids = at::empty({B, T}, at::kLong);
    std::int64_t* p = ids.data_ptr<std::int64_t>();
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T; ++t) p[b * T + t] = batch.mask(b, t) ? batch.tokens(b, t) : o_.pad_id;
    return ids;
  }

  /// ids_of, on the module's device.
  at::Tensor device_ids(const token_batch& batch, std::string_view call, std::int64_t vocab) const {
    auto ids = ids_of(batch, call, vocab);
    const auto dev = device();
    return dev.is_cpu() ? ids : guarded(call, [&] { return ids.to(dev); });
  }

  M m_;
  torch_model_options o_;
  std::string call_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<::torch::optim::Optimizer> opt_;
};

/// The forward handles' common part: the state of one forward, owned once (move-only: a copy could be backwarded
/// twice), and a checked access that names "handle" when it is empty or moved from.
template <class State>
class move_only_handle {
 public:
  move_only_handle() = default;
  move_only_handle(move_only_handle&&) noexcept = default;
  move_only_handle& operator=(move_only_handle&&) noexcept = default;
  move_only_handle(const move_only_handle&) = delete;
  move_only_handle& operator=(const move_only_handle&) = delete;

 protected:
  const State& live(std::string_view call) const {
    if (!state_) detail::fail_argument(call, "handle", "a live forward handle", "an empty or moved-from handle");
    return *state_;
  }
  std::unique_ptr<State> state_;
};

/// What torch_lm::train_forward keeps.
struct lm_forward_state {
  at::Tensor logits;                     // (B, T, V) with its graph (cai_host path)
  at::Tensor logp_graph, entropy_graph;  // (B, T) with their graphs (torch_ops path)
  at::Tensor logp, entropy;              // (B, T) host float
  at::Tensor tokens, mask, saved;        // host int32 / uint8 / float (B, T, 3) (cai_host path)
  float temperature = 1.0f;
  bool cai_path = true;
};

/// What torch_scalar_model::train_forward keeps: values with their graph, their host copy, the bool mask.
struct scalar_forward_state {
  at::Tensor graph, host, mask;
};

/// Host copies of a (B, T) float tensor, as cai views want them.
inline at::Tensor host_float(const at::Tensor& t) { return t.detach().to(at::kCPU, at::kFloat).contiguous(); }

/// A (B, T) float tensor on `dev` holding a host view's values (a copy: the view may be strided or const).
inline at::Tensor tensor_from(tensor_view<const float, 2> v, c10::Device dev) {
  auto t = at::empty({v.extent(0), v.extent(1)}, at::kFloat);
  float* p = t.data_ptr<float>();
  for (std::int64_t b = 0; b < v.extent(0); ++b)
    for (std::int64_t s = 0; s < v.extent(1); ++s) p[b * v.extent(1) + s] = v(b, s);
  return dev.is_cpu() ? t : t.to(dev);
}

}  // namespace detail::tch

/// A LibTorch causal LM as a cai::trainable_policy and cai::sampling_policy (see the header comment).
template <detail::tch::torch_module Module>
class torch_lm : public detail::tch::torch_model_base<Module> {
  using base = detail::tch::torch_model_base<Module>;

 public:
  /// What train_forward computed: per-token outputs on the host and the autograd graph behind them. Move-only.
  class forward_handle : public detail::tch::move_only_handle<detail::tch::lm_forward_state> {
   public:
    tensor_view<const float, 2> logp() const { return torch_view<const float, 2>(this->live(call).logp, call, "logp"); }
    /// Empty (0 x 0) when the forward did not request entropy.
    tensor_view<const float, 2> entropy() const {
      const auto& st = this->live(call);
      if (!st.entropy.defined()) return tensor_view<const float, 2>(nullptr, {0, 0});
      return torch_view<const float, 2>(st.entropy, call, "entropy");
    }

   private:
    friend class torch_lm;
    static constexpr std::string_view call = "cai::torch_lm::forward_handle";
  };

  explicit torch_lm(Module module, torch_model_options options = {})
      : base(std::move(module), std::move(options), "cai::torch_lm") {
    vocab_ = this->o_.vocab;
    if (vocab_ == 0) {  // a one-token probe forward tells the vocabulary (and checks the output's rank)
      ::torch::NoGradGuard ng;
      this->set_mode();
      const auto probe = at::zeros({1, 1}, at::TensorOptions().dtype(at::kLong).device(this->device()));
      check_logits(detail::tch::call_forward(this->m_, probe, "cai::torch_lm"), 1, 1, "cai::torch_lm");
    }
    if (this->o_.pad_id >= vocab_)
      detail::fail_argument(this->call_, "options.pad_id", detail::concat("an id in [0, ", vocab_, ")"), this->o_.pad_id);
  }

  std::int64_t vocab_size() const noexcept { return vocab_; }
  /// What the trainers read for their default length limit: max_seq = options.max_seq (0: none).
  struct config_type {
    std::int64_t max_seq = 0;
  };
  config_type config() const noexcept { return {this->o_.max_seq}; }
  /// True when sample() uses the module's key-value cache.
  bool uses_cache() const { return this->o_.use_cache && detail::tch::has_cache(this->m_); }

  /// Logits (B, T, V) of a batch as the module returns them (padding positions included), without gradients.
  at::Tensor logits(const token_batch& batch) {
    constexpr std::string_view call = "cai::torch_lm::logits";
    ::torch::NoGradGuard ng;
    return forward_logits(batch, call);
  }

  /// Per-token log-probs (B, T) at `temperature`, without gradients (position 0 and unscored positions: 0).
  void log_probs(const token_batch& batch, tensor_view<float, 2> out, float temperature = 1.0f) {
    constexpr std::string_view call = "cai::torch_lm::log_probs";
    if (out.extents() != batch.tokens.extents())
      detail::fail_argument<shape_error>(call, "out", "the shape of batch.tokens", detail::concat(out.extent(0), "x", out.extent(1)));
    ::torch::NoGradGuard ng;
    auto st = run(batch, forward_request{.entropy = false, .temperature = temperature}, call);
    const auto lp = torch_view<const float, 2>(st->logp, call, "logp");
    for (std::int64_t b = 0; b < out.extent(0); ++b)
      for (std::int64_t t = 0; t < out.extent(1); ++t) out(b, t) = lp(b, t);
  }

  forward_handle train_forward(const token_batch& batch, const forward_request& req) {
    forward_handle h;
    h.state_ = run(batch, req, "cai::torch_lm::train_forward");
    return h;
  }

  /// Pushes dL/dlogp (and dL/dentropy when given) through the handle's graph into the parameters' gradients. The
  /// arguments are checked before the handle is consumed.
  void backward(forward_handle&& h, const per_token_grads& g) {
    constexpr std::string_view call = "cai::torch_lm::backward";
    const auto& live = h.live(call);
    const std::int64_t B = live.logp.size(0), T = live.logp.size(1);
    const std::array<std::int64_t, 2> bt{B, T};
    if (g.dlogp.extents() != bt)
      detail::fail_argument<shape_error>(call, "grads.dlogp", detail::concat(B, "x", T), detail::concat(g.dlogp.extent(0), "x", g.dlogp.extent(1)));
    const bool with_entropy = !g.dentropy.empty();
    if (with_entropy && g.dentropy.extents() != bt)
      detail::fail_argument<shape_error>(call, "grads.dentropy", detail::concat(B, "x", T),
                                         detail::concat(g.dentropy.extent(0), "x", g.dentropy.extent(1)));
    if (with_entropy && !live.entropy.defined())
      detail::fail_argument(call, "grads.dentropy", "no entropy gradient (the forward did not request entropy)", "a gradient");
    const auto st = std::move(h.state_);
    detail::tch::guarded(call, [&] {
      if (st->cai_path) {
        auto dlogits = at::empty_like(st->logits, at::MemoryFormat::Contiguous);
        const auto lg = torch_any_view(st->logits.detach(), call, "logits");
        const auto dl = torch_any_view(dlogits, call, "dlogits");
        const auto tokens = torch_view<const std::int32_t, 2>(st->tokens, call, "tokens");
        const auto mask = torch_view<const std::uint8_t, 2>(st->mask, call, "mask");
        const logprob_grads<2> grads{.dlogp = g.dlogp, .dentropy = g.dentropy,
                                     .saved = torch_view<const float, 3>(st->saved, call, "saved")};
        visit_floating<3>(lg, call, "logits", [&](auto x) {
          using E = std::remove_const_t<typename decltype(x)::element_type>;
          with_backend([&](const auto& be) {
            token_logprobs_backward(be, x, tokens, mask, grads, dl.template as<E, 3>(call, "dlogits"),
                                    {.temperature = st->temperature});
          });
        });
        st->logits.backward(dlogits);
      } else {
        if (!st->logp_graph.requires_grad()) return;  // a length-1 batch, or a forward run without gradients
        const auto dev = st->logp_graph.device();
        std::vector<at::Tensor> outs{st->logp_graph}, grads{detail::tch::tensor_from(g.dlogp, dev)};
        if (with_entropy) {
          outs.push_back(st->entropy_graph);
          grads.push_back(detail::tch::tensor_from(g.dentropy, dev));
        }
        ::torch::autograd::backward(outs, grads);
      }
    });
  }

  /// Samples up to max_new_tokens after each prompt row (see the header comment). Stops a row at eos_id (>= 0).
  /// sampling_params::stop (strings) is not applied here: a token-level policy has no text; the trainers stop on eos.
  sample_batch sample(const token_batch& prompts, const sampling_params& sp, std::int32_t eos_id = -1) {
    constexpr std::string_view call = "cai::torch_lm::sample";
    check_sampling_params(call, sp);
    check_token_batch(call, prompts, vocab_);
    sample_batch out;
    const auto lengths = start_samples(call, prompts, sp.max_new_tokens, this->o_.max_seq, out);
    const std::int64_t T = out.length;
    std::map<std::int64_t, std::vector<std::int64_t>> groups;  // prompt length -> rows
    for (std::size_t b = 0; b < lengths.size(); ++b) groups[lengths[b]].push_back(static_cast<std::int64_t>(b));
    if (sp.max_new_tokens == 0) return out;
    ::torch::NoGradGuard ng;
    this->set_mode();
    detail::tch::guarded(call, [&] {
      for (const auto& [len, rows] : groups) sample_group(out, rows, len, T, sp, eos_id, call);
    });
    return out;
  }

 private:
  template <class F>
  void with_backend(F&& f) const {
    if (this->o_.threaded) f(threaded_host{});
    else f(host{});
  }

  at::Tensor forward_logits(const token_batch& batch, std::string_view call) {
    const auto ids = this->device_ids(batch, call, vocab_);
    this->set_mode();
    auto logits = detail::tch::call_forward(this->m_, ids, call);
    check_logits(logits, ids.size(0), ids.size(1), call);
    return logits;
  }

  void check_logits(const at::Tensor& logits, std::int64_t B, std::int64_t T, std::string_view call) {
    if (logits.dim() != 3 || logits.size(0) != B || logits.size(1) != T)
      detail::fail_argument<shape_error>(call, "module", detail::concat("logits of shape (", B, ", ", T, ", V)"),
                                         detail::concat("a rank-", logits.dim(), " output of shape ", c10::str(logits.sizes())));
    if (vocab_ == 0) vocab_ = logits.size(2);
    if (logits.size(2) != vocab_)
      detail::fail_argument<shape_error>(call, "module", detail::concat("a vocabulary of ", vocab_),
                                         detail::concat("logits with ", logits.size(2), " entries per position"));
    if (vocab_ < 1) detail::fail_argument<shape_error>(call, "module", "a vocabulary of at least 1", vocab_);
    if (!at::isFloatingType(logits.scalar_type()))
      detail::fail_argument<dtype_error>(call, "module", "floating-point logits", c10::toString(logits.scalar_type()));
  }

  std::unique_ptr<detail::tch::lm_forward_state> run(const token_batch& batch, const forward_request& req, std::string_view call) {
    if (!(req.temperature > 0.0f) || !std::isfinite(req.temperature))
      detail::fail_argument(call, "temperature", "a finite value > 0", req.temperature);
    auto st = std::make_unique<detail::tch::lm_forward_state>();
    st->temperature = req.temperature;
    auto logits = forward_logits(batch, call);
    const std::int64_t B = logits.size(0), T = logits.size(1);
    // The scored positions: real, in the loss mask, and not position 0.
    auto mask = at::zeros({B, T}, at::kByte);
    auto tokens = at::zeros({B, T}, at::kInt);
    {
      std::uint8_t* mp = mask.data_ptr<std::uint8_t>();
      std::int32_t* tp = tokens.data_ptr<std::int32_t>();
      const auto scored = batch.loss_mask.empty() ? batch.mask : batch.loss_mask;
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t t = 0; t < T; ++t) {
          const bool real = batch.mask(b, t) != 0;
          tp[b * T + t] = real ? batch.tokens(b, t) : 0;
          mp[b * T + t] = static_cast<std::uint8_t>(real && scored(b, t) && t > 0 ? 1 : 0);
        }
    }
    const auto path = this->o_.logits_path;
    const bool on_cpu = logits.device().is_cpu();
    const auto st_type = logits.scalar_type();
    const bool cai_ok = on_cpu && (st_type == at::kFloat || st_type == at::kBFloat16 || st_type == at::kHalf);
    if (path == torch_logits_path::cai_host && !cai_ok)
      detail::fail_argument(call, "options.logits_path", "torch_ops or automatic for logits that are not fp32/bf16/fp16 on the CPU",
                            detail::concat("cai_host with ", c10::toString(st_type), " logits on ", logits.device().str()));
    st->cai_path = path == torch_logits_path::cai_host || (path == torch_logits_path::automatic && cai_ok);
    detail::tch::guarded(call, [&] {
      if (st->cai_path) {
        st->logits = logits.is_contiguous() ? logits : logits.contiguous();
        st->tokens = tokens;
        st->mask = mask;
        st->saved = at::empty({B, T, 3}, at::kFloat);
        st->logp = at::empty({B, T}, at::kFloat);
        if (req.entropy) st->entropy = at::empty({B, T}, at::kFloat);
        logprob_outputs<2> outs{.logp = torch_view<float, 2>(st->logp, call, "logp"),
                                .entropy = req.entropy ? torch_view<float, 2>(st->entropy, call, "entropy") : tensor_view<float, 2>{},
                                .saved = torch_view<float, 3>(st->saved, call, "saved")};
        const auto tv = torch_view<const std::int32_t, 2>(tokens, call, "tokens");
        const auto mv = torch_view<const std::uint8_t, 2>(mask, call, "mask");
        visit_floating<3>(torch_any_view(st->logits.detach(), call, "logits"), call, "logits", [&](auto x) {
          with_backend([&](const auto& be) { token_logprobs(be, x, tv, mv, outs, {.temperature = req.temperature}); });
        });
      } else {
        // log_softmax + gather (+ entropy), shifted so that position t reads logits[t - 1] (DESIGN.md alignment). The
        // logit rows that score nothing are zeroed first, so whatever they hold (NaN, -inf) reaches neither the outputs
        // nor the gradients; the outputs are selected (not multiplied) by the mask for the same reason.
        const auto dev = logits.device();
        if (T < 2) {  // nothing is scored; backward() has nothing to push
          st->logp_graph = at::zeros({B, T}, at::TensorOptions().dtype(at::kFloat).device(dev));
          st->logp = detail::tch::host_float(st->logp_graph);
          if (req.entropy) {
            st->entropy_graph = st->logp_graph;
            st->entropy = st->logp.clone();
          }
          return;
        }
        const auto m = mask.to(dev).to(at::kBool);                                  // (B, T)
        const auto rows = m.narrow(1, 1, T - 1).unsqueeze(-1);                      // (B, T-1, 1): rows t-1 that score t
        auto z = logits.narrow(1, 0, T - 1).masked_fill(rows.logical_not(), 0.0);
        if (req.temperature != 1.0f) z = z.to(at::kFloat) / static_cast<double>(req.temperature);  // not in bf16/fp16
        const auto lsm = at::log_softmax(z, -1, at::kFloat);                        // (B, T-1, V) fp32
        const auto next = tokens.to(dev, at::kLong).narrow(1, 1, T - 1).unsqueeze(-1);
        const auto zero = at::zeros({B, 1}, at::TensorOptions().dtype(at::kFloat).device(dev));
        const auto zeros = at::zeros({B, T}, at::TensorOptions().dtype(at::kFloat).device(dev));
        st->logp_graph = at::where(m, at::cat({zero, lsm.gather(-1, next).squeeze(-1)}, 1), zeros);
        st->logp = detail::tch::host_float(st->logp_graph);
        if (req.entropy) {
          const auto p = lsm.exp();
          const auto h = -(p * lsm.masked_fill(p == 0, 0.0)).sum(-1);  // 0 log 0 = 0
          st->entropy_graph = at::where(m, at::cat({zero, h}, 1), zeros);
          st->entropy = detail::tch::host_float(st->entropy_graph);
        }
      }
    });
    return st;
  }

  void sample_group(sample_batch& out, const std::vector<std::int64_t>& rows, std::int64_t len, std::int64_t T,
                    const sampling_params& sp, std::int32_t eos_id, std::string_view call) {
    const auto G = static_cast<std::int64_t>(rows.size());
    const auto V = vocab_;
    const auto dev = this->device();
    auto ids = at::empty({G, len}, at::kLong);
    std::int64_t* ip = ids.data_ptr<std::int64_t>();
    for (std::int64_t g = 0; g < G; ++g)
      for (std::int64_t t = 0; t < len; ++t) ip[g * len + t] = out.tokens[static_cast<std::size_t>(rows[static_cast<std::size_t>(g)] * T + t)];
    at::Tensor seq = dev.is_cpu() ? ids : ids.to(dev);
    const bool cached = uses_cache();
    std::vector<at::Tensor> past;
    auto next_logits = [&](const at::Tensor& input, std::int64_t L) {
      at::Tensor lg = cached ? detail::tch::call_cached(this->m_, input, past, call) : detail::tch::call_forward(this->m_, input, call);
      check_logits(lg, G, L, call);
      return detail::tch::host_float(lg.select(1, L - 1));  // (G, V)
    };
    at::Tensor last = next_logits(seq, len);
    std::vector<rng_stream> rngs;
    for (auto b : rows) rngs.emplace_back(derive_seed(sp.seed, static_cast<std::uint64_t>(b)), 0);
    std::vector<char> alive(static_cast<std::size_t>(G), 1);
    std::vector<float> z(static_cast<std::size_t>(V));
    for (std::int32_t k = 0; k < sp.max_new_tokens; ++k) {
      at::Tensor step_ids = at::full({G, 1}, this->o_.pad_id, at::kLong);
      std::int64_t* sp_ids = step_ids.data_ptr<std::int64_t>();
      const float* lp = last.data_ptr<float>();
      bool any = false;
      for (std::int64_t g = 0; g < G; ++g) {
        if (!alive[static_cast<std::size_t>(g)]) continue;
        for (std::int64_t j = 0; j < V; ++j) z[static_cast<std::size_t>(j)] = lp[g * V + j] / sp.temperature;
        const auto [tok, logp] = draw_token(z, sp, rngs[static_cast<std::size_t>(g)]);
        const auto pos = static_cast<std::size_t>(rows[static_cast<std::size_t>(g)] * T + len + k);
        out.tokens[pos] = tok;
        out.mask[pos] = 1;
        out.response[pos] = 1;
        out.logp[pos] = logp;
        sp_ids[g] = tok;
        if (tok == eos_id) alive[static_cast<std::size_t>(g)] = 0;
        else any = true;
      }
      if (!any || k + 1 == sp.max_new_tokens) break;
      const at::Tensor step_dev = dev.is_cpu() ? step_ids : step_ids.to(dev);
      if (cached) {
        last = next_logits(step_dev, 1);
      } else {
        seq = at::cat({seq, step_dev}, 1);
        last = next_logits(seq, seq.size(1));
      }
    }
  }

  std::int64_t vocab_ = 0;
};

template <class M>
torch_lm(M, torch_model_options = {}) -> torch_lm<M>;

/// A LibTorch scalar head as cai::scalar_model and cai::trainable_scalar_model (see the header comment). Values at
/// padding positions are 0.
template <detail::tch::torch_module Module>
class torch_scalar_model : public detail::tch::torch_model_base<Module> {
  using base = detail::tch::torch_model_base<Module>;

 public:
  /// What train_forward computed: the values on the host and the autograd graph behind them. Move-only.
  class forward_handle : public detail::tch::move_only_handle<detail::tch::scalar_forward_state> {
   public:
    tensor_view<const float, 2> values() const { return torch_view<const float, 2>(this->live(call).host, call, "values"); }

   private:
    friend class torch_scalar_model;
    static constexpr std::string_view call = "cai::torch_scalar_model::forward_handle";
  };

  explicit torch_scalar_model(Module module, torch_model_options options = {})
      : base(std::move(module), std::move(options), "cai::torch_scalar_model") {}

  void scalars(const token_batch& batch, tensor_view<float, 2> out) {
    constexpr std::string_view call = "cai::torch_scalar_model::scalars";
    if (out.extents() != batch.tokens.extents())
      detail::fail_argument<shape_error>(call, "out", "the shape of batch.tokens", detail::concat(out.extent(0), "x", out.extent(1)));
    ::torch::NoGradGuard ng;
    const auto st = run(batch, call);
    const auto v = torch_view<const float, 2>(st->host, call, "values");
    for (std::int64_t b = 0; b < out.extent(0); ++b)
      for (std::int64_t t = 0; t < out.extent(1); ++t) out(b, t) = v(b, t);
  }

  forward_handle train_forward(const token_batch& batch) {
    forward_handle h;
    h.state_ = run(batch, "cai::torch_scalar_model::train_forward");
    return h;
  }

  /// Pushes dL/dvalues (B, T) through the handle's graph (padding positions get no gradient). The arguments are
  /// checked before the handle is consumed.
  void backward(forward_handle&& h, tensor_view<const float, 2> dvalues) {
    constexpr std::string_view call = "cai::torch_scalar_model::backward";
    const std::array<std::int64_t, 2> bt{h.live(call).host.size(0), h.live(call).host.size(1)};
    if (dvalues.extents() != bt)
      detail::fail_argument<shape_error>(call, "dvalues", detail::concat(bt[0], "x", bt[1]),
                                         detail::concat(dvalues.extent(0), "x", dvalues.extent(1)));
    const auto st = std::move(h.state_);
    detail::tch::guarded(call, [&] { st->graph.backward(detail::tch::tensor_from(dvalues, st->graph.device())); });
  }

 private:
  std::unique_ptr<detail::tch::scalar_forward_state> run(const token_batch& batch, std::string_view call) {
    const auto ids = this->device_ids(batch, call, this->o_.vocab);
    this->set_mode();
    auto v = detail::tch::call_forward(this->m_, ids, call);
    const std::int64_t B = ids.size(0), T = ids.size(1);
    if (v.dim() == 3 && v.size(2) == 1) v = v.squeeze(2);
    if (v.dim() != 2 || v.size(0) != B || v.size(1) != T)
      detail::fail_argument<shape_error>(call, "module", detail::concat("values of shape (", B, ", ", T, ") or (", B, ", ", T, ", 1)"),
                                         detail::concat("a rank-", v.dim(), " output of shape ", c10::str(v.sizes())));
    if (!at::isFloatingType(v.scalar_type()))
      detail::fail_argument<dtype_error>(call, "module", "floating-point values", c10::toString(v.scalar_type()));
    auto st = std::make_unique<detail::tch::scalar_forward_state>();
    auto mask = at::empty({B, T}, at::kBool);
    bool* mp = mask.data_ptr<bool>();
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T; ++t) mp[b * T + t] = batch.mask(b, t) != 0;
    detail::tch::guarded(call, [&] {
      st->mask = v.device().is_cpu() ? mask : mask.to(v.device());
      const auto vf = v.to(at::kFloat);
      st->graph = at::where(st->mask, vf, at::zeros_like(vf));
      st->host = detail::tch::host_float(st->graph);
    });
    return st;
  }
};

template <class M>
torch_scalar_model(M, torch_model_options = {}) -> torch_scalar_model<M>;

}  // namespace cai
