// cai/models/transformer.hpp — the embedded default model: a small causal transformer language model (GPT-2
// style, pre-LayerNorm) with an exact hand-written backward, AdamW, KV-cache sampling and a checked file format.
//
// Architecture, for tokens x_0..x_{n-1} of one row (C = d_model, H = n_heads, hd = C / H, F = d_ff):
//   h_t   = wte[x_t] + wpe[t]
//   for each of n_layers blocks:
//     a   = LN1(h);  [q k v] = a Wqkv + bqkv
//     y_t = concat_heads( sum_{s <= t} softmax_s(q_t . k_s / sqrt(hd)) v_s )        (causal)
//     h   = h + y Wo + bo
//     m   = LN2(h);  h = h + GELU(m Wfc + bfc) Wfc2 + bfc2                             (GELU: tanh approximation)
//   logits_t = LNf(h_t) Whead + bhead                                                  (untied from wte)
// then cai::token_logprobs on the causal layout: logp[b, t] = log p(tokens[b, t] | tokens[b, < t]), position 0
// has none (DESIGN.md alignment). LayerNorm: (x - mean) / sqrt(var + 1e-5) * g + b, biased variance.
//
// Backward formulas (derived by hand; the same results as llm.c's train_gpt2.c, layernorm_backward,
// attention_backward and gelu_backward, which were read for cross-checking, not copied):
//   LayerNorm  xhat = (x - mean) * rstd, dn = dy * g:   dx = rstd * (dn - mean(dn) - xhat * mean(dn * xhat)),
//              dg += dy * xhat, db += dy.
//   softmax    dz_s = p_s (dp_s - sum_r p_r dp_r).
//   GELU       y = x/2 (1 + tanh u), u = sqrt(2/pi) (x + 0.044715 x^3):
//              dy/dx = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2).
//   linear     y = x W + b, W stored (in, out) row-major: dx = dy W^T, dW += x^T dy, db += dy.
//
// Shapes and conventions: batches are right-padded token_batch (B, T) with mask (B, T); positions whose mask is
// 0 are read as token 0, and each row is computed up to its last real token (padding after it costs nothing and
// cannot influence real positions, attention being causal). loss_mask, when given, selects the scored positions.
// A row's last real token must lie below config.max_seq.
//
// Numerics and determinism: fp32 parameters, activations and accumulations (no double on the hot path; only the
// sampler's final log-sum-exp is formed in double, as cai::models::bigram_lm does). The forward runs one batch
// row per chunk of cai::parallel_for; the backward writes each row's parameter gradient into its own buffer and
// sums the rows in row order, so cai::host and cai::threaded_host give the same bits at any thread count (at the
// cost of B x parameter_count() floats of scratch during backward).
//
// Optimiser: AdamW (Loshchilov & Hutter; PyTorch's torch.optim.AdamW update) with bias correction:
//   g <- g * min(1, max_grad_norm / ||g||)   (global norm over all parameters; max_grad_norm = 0 disables)
//   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr * ( m / (1 - b1^k) / (sqrt(v / (1 - b2^k)) + eps) + wd * p )
// Weight decay applies to the matrices (Wqkv, Wo, Wfc, Wfc2, Whead) only: not to biases, LayerNorm gains and
// biases, or the token / position embeddings (the usual GPT-2 / nanoGPT grouping). step() returns the pre-clip
// gradient norm (also last_grad_norm()).
//
// File format (save / load), little-endian host byte order, version 1:
//   "CAITFLM1" (8 bytes) | u32 version | 6 x i64 config (vocab, d_model, n_heads, n_layers, d_ff, max_seq)
//   | u64 parameter count | parameter floats (the order of parameter_table()) | u64 FNV-1a 64 of all bytes before it.
// load() checks, in order: truncation of the header, magic, version, config (against this model's), size, and
// checksum, and throws cai::parse_error naming the problem; the model is unchanged on failure. Optimiser state is
// not saved.
//
// Checkpoint format (save_checkpoint / load_checkpoint): the full training state, so that training resumed from it
// takes bit-identical steps (AdamW's moments and its step count, which sets the bias correction, included):
//   "CAITFLC1" | u32 version 1 | the 6 config fields | u64 parameter count | parameters | i64 steps taken
//   | m floats | v floats (both in parameter order) | u64 FNV-1a 64 of all bytes before it.
// load_checkpoint() applies load()'s checks in the same order (a weights file is refused by its magic, with a hint)
// and leaves the model unchanged on failure. Both writers are atomic: bytes go to path + ".tmp", renamed over path.
// transformer_options (betas, eps, decay, clipping) are not saved: build the resuming model with the same ones.
//
// Template parameter: Backend satisfies cai::bulk_backend (cai::host, cai::threaded_host).
//
// Code layout: everything but the vocabulary head lives in tf_detail and is shared with
// cai::models::transformer_scalar (cai/models/transformer_scalar.hpp): tf_detail::trunk (embeddings, blocks,
// final LayerNorm: forward to LNf(h), backward from dL/dLNf(h), KV-cached decode) and tf_detail::parameter_store
// (parameter table, initialisation, per-row gradient reduction, AdamW, and one serializer for both file formats —
// weights, or weights plus optimizer state — under a model's magics).
//
//   cai::models::transformer_lm<> lm({.vocab = 257, .d_model = 64, .n_heads = 4, .n_layers = 2, .d_ff = 256,
//                                     .max_seq = 128}, cai::host{}, /*seed=*/1);
//   auto h = lm.train_forward(batch, {.entropy = true});
//   lm.backward(std::move(h), {.dlogp = g});  lm.step(1e-3);  lm.zero_grad();
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "../algorithms/dispatch.hpp"
#include "../algorithms/logprobs.hpp"
#include "../algorithms/sampling.hpp"
#include "../concepts/backend.hpp"
#include "../concepts/types.hpp"
#include "../core/atomic_file.hpp"
#include "../core/error.hpp"
#include "../core/math.hpp"
#include "../core/rng.hpp"
#include "../core/tensor.hpp"

