// cai/models/transformer_scalar.hpp — the embedded transformer with a scalar head: reward, cost and value models.
//
// The trunk is cai::models::transformer_lm's, the same code (tf_detail::trunk in cai/models/transformer.hpp):
// token + position embeddings, n_layers pre-LayerNorm blocks, the final LayerNorm. The vocabulary head is replaced
// by one scalar per position:
//   value_t = LNf(h_t) . w + b                    (w: d_model floats, "value_w"; b: one float, "value_b")
// config.vocab is the input vocabulary (the embedding table) only.
//
// Use as a model of cai::scalar_model: scalars(batch, out) writes out[b, t] = value_t for every real position
// and 0 on padding (mask 0). batch.loss_mask is not read (a value model uses every position; the caller weights
// its loss). Since attention is causal, value_t depends on tokens[b, <= t] only.
//   - A reward or cost model's sequence score is the value at the LAST REAL TOKEN of each row (the convention of
//     cai/concepts/scalar_model.hpp); sequence_scores() reads it out. Train such a model by putting the gradient
//     of its loss (Bradley-Terry, regression, ...) on that position only.
//   - A value model (PPO critic) uses every position: value_t estimates the return from state tokens[b, <= t].
//
// Training: train_forward(batch) -> forward_handle (values() (B, T), every activation kept alive);
// backward(std::move(handle), dvalues (B, T)) accumulates the exact gradients of L given dL/dvalue (dvalues at
// padding are ignored); zero_grad(); step(lr) is transformer_lm's AdamW (the same code, tf_detail::parameter_store)
// with the same options: decay applies to the trunk's matrices and value_w, not to value_b. The same
// determinism: each row's gradient goes to its own buffer and rows are summed in row order, so cai::host and
// cai::threaded_host give the same bits.
//
// Backward of the head: dLNf(h_t) = dv_t w, dw += dv_t LNf(h_t), db += dv_t; then the trunk's backward.
//
// File format: transformer_lm's (see cai/models/transformer.hpp) with the magic "CAITFSC1": u32 version 1 | the
// 6 config fields | u64 parameter count | parameters in parameter_table() order | FNV-1a 64. load() applies the same
// checks (truncation, magic, version, config, size, checksum, trailing bytes), throws cai::parse_error naming the
// problem and leaves the model unchanged on failure; optimiser state is not saved. An LM file is rejected by its
// magic.
// Checkpoints (save_checkpoint / load_checkpoint) hold the full training state, transformer_lm's checkpoint layout
// under the magic "CAITSCC1": parameters, then the i64 AdamW step count and the moments m and v, so resumed
// training is bit-identical; the same checks, atomic writes (path + ".tmp", renamed) and unchanged model on failure.
//
//   cai::models::transformer_scalar<> rm({.vocab = 257, .d_model = 64, .n_heads = 4, .n_layers = 2, .d_ff = 256,
//                                         .max_seq = 128}, cai::host{}, /*seed=*/1);
//   auto h = rm.train_forward(batch);
//   // dv: dL/dvalue (B, T), e.g. non-zero only at each row's last real token for a reward model
//   rm.zero_grad();  rm.backward(std::move(h), dv);  rm.step(1e-3);
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "transformer.hpp"

namespace cai::models {

template <bulk_backend Backend = host>
class transformer_scalar {
 public:
  /// One named parameter tensor: a slice [offset, offset + size) of parameters() / gradients().
  using parameter_info = tf_detail::parameter_info;

  /// What train_forward computed: the values (B, T) and every activation, kept alive until backward.
  class forward_handle {
   public:
    tensor_view<const float, 2> values() const noexcept { return state_->values.view(); }

   private:
    friend class transformer_scalar;
    struct state {
      tensor<std::int32_t, 2> tokens;
      tensor<std::uint8_t, 2> mask;
      tensor<float, 2> values;
      std::vector<tf_detail::row_acts> rows;
    };
    std::shared_ptr<state> state_;
  };

  /// Builds the model for `config` (every field checked as for transformer_lm) with weights drawn
  /// deterministically from `seed`: the trunk as transformer_lm's, value_w ~ N(0, init_std^2), value_b = 0.
  explicit transformer_scalar(const transformer_config& config, Backend backend = Backend{}, std::uint64_t seed = 0,
                              const transformer_options& options = {})
      : backend_(std::move(backend)), cfg_(config), opt_(options) {
    constexpr std::string_view call = "cai::models::transformer_scalar";
    tf_detail::validate_config(cfg_, call);
    tf_detail::validate_options(opt_, call);
    trunk_.cfg = cfg_;
    trunk_.build(ps_);
    value_w_ = ps_.add("value_w", cfg_.d_model, true);
    value_b_ = ps_.add("value_b", 1, false);
    ps_.allocate();
    ps_.init_weights(opt_, cfg_.n_layers, seed);
  }