namespace cai::models {

/// The shape of a transformer_lm (saved in its files; load() requires an equal one).
struct transformer_config {
  std::int64_t vocab = 257;
  std::int64_t d_model = 64;
  std::int64_t n_heads = 4;
  std::int64_t n_layers = 2;
  std::int64_t d_ff = 256;
  std::int64_t max_seq = 256;
  friend bool operator==(const transformer_config&, const transformer_config&) = default;
};

/// Initialisation and optimiser settings (not part of the file format).
struct transformer_options {
  float init_std = 0.02f;       ///< N(0, init_std^2) for matrices and embeddings; residual outputs / sqrt(2 L)
  float weight_decay = 0.0f;    ///< decoupled (AdamW) decay of the matrices; >= 0
  float max_grad_norm = 1.0f;   ///< global gradient-norm clip; 0 disables
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
};

namespace tf_detail {

inline void layernorm_row(float* out, float* mean_out, float* rstd_out, const float* x, const float* g, const float* b,
                          std::int64_t C) {
  float m = 0;
  for (std::int64_t i = 0; i < C; ++i) m += x[i];
  m /= static_cast<float>(C);
  float v = 0;
  for (std::int64_t i = 0; i < C; ++i) v += (x[i] - m) * (x[i] - m);
  v /= static_cast<float>(C);
  const float r = 1.0f / std::sqrt(v + 1e-5f);
  for (std::int64_t i = 0; i < C; ++i) out[i] = (x[i] - m) * r * g[i] + b[i];
  *mean_out = m;
  *rstd_out = r;
}

/// dx += LN backward (see header comment), dg/db accumulated.
inline void layernorm_row_backward(float* dx, float* dg, float* db, const float* dy, const float* x, const float* g,
                                   float mean, float rstd, std::int64_t C) {
  float mdn = 0, mdnx = 0;
  for (std::int64_t i = 0; i < C; ++i) {
    const float xhat = (x[i] - mean) * rstd, dn = dy[i] * g[i];
    mdn += dn;
    mdnx += dn * xhat;
  }
  mdn /= static_cast<float>(C);
  mdnx /= static_cast<float>(C);
  for (std::int64_t i = 0; i < C; ++i) {
    const float xhat = (x[i] - mean) * rstd, dn = dy[i] * g[i];
    dx[i] += rstd * (dn - mdn - xhat * mdnx);
    dg[i] += dy[i] * xhat;
    db[i] += dy[i];
  }
}

/// out = x W + b for one row; W (in, out) row-major. Each output sums b, then x[i] W[i, o] for i ascending.
inline void linear_row(float* __restrict out, const float* __restrict x, const float* __restrict W, const float* __restrict b,
                       std::int64_t in, std::int64_t n) {
  for (std::int64_t o = 0; o < n; ++o) out[o] = b[o];
  for (std::int64_t i = 0; i < in; ++i) {
    const float xi = x[i];
    const float* __restrict w = W + i * n;
    for (std::int64_t o = 0; o < n; ++o) out[o] += xi * w[o];
  }
}

/// Four rows of linear_row at once (each weight row read once for four tokens); the same bits as four calls.
inline void linear_row4(float* __restrict o0, float* __restrict o1, float* __restrict o2, float* __restrict o3, const float* x,
                        std::int64_t xs, const float* __restrict W, const float* __restrict b, std::int64_t in, std::int64_t n) {
  for (std::int64_t o = 0; o < n; ++o) o0[o] = o1[o] = o2[o] = o3[o] = b[o];
  for (std::int64_t i = 0; i < in; ++i) {
    const float a0 = x[i], a1 = x[xs + i], a2 = x[2 * xs + i], a3 = x[3 * xs + i];
    const float* __restrict w = W + i * n;
    for (std::int64_t o = 0; o < n; ++o) {
      const float wo = w[o];
      o0[o] += a0 * wo;
      o1[o] += a1 * wo;
      o2[o] += a2 * wo;
      o3[o] += a3 * wo;
    }
  }
}

/// linear_row over `rows` consecutive rows (x (rows, in), out (rows, n)); the same bits as a call per row.
inline void linear_rows(float* out, const float* x, const float* W, const float* b, std::int64_t in, std::int64_t n, std::int64_t rows) {
  std::int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    float* o = out + r * n;
    linear_row4(o, o + n, o + 2 * n, o + 3 * n, x + r * in, in, W, b, in, n);
  }
  for (; r < rows; ++r) linear_row(out + r * n, x + r * in, W, b, in, n);
}

/// sum_o a[o] w[o] in a fixed order: eight interleaved partial sums (lane k takes o = k mod 8), combined pairwise,
/// then the tail — vectorisable without -ffast-math, and the same bits on every machine and thread count.
inline float dot_fixed(const float* __restrict a, const float* __restrict w, std::int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::int64_t o = 0;
  for (; o + 8 <= n; o += 8)
    for (int k = 0; k < 8; ++k) acc[k] += a[o + k] * w[o + k];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; o < n; ++o) s += a[o] * w[o];
  return s;
}

/// dx += dy W^T, dW += x^T dy, db += dy for one row.
inline void linear_row_backward(float* __restrict dx, float* __restrict dW, float* __restrict db, const float* __restrict dy,
                                const float* __restrict x, const float* __restrict W, std::int64_t in, std::int64_t n) {
  for (std::int64_t o = 0; o < n; ++o) db[o] += dy[o];
  for (std::int64_t i = 0; i < in; ++i) {
    const float* __restrict w = W + i * n;
    float* __restrict dw = dW + i * n;
    const float xi = x[i];
    for (std::int64_t o = 0; o < n; ++o) dw[o] += xi * dy[o];
    dx[i] += dot_fixed(dy, w, n);
  }
}

/// linear_row_backward over `rows` consecutive rows, four at a time (dW and db updated once per four tokens, the
/// tokens' terms added in row order: the same bits as a call per row).
inline void linear_rows_backward(float* dx, float* dW, float* db, const float* dy, const float* x, const float* W, std::int64_t in,
                                 std::int64_t n, std::int64_t rows) {
  std::int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    const float* __restrict d0 = dy + r * n;
    const float* __restrict d1 = d0 + n;
    const float* __restrict d2 = d1 + n;
    const float* __restrict d3 = d2 + n;
    const float* x0 = x + r * in;
    float* dx0 = dx + r * in;
    for (std::int64_t o = 0; o < n; ++o) db[o] = (((db[o] + d0[o]) + d1[o]) + d2[o]) + d3[o];
    for (std::int64_t i = 0; i < in; ++i) {
      const float* __restrict w = W + i * n;
      float* __restrict dw = dW + i * n;
      const float a0 = x0[i], a1 = x0[in + i], a2 = x0[2 * in + i], a3 = x0[3 * in + i];
      for (std::int64_t o = 0; o < n; ++o) dw[o] = (((dw[o] + a0 * d0[o]) + a1 * d1[o]) + a2 * d2[o]) + a3 * d3[o];
      dx0[i] += dot_fixed(d0, w, n);
      dx0[in + i] += dot_fixed(d1, w, n);
      dx0[2 * in + i] += dot_fixed(d2, w, n);
      dx0[3 * in + i] += dot_fixed(d3, w, n);
    }
  }
  for (; r < rows; ++r) linear_row_backward(dx + r * in, dW, db, dy + r * n, x + r * in, W, in, n);
}

inline constexpr float gelu_k = 0.7978845608028654f;  // sqrt(2 / pi)

inline float gelu(float x) noexcept {
  const float u = gelu_k * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + std::tanh(u));
}
inline float gelu_grad(float x) noexcept {
  const float u = gelu_k * (x + 0.044715f * x * x * x);
  const float th = std::tanh(u);
  return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * gelu_k * (1.0f + 3.0f * 0.044715f * x * x);
}

/// One head of causal attention for query position t: keys/values of positions 0..t at k + s*stride and
/// v + s*stride. Writes the probabilities p[0..t] and y[0..hd). Shared by the batch forward and the KV-cache
/// decoder so that both give the same bits.
inline void attend(float* y, float* p, const float* q, const float* k, const float* v, std::int64_t stride,
                   std::int64_t t, std::int64_t hd, float scale) {
  float mx = -INFINITY;
  for (std::int64_t s = 0; s <= t; ++s) {
    float d = 0;
    for (std::int64_t i = 0; i < hd; ++i) d += q[i] * k[s * stride + i];
    p[s] = d * scale;
    mx = std::max(mx, p[s]);
  }
  float sum = 0;
  for (std::int64_t s = 0; s <= t; ++s) {
    p[s] = std::exp(p[s] - mx);
    sum += p[s];
  }
  const float inv = 1.0f / sum;
  for (std::int64_t s = 0; s <= t; ++s) p[s] *= inv;
  for (std::int64_t i = 0; i < hd; ++i) y[i] = 0;
  for (std::int64_t s = 0; s <= t; ++s)
    for (std::int64_t i = 0; i < hd; ++i) y[i] += p[s] * v[s * stride + i];
}

inline std::uint64_t fnv1a(const unsigned char* p, std::size_t n) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

/// One named parameter tensor: a slice [offset, offset + size) of a model's parameters() / gradients().
struct parameter_info {
  std::string name;
  std::int64_t offset = 0, size = 0;
  bool decay = false;
};

struct layer_params {
  std::int64_t ln1_g, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_g, ln2_b, fc_w, fc_b, fc2_w, fc2_b;
};
struct layer_acts {
  std::vector<float> ln1, ln1_mean, ln1_rstd, qkv, att, atty, res1, ln2, ln2_mean, ln2_rstd, fch, fch_gelu, res2;
};
/// Everything one row's trunk forward saved for its backward; lnf (n, C) = LNf(h) is the trunk's output, which a
/// head (the LM's vocabulary projection, the scalar model's value projection) reads.
struct row_acts {
  std::int64_t n = 0;
  std::vector<float> x0;
  std::vector<layer_acts> layers;
  std::vector<float> lnf, lnf_mean, lnf_rstd;
};
/// The KV cache of one row: keys and values (max_seq, C) per layer.
struct kv_cache {
  std::vector<std::vector<float>> k, v;
};

inline std::array<std::int64_t, 6> config_fields(const transformer_config& c) {
  return {c.vocab, c.d_model, c.n_heads, c.n_layers, c.d_ff, c.max_seq};
}

inline void validate_config(const transformer_config& c, std::string_view call) {
  if (c.vocab < 2) detail::fail_argument(call, "config.vocab", "a vocabulary of at least 2", c.vocab);
  if (c.d_model < 1) detail::fail_argument(call, "config.d_model", "a value >= 1", c.d_model);
  if (c.n_heads < 1 || c.d_model % c.n_heads != 0)
    detail::fail_argument(call, "config.n_heads", detail::concat("a divisor of d_model = ", c.d_model), c.n_heads);
  if (c.n_layers < 1) detail::fail_argument(call, "config.n_layers", "a value >= 1", c.n_layers);
  if (c.d_ff < 1) detail::fail_argument(call, "config.d_ff", "a value >= 1", c.d_ff);
  if (c.max_seq < 1) detail::fail_argument(call, "config.max_seq", "a value >= 1", c.max_seq);
  const std::int64_t limit = std::int64_t{1} << 24;
  for (auto [name, v] : {std::pair{"config.vocab", c.vocab}, std::pair{"config.d_model", c.d_model},
                         std::pair{"config.n_layers", c.n_layers}, std::pair{"config.d_ff", c.d_ff},
                         std::pair{"config.max_seq", c.max_seq}})
    if (v > limit) detail::fail_argument(call, name, detail::concat("a value <= ", limit), v);
}

inline void validate_options(const transformer_options& o, std::string_view call) {
  if (!(o.init_std >= 0.0f) || !std::isfinite(o.init_std)) detail::fail_argument(call, "options.init_std", "a finite value >= 0", o.init_std);
  if (!(o.weight_decay >= 0.0f) || !std::isfinite(o.weight_decay)) detail::fail_argument(call, "options.weight_decay", "a finite value >= 0", o.weight_decay);
  if (!(o.max_grad_norm >= 0.0f) || !std::isfinite(o.max_grad_norm)) detail::fail_argument(call, "options.max_grad_norm", "a finite value >= 0 (0 disables clipping)", o.max_grad_norm);
  if (!(o.beta1 >= 0.0f && o.beta1 < 1.0f)) detail::fail_argument(call, "options.beta1", "a value in [0, 1)", o.beta1);
  if (!(o.beta2 >= 0.0f && o.beta2 < 1.0f)) detail::fail_argument(call, "options.beta2", "a value in [0, 1)", o.beta2);
  if (!(o.eps > 0.0f) || !std::isfinite(o.eps)) detail::fail_argument(call, "options.eps", "a finite value > 0", o.eps);
}

/// Real tokens must be vocabulary ids and lie below max_seq; mask and loss_mask must have the tokens' shape.
inline void check_batch(const transformer_config& cfg, const token_batch& batch, std::string_view call) {
  check_token_batch(call, batch, cfg.vocab, cfg.max_seq);
}

/// A model's parameters, gradients and AdamW moments (one flat array each, sliced by `table`), with the shared
/// initialisation, optimiser step, per-row gradient reduction and file format.
struct parameter_store {
  std::vector<parameter_info> table;
  std::vector<float> params, grads, m, v;
  std::int64_t total = 0, steps = 0;
  float last_norm = 0.0f;

  std::int64_t add(const std::string& name, std::int64_t size, bool decay) {
    const std::int64_t off = total;
    table.push_back({name, off, size, decay});
    total += size;
    return off;
  }

  void allocate() {
    params.assign(static_cast<std::size_t>(total), 0.0f);
    grads = m = v = params;
  }