  const transformer_config& config() const noexcept { return cfg_; }
  const transformer_options& options() const noexcept { return opt_; }
  std::int64_t parameter_count() const noexcept { return static_cast<std::int64_t>(ps_.params.size()); }
  std::span<float> parameters() noexcept { return ps_.params; }
  std::span<const float> parameters() const noexcept { return ps_.params; }
  std::span<const float> gradients() const noexcept { return ps_.grads; }
  const std::vector<parameter_info>& parameter_table() const noexcept { return ps_.table; }
  float last_grad_norm() const noexcept { return ps_.last_norm; }
  std::int64_t steps_taken() const noexcept { return ps_.steps; }

  /// cai::scalar_model: out (B, T) = value of every real position, 0 on padding.
  void scalars(const token_batch& batch, tensor_view<float, 2> out) const {
    if (out.extents() != batch.tokens.extents())
      detail::fail_argument<shape_error>("cai::models::transformer_scalar::scalars", "out", "the shape of batch.tokens",
                                         detail::concat(out.extent(0), "x", out.extent(1)));
    auto st = run_forward(batch, "cai::models::transformer_scalar::scalars");
    for (std::int64_t b = 0; b < out.extent(0); ++b)
      for (std::int64_t t = 0; t < out.extent(1); ++t) out(b, t) = st->values(b, t);
  }

  /// A reward / cost model's sequence scores: for each row the value at its last real token (B floats; 0 for a
  /// row with no real token).
  std::vector<float> sequence_scores(const token_batch& batch) const {
    auto st = run_forward(batch, "cai::models::transformer_scalar::sequence_scores");
    const std::int64_t B = batch.tokens.extent(0);
    std::vector<float> s(static_cast<std::size_t>(B), 0.0f);
    for (std::int64_t b = 0; b < B; ++b)
      if (st->rows[b].n > 0) s[static_cast<std::size_t>(b)] = st->values(b, st->rows[b].n - 1);
    return s;
  }

  /// The training forward: values (B, T) as scalars() writes them, with every activation kept for backward.
  forward_handle train_forward(const token_batch& batch) {
    forward_handle h;
    h.state_ = run_forward(batch, "cai::models::transformer_scalar::train_forward");
    return h;
  }