  /// Gains ("_g") 1, biases ("_b") 0, everything else N(0, init_std^2), the residual outputs (proj_w, fc2_w)
  /// scaled by 1 / sqrt(2 n_layers); tensor k draws from rng_stream(seed, k).
  void init_weights(const transformer_options& opt, std::int64_t n_layers, std::uint64_t seed) {
    const float resid = opt.init_std / std::sqrt(2.0f * static_cast<float>(n_layers));
    for (std::size_t k = 0; k < table.size(); ++k) {
      const auto& pi = table[k];
      const bool gain = pi.name.ends_with("_g"), bias = pi.name.ends_with("_b");
      const bool residual_out = pi.name.ends_with("proj_w") || pi.name.ends_with("fc2_w");
      const float sd = residual_out ? resid : opt.init_std;
      rng_stream r(seed, k);
      for (std::int64_t i = 0; i < pi.size; ++i) {
        float& x = params[pi.offset + i];
        if (gain) x = 1.0f;
        else if (bias) x = 0.0f;
        else {
          // Box-Muller from two uniforms (deterministic for the seed and the tensor's index).
          const double u1 = 1.0 - r.uniform_double(), u2 = r.uniform_double();
          x = static_cast<float>(sd * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
        }
      }
    }
  }

  /// grads += the B per-row gradients (each `total` floats, row-major), summed in row order whatever the thread
  /// count (same bits on every bulk backend).
  template <class Backend>
  void add_rows(const Backend& backend, const std::vector<float>& row_grads, std::int64_t B) {
    const std::int64_t P = total;
    parallel_for(backend, P, 4096, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t b = 0; b < B; ++b) {
        const float* src = row_grads.data() + b * P;
        for (std::int64_t i = lo; i < hi; ++i) grads[i] += src[i];
      }
    });
  }

  /// One AdamW step with global-norm clipping (see the header comment); returns the pre-clip gradient norm.
  template <class Backend>
  float adamw_step(const Backend& backend, const transformer_options& opt, double learning_rate, std::string_view call) {
    if (!(learning_rate >= 0.0) || !std::isfinite(learning_rate))
      detail::fail_argument(call, "learning_rate", "a finite value >= 0", learning_rate);
    const auto lr = static_cast<float>(learning_rate);
    const float sq = chunked_reduce(
        backend, total, 4096, 0.0f,
        [&](std::int64_t lo, std::int64_t hi) {
          float s = 0;
          for (std::int64_t i = lo; i < hi; ++i) s += grads[i] * grads[i];
          return s;
        },
        [](float a, float c) { return a + c; });
    last_norm = std::sqrt(sq);
    float scale = 1.0f;
    if (opt.max_grad_norm > 0.0f && last_norm > opt.max_grad_norm) scale = opt.max_grad_norm / last_norm;
    ++steps;
    const float b1 = opt.beta1, b2 = opt.beta2, eps = opt.eps, wd = opt.weight_decay;
    const float c1 = 1.0f - std::pow(b1, static_cast<float>(steps)), c2 = 1.0f - std::pow(b2, static_cast<float>(steps));
    for (const auto& pi : table) {
      const float decay = pi.decay ? wd : 0.0f;
      parallel_for(backend, pi.size, 4096, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t j = pi.offset + lo; j < pi.offset + hi; ++j) {
          const float gj = grads[j] * scale;
          m[j] = b1 * m[j] + (1.0f - b1) * gj;
          v[j] = b2 * v[j] + (1.0f - b2) * gj * gj;
          const float mhat = m[j] / c1, vhat = v[j] / c2;
          params[j] -= lr * (mhat / (std::sqrt(vhat) + eps) + decay * params[j]);
        }
      });
    }
    return last_norm;
  }

  static constexpr std::uint32_t version = 1;
  static constexpr std::size_t header_bytes = 8 + 4 + 6 * 8 + 8;

  /// The bytes after the header: the parameters, then (with optimizer state) the step count and both moments.
  std::size_t payload_bytes(bool with_optimizer) const noexcept {
    return params.size() * sizeof(float) + (with_optimizer ? 8 + 2 * params.size() * sizeof(float) : 0);
  }

  /// Writes magic (8 bytes) | version | config | count | parameters [| steps | m | v] | FNV-1a 64 (the header
  /// comment's format; the bracketed part with_optimizer, under a checkpoint magic). The bytes go to path + ".tmp",
  /// which is then renamed over `path`, so a reader (or a run killed mid-write) never sees a half-written file.
  void save(const std::string& path, const char* magic, const transformer_config& cfg, std::string_view call,
            bool with_optimizer = false) const {
    std::vector<unsigned char> buf;
    buf.reserve(header_bytes + payload_bytes(with_optimizer) + 8);
    auto put = [&](const void* p, std::size_t n) {
      const auto* c = static_cast<const unsigned char*>(p);
      buf.insert(buf.end(), c, c + n);
    };
    put(magic, 8);
    put(&version, 4);
    for (std::int64_t f : config_fields(cfg)) put(&f, 8);
    const auto count = static_cast<std::uint64_t>(params.size());
    put(&count, 8);
    put(params.data(), params.size() * sizeof(float));
    if (with_optimizer) {
      put(&steps, 8);
      put(m.data(), m.size() * sizeof(float));
      put(v.data(), v.size() * sizeof(float));
    }
    const std::uint64_t sum = fnv1a(buf.data(), buf.size());
    put(&sum, 8);
    detail::write_file_atomic(path, call, [&](std::ostream& f) {
      f.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(buf.size()));
    });
  }

  /// Reads a file written by save() with the same magic, config and with_optimizer flag into params (and, with
  /// optimizer state, m, v and steps); everything is checked before anything is copied, so the store is unchanged
  /// on failure. A weights-only load resets the AdamW moments and the step count. `kind` names the file type in the
  /// bad-magic message; a file carrying `sibling_magic` (the other file type of the same model) gets `sibling_hint`
  /// instead, since passing a weights file to load_checkpoint (or the reverse) is the likely mistake.
  void load(const std::string& path, const char* magic, std::string_view kind, const transformer_config& cfg,
            std::string_view call, bool with_optimizer = false, const char* sibling_magic = nullptr,
            std::string_view sibling_hint = {}) {
    std::ifstream f(path, std::ios::binary);
    if (!f) detail::fail(call, detail::concat("cannot open '", path, "'"));
    const std::vector<unsigned char> buf((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const std::size_t header = header_bytes;
    auto bad = [&](const std::string& what) { detail::fail<parse_error>(call, detail::concat("'", path, "': ", what)); };
    if (buf.size() < header) bad(detail::concat("truncated file (", buf.size(), " bytes, the header alone is ", header, ")"));
    if (std::memcmp(buf.data(), magic, 8) != 0) {
      if (sibling_magic && std::memcmp(buf.data(), sibling_magic, 8) == 0) bad(detail::concat("bad magic (", sibling_hint, ")"));
      bad(detail::concat("bad magic (not a cai ", kind, " file)"));
    }
    std::uint32_t ver = 0;
    std::memcpy(&ver, buf.data() + 8, 4);
    if (ver != version) bad(detail::concat("unsupported version ", ver, " (this build reads version ", version, ")"));
    static constexpr std::array<const char*, 6> names{"vocab", "d_model", "n_heads", "n_layers", "d_ff", "max_seq"};
    const auto mine = config_fields(cfg);
    for (std::size_t i = 0; i < 6; ++i) {
      std::int64_t x = 0;
      std::memcpy(&x, buf.data() + 12 + 8 * i, 8);
      if (x != mine[i]) bad(detail::concat("config mismatch: ", names[i], " is ", x, " in the file, ", mine[i], " in this model"));
    }
    std::uint64_t count = 0;
    std::memcpy(&count, buf.data() + 60, 8);
    if (count != params.size()) bad(detail::concat("config mismatch: parameter count ", count, " in the file, ", params.size(), " in this model"));
    const std::size_t size = header + payload_bytes(with_optimizer) + 8;
    if (buf.size() < size) bad(detail::concat("truncated file (", buf.size(), " bytes, expected ", size, ")"));
    if (buf.size() > size) bad(detail::concat("trailing bytes (", buf.size(), " bytes, expected ", size, ")"));
    std::uint64_t sum = 0;
    std::memcpy(&sum, buf.data() + size - 8, 8);
    if (sum != fnv1a(buf.data(), size - 8)) bad("checksum mismatch (corrupted file)");
    const std::size_t pbytes = params.size() * sizeof(float);
    std::int64_t file_steps = 0;
    if (with_optimizer) {
      std::memcpy(&file_steps, buf.data() + header + pbytes, 8);
      // The checksum passed, so a negative count was written that way: refuse it rather than resume from it.
      if (file_steps < 0) bad(detail::concat("bad step count ", file_steps));
    }
    std::memcpy(params.data(), buf.data() + header, pbytes);
    if (with_optimizer) {
      std::memcpy(m.data(), buf.data() + header + pbytes + 8, pbytes);
      std::memcpy(v.data(), buf.data() + header + 2 * pbytes + 8, pbytes);
    } else {
      std::fill(m.begin(), m.end(), 0.0f);
      std::fill(v.begin(), v.end(), 0.0f);
    }
    steps = file_steps;
  }
};

/// The transformer trunk shared by transformer_lm and transformer_scalar: embeddings, the n_layers blocks and the
/// final LayerNorm, h -> LNf(h). Its parameters are registered first (wte, wpe, layer0.*, ..., lnf_g, lnf_b); a
/// head adds its own after them. W is the base of the model's parameter array, g of a gradient array.
struct trunk {
  transformer_config cfg;
  std::vector<layer_params> layers;
  std::int64_t wte = 0, wpe = 0, lnf_g = 0, lnf_b = 0;

  void build(parameter_store& ps) {
    const std::int64_t V = cfg.vocab, C = cfg.d_model, F = cfg.d_ff, S = cfg.max_seq;
    wte = ps.add("wte", V * C, false);
    wpe = ps.add("wpe", S * C, false);
    for (std::int64_t l = 0; l < cfg.n_layers; ++l) {
      const std::string p = detail::concat("layer", l, ".");
      layer_params lp{};
      lp.ln1_g = ps.add(p + "ln1_g", C, false);
      lp.ln1_b = ps.add(p + "ln1_b", C, false);
      lp.qkv_w = ps.add(p + "qkv_w", C * 3 * C, true);
      lp.qkv_b = ps.add(p + "qkv_b", 3 * C, false);
      lp.proj_w = ps.add(p + "proj_w", C * C, true);
      lp.proj_b = ps.add(p + "proj_b", C, false);
      lp.ln2_g = ps.add(p + "ln2_g", C, false);
      lp.ln2_b = ps.add(p + "ln2_b", C, false);
      lp.fc_w = ps.add(p + "fc_w", C * F, true);
      lp.fc_b = ps.add(p + "fc_b", F, false);
      lp.fc2_w = ps.add(p + "fc2_w", F * C, true);
      lp.fc2_b = ps.add(p + "fc2_b", C, false);
      layers.push_back(lp);
    }
    lnf_g = ps.add("lnf_g", C, false);
    lnf_b = ps.add("lnf_b", C, false);
  }

  /// Forward of one row over its a.n positions, saving every activation the backward needs; the output is a.lnf.
  void forward(const float* W, row_acts& a, const std::int32_t* tok) const {
    const std::int64_t n = a.n, C = cfg.d_model, F = cfg.d_ff, H = cfg.n_heads, hd = C / H;
    if (n == 0) return;
    auto P = [W](std::int64_t off) { return W + off; };
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    a.x0.assign(static_cast<std::size_t>(n * C), 0.0f);
    for (std::int64_t t = 0; t < n; ++t)
      for (std::int64_t i = 0; i < C; ++i) a.x0[t * C + i] = P(wte)[tok[t] * C + i] + P(wpe)[t * C + i];
    a.layers.resize(static_cast<std::size_t>(cfg.n_layers));
    const float* x = a.x0.data();
    for (std::int64_t l = 0; l < cfg.n_layers; ++l) {
      const auto& lp = layers[l];
      auto& la = a.layers[l];
      auto sz = [](std::vector<float>& v, std::int64_t k) { v.assign(static_cast<std::size_t>(k), 0.0f); };
      sz(la.ln1, n * C), sz(la.ln1_mean, n), sz(la.ln1_rstd, n), sz(la.qkv, n * 3 * C), sz(la.att, H * n * n),
          sz(la.atty, n * C), sz(la.res1, n * C), sz(la.ln2, n * C), sz(la.ln2_mean, n), sz(la.ln2_rstd, n),
          sz(la.fch, n * F), sz(la.fch_gelu, n * F), sz(la.res2, n * C);
      // Each stage runs over all n tokens before the next (the matrices are applied to blocks of tokens); every
      // token's arithmetic is the same as token by token.
      for (std::int64_t t = 0; t < n; ++t)
        layernorm_row(&la.ln1[t * C], &la.ln1_mean[t], &la.ln1_rstd[t], x + t * C, P(lp.ln1_g), P(lp.ln1_b), C);
      linear_rows(la.qkv.data(), la.ln1.data(), P(lp.qkv_w), P(lp.qkv_b), C, 3 * C, n);
      for (std::int64_t t = 0; t < n; ++t)
        for (std::int64_t h = 0; h < H; ++h)
          attend(&la.atty[t * C + h * hd], &la.att[(h * n + t) * n], &la.qkv[t * 3 * C + h * hd], &la.qkv[C + h * hd],
                 &la.qkv[2 * C + h * hd], 3 * C, t, hd, scale);
      linear_rows(la.res1.data(), la.atty.data(), P(lp.proj_w), P(lp.proj_b), C, C, n);
      for (std::int64_t t = 0; t < n; ++t) {
        float* r1 = &la.res1[t * C];
        for (std::int64_t i = 0; i < C; ++i) r1[i] += x[t * C + i];
        layernorm_row(&la.ln2[t * C], &la.ln2_mean[t], &la.ln2_rstd[t], r1, P(lp.ln2_g), P(lp.ln2_b), C);
      }
      linear_rows(la.fch.data(), la.ln2.data(), P(lp.fc_w), P(lp.fc_b), C, F, n);
      for (std::int64_t j = 0; j < n * F; ++j) la.fch_gelu[j] = gelu(la.fch[j]);
      linear_rows(la.res2.data(), la.fch_gelu.data(), P(lp.fc2_w), P(lp.fc2_b), F, C, n);
      for (std::int64_t j = 0; j < n * C; ++j) la.res2[j] += la.res1[j];
      x = la.res2.data();
    }
    a.lnf.assign(static_cast<std::size_t>(n * C), 0.0f);
    a.lnf_mean.assign(static_cast<std::size_t>(n), 0.0f);
    a.lnf_rstd.assign(static_cast<std::size_t>(n), 0.0f);
    for (std::int64_t t = 0; t < n; ++t)
      layernorm_row(&a.lnf[t * C], &a.lnf_mean[t], &a.lnf_rstd[t], x + t * C, P(lnf_g), P(lnf_b), C);
  }

  /// Backward of one row: dlnf (n, C) = dL/d a.lnf -> the trunk's parameter gradients accumulated into g.
  void backward(const float* W, const row_acts& a, const std::int32_t* tok, const float* dlnf, float* g) const {
    const std::int64_t n = a.n, C = cfg.d_model, F = cfg.d_ff, H = cfg.n_heads, hd = C / H;
    if (n == 0) return;
    auto P = [W](std::int64_t off) { return W + off; };
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    const auto L = cfg.n_layers;
    const float* xlast = L > 0 ? a.layers[L - 1].res2.data() : a.x0.data();
    std::vector<float> dx(static_cast<std::size_t>(n * C), 0.0f), dln(static_cast<std::size_t>(n * C), 0.0f);
    for (std::int64_t t = 0; t < n; ++t)
      layernorm_row_backward(&dx[t * C], g + lnf_g, g + lnf_b, dlnf + t * C, xlast + t * C, P(lnf_g), a.lnf_mean[t],
                             a.lnf_rstd[t], C);
    std::vector<float> dres1(static_cast<std::size_t>(n * C)), dfch(static_cast<std::size_t>(n * F)),
        datty(static_cast<std::size_t>(n * C)), dqkv(static_cast<std::size_t>(n * 3 * C)), dxin(static_cast<std::size_t>(n * C)),
        dp(static_cast<std::size_t>(n));
    for (std::int64_t l = L - 1; l >= 0; --l) {
      const auto& lp = layers[l];
      const auto& la = a.layers[l];
      const float* xin = l > 0 ? a.layers[l - 1].res2.data() : a.x0.data();
      // res2 = res1 + GELU(LN2(res1) Wfc + bfc) Wfc2 + bfc2, with dx = dL/dres2.
      dres1 = dx;
      std::fill(dfch.begin(), dfch.end(), 0.0f);
      std::fill(dln.begin(), dln.end(), 0.0f);
      // Stage by stage over the tokens (each parameter gradient still receives the tokens' terms in token order).
      linear_rows_backward(dfch.data(), g + lp.fc2_w, g + lp.fc2_b, dx.data(), la.fch_gelu.data(), P(lp.fc2_w), F, C, n);
      for (std::int64_t j = 0; j < n * F; ++j) dfch[j] *= gelu_grad(la.fch[j]);
      linear_rows_backward(dln.data(), g + lp.fc_w, g + lp.fc_b, dfch.data(), la.ln2.data(), P(lp.fc_w), C, F, n);
      for (std::int64_t t = 0; t < n; ++t)
        layernorm_row_backward(&dres1[t * C], g + lp.ln2_g, g + lp.ln2_b, &dln[t * C], &la.res1[t * C], P(lp.ln2_g),
                               la.ln2_mean[t], la.ln2_rstd[t], C);
      // res1 = xin + attention(LN1(xin)) Wo + bo.
      dxin = dres1;
      std::fill(datty.begin(), datty.end(), 0.0f);
      std::fill(dqkv.begin(), dqkv.end(), 0.0f);
      std::fill(dln.begin(), dln.end(), 0.0f);
      linear_rows_backward(datty.data(), g + lp.proj_w, g + lp.proj_b, dres1.data(), la.atty.data(), P(lp.proj_w), C, C, n);
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t t = 0; t < n; ++t) {
          const float* p = &la.att[(h * n + t) * n];
          const float* dy = &datty[t * C + h * hd];
          const float* q = &la.qkv[t * 3 * C + h * hd];
          float* dq = &dqkv[t * 3 * C + h * hd];
          float pdp = 0;
          for (std::int64_t s = 0; s <= t; ++s) {
            const float* v = &la.qkv[s * 3 * C + 2 * C + h * hd];
            float* dv = &dqkv[s * 3 * C + 2 * C + h * hd];
            float d = 0;
            for (std::int64_t i = 0; i < hd; ++i) {
              d += dy[i] * v[i];
              dv[i] += p[s] * dy[i];
            }
            dp[s] = d;
            pdp += p[s] * d;
          }
          for (std::int64_t s = 0; s <= t; ++s) {
            const float dz = p[s] * (dp[s] - pdp) * scale;
            const float* k = &la.qkv[s * 3 * C + C + h * hd];
            float* dk = &dqkv[s * 3 * C + C + h * hd];
            for (std::int64_t i = 0; i < hd; ++i) {
              dq[i] += dz * k[i];
              dk[i] += dz * q[i];
            }
          }
        }
      linear_rows_backward(dln.data(), g + lp.qkv_w, g + lp.qkv_b, dqkv.data(), la.ln1.data(), P(lp.qkv_w), C, 3 * C, n);
      for (std::int64_t t = 0; t < n; ++t)
        layernorm_row_backward(&dxin[t * C], g + lp.ln1_g, g + lp.ln1_b, &dln[t * C], xin + t * C, P(lp.ln1_g),
                               la.ln1_mean[t], la.ln1_rstd[t], C);
      dx.swap(dxin);
    }
    for (std::int64_t t = 0; t < n; ++t)
      for (std::int64_t i = 0; i < C; ++i) {
        g[wte + tok[t] * C + i] += dx[t * C + i];
        g[wpe + t * C + i] += dx[t * C + i];
      }
  }

  kv_cache new_cache() const {
    kv_cache kv;
    kv.k.assign(static_cast<std::size_t>(cfg.n_layers), std::vector<float>(static_cast<std::size_t>(cfg.max_seq * cfg.d_model)));
    kv.v = kv.k;
    return kv;
  }

  /// Computes position t of a row from its token and the cache of positions < t (appending this position's keys
  /// and values), writing LNf(h_t) (C floats) to out. The arithmetic is that of forward(), position for position.
  void decode(const float* W, kv_cache& kv, std::int64_t t, std::int32_t token, float* out) const {
    const std::int64_t C = cfg.d_model, F = cfg.d_ff, H = cfg.n_heads, hd = C / H;
    auto P = [W](std::int64_t off) { return W + off; };
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    std::vector<float> x(static_cast<std::size_t>(C)), ln(static_cast<std::size_t>(C)), qkv(static_cast<std::size_t>(3 * C)),
        y(static_cast<std::size_t>(C)), r1(static_cast<std::size_t>(C)), fch(static_cast<std::size_t>(F)),
        r2(static_cast<std::size_t>(C)), p(static_cast<std::size_t>(t + 1));
    float mean = 0, rstd = 0;
    for (std::int64_t i = 0; i < C; ++i) x[i] = P(wte)[token * C + i] + P(wpe)[t * C + i];
    for (std::int64_t l = 0; l < cfg.n_layers; ++l) {
      const auto& lp = layers[l];
      layernorm_row(ln.data(), &mean, &rstd, x.data(), P(lp.ln1_g), P(lp.ln1_b), C);
      linear_row(qkv.data(), ln.data(), P(lp.qkv_w), P(lp.qkv_b), C, 3 * C);
      std::copy(qkv.begin() + C, qkv.begin() + 2 * C, kv.k[l].begin() + t * C);
      std::copy(qkv.begin() + 2 * C, qkv.end(), kv.v[l].begin() + t * C);
      for (std::int64_t h = 0; h < H; ++h)
        attend(&y[h * hd], p.data(), &qkv[h * hd], &kv.k[l][h * hd], &kv.v[l][h * hd], C, t, hd, scale);
      linear_row(r1.data(), y.data(), P(lp.proj_w), P(lp.proj_b), C, C);
      for (std::int64_t i = 0; i < C; ++i) r1[i] += x[i];
      layernorm_row(ln.data(), &mean, &rstd, r1.data(), P(lp.ln2_g), P(lp.ln2_b), C);
      linear_row(fch.data(), ln.data(), P(lp.fc_w), P(lp.fc_b), C, F);
      for (auto& f : fch) f = gelu(f);
      linear_row(r2.data(), fch.data(), P(lp.fc2_w), P(lp.fc2_b), F, C);
      for (std::int64_t i = 0; i < C; ++i) x[i] = r2[i] + r1[i];
    }
    layernorm_row(out, &mean, &rstd, x.data(), P(lnf_g), P(lnf_b), C);
  }
};

}  // namespace tf_detail

template <bulk_backend Backend = host>
class transformer_lm {
 public:
  /// One named parameter tensor: a slice [offset, offset + size) of parameters() / gradients().
  using parameter_info = tf_detail::parameter_info;

  /// What train_forward computed: logits, per-token outputs and every activation, kept alive until backward.
  class forward_handle {
   public:
    tensor_view<const float, 2> logp() const noexcept { return state_->logp.view(); }
    tensor_view<const float, 2> entropy() const noexcept { return state_->entropy.view(); }

   private:
    friend class transformer_lm;
    struct state {
      tensor<std::int32_t, 2> tokens;
      tensor<std::uint8_t, 2> mask;
      tensor<float, 3> logits;
      tensor<float, 2> logp, entropy;
      tensor<float, 3> saved;
      std::vector<tf_detail::row_acts> rows;
      float temperature = 1.0f;
    };
    std::shared_ptr<state> state_;
  };

  /// Builds the model for `config` (every field checked) with weights drawn deterministically from `seed`.
  explicit transformer_lm(const transformer_config& config, Backend backend = Backend{}, std::uint64_t seed = 0,
                          const transformer_options& options = {})
      : backend_(std::move(backend)), cfg_(config), opt_(options) {
    constexpr std::string_view call = "cai::models::transformer_lm";
    tf_detail::validate_config(cfg_, call);
    tf_detail::validate_options(opt_, call);
    trunk_.cfg = cfg_;
    trunk_.build(ps_);
    head_w_ = ps_.add("head_w", cfg_.d_model * cfg_.vocab, true);
    head_b_ = ps_.add("head_b", cfg_.vocab, false);
    ps_.allocate();
    ps_.init_weights(opt_, cfg_.n_layers, seed);
  }