  /// Accumulates the exact parameter gradients of L given dvalues = dL/dvalues (B, T); entries at padding are
  /// ignored. Consumes the handle.
  void backward(forward_handle&& h, tensor_view<const float, 2> dvalues) {
    constexpr std::string_view call = "cai::models::transformer_scalar::backward";
    if (!h.state_) detail::fail_argument(call, "handle", "a live forward handle", "a moved-from handle");
    if (dvalues.extents() != h.state_->tokens.extents())
      detail::fail_argument<shape_error>(call, "dvalues", "the shape of the forward's batch",
                                         detail::concat(dvalues.extent(0), "x", dvalues.extent(1)));
    auto st = std::move(h.state_);
    const std::int64_t B = st->tokens.extent(0), T = st->tokens.extent(1);
    // dL/dvalue in a dense (B, T) copy with padding zeroed (the caller's view may be strided).
    std::vector<float> dv(static_cast<std::size_t>(B * T), 0.0f);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T; ++t)
        if (st->mask(b, t)) dv[static_cast<std::size_t>(b * T + t)] = dvalues(b, t);
    const auto P = parameter_count();
    std::vector<float> row_grads(static_cast<std::size_t>(B * P), 0.0f);
    parallel_for(backend_, B, 1, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t b = lo; b < hi; ++b)
        backward_row(st->rows[b], &st->tokens(b, 0), dv.data() + b * T, row_grads.data() + b * P);
    });
    ps_.add_rows(backend_, row_grads, B);
  }

  void zero_grad() noexcept { std::fill(ps_.grads.begin(), ps_.grads.end(), 0.0f); }

  /// One AdamW step with global-norm clipping (transformer_lm's); returns the pre-clip gradient norm.
  float step(double learning_rate) {
    return ps_.adamw_step(backend_, opt_, learning_rate, "cai::models::transformer_scalar::step");
  }

  /// Initialises the trunk (embeddings, blocks, final LayerNorm) from a language model's, as reward, cost and value
  /// models usually start from the SFT policy (TRL's reward modelling, OpenRLHF's critic init); the scalar head keeps
  /// its own weights. The two configs must be equal (cai::invalid_argument naming "lm" otherwise). AdamW moments
  /// and the step count are reset.
  template <class LmBackend>
  void load_trunk(const transformer_lm<LmBackend>& lm) {
    constexpr std::string_view call = "cai::models::transformer_scalar::load_trunk";
    if (!(lm.config() == cfg_))
      detail::fail_argument(call, "lm", "a transformer_lm of this model's config",
                            detail::concat("d_model ", lm.config().d_model, ", n_layers ", lm.config().n_layers, ", vocab ",
                                           lm.config().vocab, " (this model: ", cfg_.d_model, ", ", cfg_.n_layers, ", ",
                                           cfg_.vocab, ")"));
    const auto& theirs = lm.parameter_table();
    const auto src = lm.parameters();
    for (const auto& pi : ps_.table) {
      if (pi.name == "value_w" || pi.name == "value_b") continue;
      const auto it = std::find_if(theirs.begin(), theirs.end(), [&](const auto& q) { return q.name == pi.name; });
      if (it == theirs.end() || it->size != pi.size)
        detail::fail_argument(call, "lm", detail::concat("a trunk tensor '", pi.name, "' of ", pi.size, " floats"), "none");
      std::copy_n(src.begin() + it->offset, pi.size, ps_.params.begin() + pi.offset);
    }
    std::fill(ps_.m.begin(), ps_.m.end(), 0.0f);
    std::fill(ps_.v.begin(), ps_.v.end(), 0.0f);
    ps_.steps = 0;
  }

  /// Writes the model to `path` (magic "CAITFSC1"). Throws cai::error when the file cannot be written.
  void save(const std::string& path) const { ps_.save(path, magic, cfg_, "cai::models::transformer_scalar::save"); }

  /// Reads parameters saved by save() into this model, whose config must equal the file's. Throws
  /// cai::parse_error naming the problem; the model is unchanged on failure. Adam state and step count are reset.
  void load(const std::string& path) {
    ps_.load(path, magic, "transformer_scalar", cfg_, "cai::models::transformer_scalar::load", false, checkpoint_magic,
             "a transformer_scalar checkpoint written by save_checkpoint(); read it with load_checkpoint()");
  }

  /// Writes the full training state (parameters, AdamW moments, step count; magic "CAITSCC1") so that a run resumed
  /// with load_checkpoint() continues bit for bit. Atomic (path + ".tmp", then rename); throws cai::error when the
  /// file cannot be written.
  void save_checkpoint(const std::filesystem::path& path) const {
    ps_.save(path.string(), checkpoint_magic, cfg_, "cai::models::transformer_scalar::save_checkpoint", true);
  }

  /// Restores what save_checkpoint() wrote into this model, whose config must equal the file's. Throws
  /// cai::parse_error naming the problem (load()'s checks; a weights-only file is refused by its magic); the model
  /// is unchanged on failure.
  void load_checkpoint(const std::filesystem::path& path) {
    ps_.load(path.string(), checkpoint_magic, "transformer_scalar checkpoint", cfg_,
             "cai::models::transformer_scalar::load_checkpoint", true, magic,
             "a weights-only transformer_scalar file written by save(); read it with load(), or write a checkpoint with "
             "save_checkpoint()");
  }

 private:
  static constexpr char magic[9] = "CAITFSC1";
  static constexpr char checkpoint_magic[9] = "CAITSCC1";

  std::shared_ptr<typename forward_handle::state> run_forward(const token_batch& batch, std::string_view call) const {
    tf_detail::check_batch(cfg_, batch, call);
    const std::int64_t B = batch.tokens.extent(0), T = batch.tokens.extent(1);
    auto st = std::make_shared<typename forward_handle::state>();
    st->tokens = tensor<std::int32_t, 2>({B, T});
    st->mask = tensor<std::uint8_t, 2>({B, T});
    st->values = tensor<float, 2>({B, T});
    st->rows.resize(static_cast<std::size_t>(B));
    for (std::int64_t b = 0; b < B; ++b) {
      std::int64_t n = 0;
      for (std::int64_t t = 0; t < T; ++t) {
        st->tokens(b, t) = batch.mask(b, t) ? batch.tokens(b, t) : 0;
        st->mask(b, t) = static_cast<std::uint8_t>(batch.mask(b, t) ? 1 : 0);
        if (batch.mask(b, t)) n = t + 1;
      }
      st->rows[b].n = n;
    }
    auto vals = st->values.view();
    parallel_for(backend_, B, 1, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t b = lo; b < hi; ++b) {
        auto& a = st->rows[b];
        if (a.n == 0) continue;
        trunk_.forward(ps_.params.data(), a, &st->tokens(b, 0));
        const std::int64_t C = cfg_.d_model;
        for (std::int64_t t = 0; t < a.n; ++t) {
          float v = 0;
          tf_detail::linear_row(&v, &a.lnf[t * C], P(value_w_), P(value_b_), C, 1);
          vals(b, t) = st->mask(b, t) ? v : 0.0f;
        }
      }
    });
    return st;
  }

  const float* P(std::int64_t off) const noexcept { return ps_.params.data() + off; }

  /// Backward of one row: dv (T) = dL/dvalue (0 at padding) -> parameter gradients written into g.
  void backward_row(const tf_detail::row_acts& a, const std::int32_t* tok, const float* dv, float* g) const {
    const std::int64_t n = a.n, C = cfg_.d_model;
    if (n == 0) return;
    std::vector<float> dln(static_cast<std::size_t>(n * C), 0.0f);
    for (std::int64_t t = 0; t < n; ++t)
      tf_detail::linear_row_backward(&dln[t * C], g + value_w_, g + value_b_, dv + t, &a.lnf[t * C], P(value_w_), C, 1);
    trunk_.backward(ps_.params.data(), a, tok, dln.data(), g);
  }

  Backend backend_;
  transformer_config cfg_;
  transformer_options opt_;
  tf_detail::trunk trunk_;
  tf_detail::parameter_store ps_;
  std::int64_t value_w_ = 0, value_b_ = 0;
};

}  // namespace cai::models