  std::int64_t vocab_size() const noexcept { return cfg_.vocab; }
  const transformer_config& config() const noexcept { return cfg_; }
  const transformer_options& options() const noexcept { return opt_; }
  std::int64_t parameter_count() const noexcept { return static_cast<std::int64_t>(ps_.params.size()); }
  std::span<float> parameters() noexcept { return ps_.params; }
  std::span<const float> parameters() const noexcept { return ps_.params; }
  std::span<const float> gradients() const noexcept { return ps_.grads; }
  const std::vector<parameter_info>& parameter_table() const noexcept { return ps_.table; }
  float last_grad_norm() const noexcept { return ps_.last_norm; }
  std::int64_t steps_taken() const noexcept { return ps_.steps; }

  /// Logits (B, T, V) of a batch: logits[b, t] predicts tokens[b, t + 1]; positions after a row's last real token
  /// are 0.
  tensor<float, 3> logits(const token_batch& batch) const {
    auto st = run_forward(batch, {}, false);
    return std::move(st->logits);
  }

  /// Per-token log-probs (B, T) of `batch` at `temperature` (position 0 and unscored positions get 0).
  void log_probs(const token_batch& batch, tensor_view<float, 2> out, float temperature = 1.0f) const {
    if (out.extents() != batch.tokens.extents())
      detail::fail_argument<shape_error>("cai::models::transformer_lm::log_probs", "out", "the shape of batch.tokens",
                                         detail::concat(out.extent(0), "x", out.extent(1)));
    auto st = run_forward(batch, forward_request{.entropy = false, .temperature = temperature}, true);
    for (std::int64_t b = 0; b < out.extent(0); ++b)
      for (std::int64_t t = 0; t < out.extent(1); ++t) out(b, t) = st->logp(b, t);
  }

  forward_handle train_forward(const token_batch& batch, const forward_request& req) {
    forward_handle h;
    h.state_ = run_forward(batch, req, true);
    return h;
  }

  /// Accumulates the exact parameter gradients of L given dL/dlogp (and dL/dentropy when given).
  void backward(forward_handle&& h, const per_token_grads& g) {
    constexpr std::string_view call = "cai::models::transformer_lm::backward";
    if (!h.state_) detail::fail_argument(call, "handle", "a live forward handle", "a moved-from handle");
    auto st = std::move(h.state_);
    const std::int64_t B = st->tokens.extent(0), T = st->tokens.extent(1), V = cfg_.vocab;
    tensor<float, 3> dlogits({B, T, V});
    token_logprobs_backward(backend_, st->logits, st->tokens, st->mask,
                            logprob_grads<2>{.dlogp = g.dlogp, .dentropy = g.dentropy, .saved = st->saved.view()},
                            dlogits.view(), {.temperature = st->temperature});
    const auto P = parameter_count();
    std::vector<float> row_grads(static_cast<std::size_t>(B * P), 0.0f);
    parallel_for(backend_, B, 1, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t b = lo; b < hi; ++b)
        backward_row(st->rows[b], &st->tokens(b, 0), &dlogits.view()(b, 0, 0), row_grads.data() + b * P);
    });
    ps_.add_rows(backend_, row_grads, B);
  }

  void zero_grad() noexcept { std::fill(ps_.grads.begin(), ps_.grads.end(), 0.0f); }

  /// One AdamW step with global-norm clipping (see the header comment); returns the pre-clip gradient norm.
  float step(double learning_rate) {
    return ps_.adamw_step(backend_, opt_, learning_rate, "cai::models::transformer_lm::step");
  }

  /// Samples up to max_new_tokens after each prompt row (right-padded; mask marks real tokens) with a KV cache:
  /// each position is computed once. Stops a row at eos_id when given (>= 0). temperature scales the logits; top_k
  /// and top_p restrict the draw; the behaviour log-probs are those of the sampled tokens under the unrestricted
  /// distribution at the sampling temperature, i.e. equal to log_probs(..., temperature). Row b draws from
  /// rng_stream(derive_seed(seed, b)). Needs prompt length + max_new_tokens <= max_seq.
  sample_batch sample(const token_batch& prompts, const sampling_params& sp, std::int32_t eos_id = -1) const {
    constexpr std::string_view call = "cai::models::transformer_lm::sample";
    check_sampling_params(call, sp);
    tf_detail::check_batch(cfg_, prompts, call);
    const std::int64_t B = prompts.tokens.extent(0);
    sample_batch out;
    start_samples(call, prompts, sp.max_new_tokens, cfg_.max_seq, out);
    const std::int64_t T = out.length;
    parallel_for(backend_, B, 1, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t b = lo; b < hi; ++b) sample_row(out, b, T, sp, eos_id);
    });
    return out;
  }

  /// Writes the model to `path` (format in the header comment). Throws cai::error when the file cannot be written.
  void save(const std::string& path) const { ps_.save(path, magic, cfg_, "cai::models::transformer_lm::save"); }

  /// Reads parameters saved by save() into this model, whose config must equal the file's. Throws
  /// cai::parse_error naming the problem (truncated, bad magic, unsupported version, config mismatch, checksum
  /// mismatch, trailing bytes); the model is unchanged on failure. Adam state and step count are reset.
  void load(const std::string& path) {
    ps_.load(path, magic, "transformer_lm", cfg_, "cai::models::transformer_lm::load", false, checkpoint_magic,
             "a transformer_lm checkpoint written by save_checkpoint(); read it with load_checkpoint()");
  }

  /// Writes the full training state (parameters, AdamW moments, step count; format in the header comment) so that
  /// a run resumed with load_checkpoint() continues bit for bit. Atomic (path + ".tmp", then rename); throws
  /// cai::error when the file cannot be written.
  void save_checkpoint(const std::filesystem::path& path) const {
    ps_.save(path.string(), checkpoint_magic, cfg_, "cai::models::transformer_lm::save_checkpoint", true);
  }

  /// Restores what save_checkpoint() wrote into this model, whose config must equal the file's. Throws
  /// cai::parse_error naming the problem (truncated, bad magic — a weights-only file included —, unsupported
  /// version, config mismatch, checksum mismatch, trailing bytes); the model is unchanged on failure.
  void load_checkpoint(const std::filesystem::path& path) {
    ps_.load(path.string(), checkpoint_magic, "transformer_lm checkpoint", cfg_, "cai::models::transformer_lm::load_checkpoint",
             true, magic, "a weights-only transformer_lm file written by save(); read it with load(), or write a checkpoint "
                          "with save_checkpoint()");
  }

 private:
  static constexpr char magic[9] = "CAITFLM1";
  static constexpr char checkpoint_magic[9] = "CAITFLC1";

  std::shared_ptr<typename forward_handle::state> run_forward(const token_batch& batch, const forward_request& req,
                                                              bool outputs) const {
    tf_detail::check_batch(cfg_, batch, "cai::models::transformer_lm::forward");
    const std::int64_t B = batch.tokens.extent(0), T = batch.tokens.extent(1), V = cfg_.vocab;
    auto st = std::make_shared<typename forward_handle::state>();
    st->tokens = tensor<std::int32_t, 2>({B, T});
    st->mask = tensor<std::uint8_t, 2>({B, T});
    st->rows.resize(static_cast<std::size_t>(B));
    const auto scored = batch.loss_mask.empty() ? batch.mask : batch.loss_mask;
    for (std::int64_t b = 0; b < B; ++b) {
      std::int64_t n = 0;
      for (std::int64_t t = 0; t < T; ++t) {
        st->tokens(b, t) = batch.mask(b, t) ? batch.tokens(b, t) : 0;
        st->mask(b, t) = static_cast<std::uint8_t>(batch.mask(b, t) && scored(b, t) ? 1 : 0);
        if (batch.mask(b, t)) n = t + 1;
      }
      st->rows[b].n = n;
    }
    st->logits = tensor<float, 3>({B, T, V});
    auto lg = st->logits.view();
    parallel_for(backend_, B, 1, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t b = lo; b < hi; ++b)
        forward_row(st->rows[b], &st->tokens(b, 0), st->rows[b].n == 0 ? nullptr : &lg(b, 0, 0));
    });
    if (!outputs) return st;
    st->logp = tensor<float, 2>({B, T});
    st->entropy = tensor<float, 2>(req.entropy ? std::array<std::int64_t, 2>{B, T} : std::array<std::int64_t, 2>{0, 0});
    st->saved = tensor<float, 3>({B, T, 3});
    st->temperature = req.temperature;
    token_logprobs(backend_, st->logits, st->tokens, st->mask,
                   logprob_outputs<2>{.logp = st->logp.view(), .entropy = st->entropy.view(), .saved = st->saved.view()},
                   {.temperature = req.temperature});
    return st;
  }

  const float* P(std::int64_t off) const noexcept { return ps_.params.data() + off; }

  /// Forward of one row over its n positions (the shared trunk, then the vocabulary head).
  void forward_row(tf_detail::row_acts& a, const std::int32_t* tok, float* logits) const {
    const std::int64_t n = a.n, C = cfg_.d_model, V = cfg_.vocab;
    if (n == 0) return;
    trunk_.forward(ps_.params.data(), a, tok);
    tf_detail::linear_rows(logits, a.lnf.data(), P(head_w_), P(head_b_), C, V, n);
  }

  /// Backward of one row: dlogits (T, V) -> parameter gradients written into g (parameter_count() floats).
  void backward_row(const tf_detail::row_acts& a, const std::int32_t* tok, const float* dlogits, float* g) const {
    const std::int64_t n = a.n, C = cfg_.d_model, V = cfg_.vocab;
    if (n == 0) return;
    std::vector<float> dln(static_cast<std::size_t>(n * C), 0.0f);
    tf_detail::linear_rows_backward(dln.data(), g + head_w_, g + head_b_, dlogits, a.lnf.data(), P(head_w_), C, V, n);
    trunk_.backward(ps_.params.data(), a, tok, dln.data(), g);
  }

  /// Position t of a row through the trunk's KV-cached decoder, then the head: the logits (V).
  void decode(tf_detail::kv_cache& kv, std::int64_t t, std::int32_t token, float* logits) const {
    const std::int64_t C = cfg_.d_model, V = cfg_.vocab;
    std::vector<float> ln(static_cast<std::size_t>(C));
    trunk_.decode(ps_.params.data(), kv, t, token, ln.data());
    tf_detail::linear_row(logits, ln.data(), P(head_w_), P(head_b_), C, V);
  }

  void sample_row(sample_batch& out, std::int64_t b, std::int64_t T, const sampling_params& sp, std::int32_t eos_id) const {
    const std::int64_t V = cfg_.vocab;
    std::int64_t len = 0;
    while (len < T && out.mask[b * T + len]) ++len;
    auto kv = trunk_.new_cache();
    std::vector<float> lg(static_cast<std::size_t>(V)), z(static_cast<std::size_t>(V));
    // Prefill: every prompt position once; the logits of the last one predict the first new token.
    for (std::int64_t t = 0; t < len; ++t) decode(kv, t, out.tokens[b * T + t], lg.data());
    rng_stream r(derive_seed(sp.seed, static_cast<std::uint64_t>(b)), 0);
    for (std::int32_t k = 0; k < sp.max_new_tokens; ++k) {
      for (std::int64_t j = 0; j < V; ++j) z[j] = lg[j] / sp.temperature;
      const auto [tok, lp] = draw_token(z, sp, r);
      const auto at = static_cast<std::size_t>(b * T + len);
      out.tokens[at] = tok;
      out.mask[at] = 1;
      out.response[at] = 1;
      out.logp[at] = lp;
      if (tok == eos_id || k + 1 == sp.max_new_tokens) break;
      decode(kv, len, tok, lg.data());
      ++len;
    }
  }

  Backend backend_;
  transformer_config cfg_;
  transformer_options opt_;
  tf_detail::trunk trunk_;
  tf_detail::parameter_store ps_;
  std::int64_t head_w_ = 0, head_b_ = 0;
};

}  // namespace cai::models
