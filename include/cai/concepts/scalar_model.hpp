// cai/concepts/scalar_model.hpp — reward, cost and value heads.
//
// scalar_model: scalars(const token_batch&, tensor_view<float, 2> out) writes one scalar per position (B, T).
// A reward or cost model's sequence score is its value at the last real token of each row; a value model uses
// every position. (Reading per-position values keeps one concept for all three heads.)
#pragma once

#include "../core/tensor_view.hpp"
#include "types.hpp"

namespace cai {

namespace detail::sm {
template <class M>
concept has_scalars = requires(M& m, const token_batch& b, tensor_view<float, 2> out) { m.scalars(b, out); };
}

template <class M>
concept scalar_model = detail::sm::has_scalars<M>;

template <class M>
consteval bool diagnose_scalar_model() {
  static_assert(detail::sm::has_scalars<M>,
                "cai::scalar_model: missing `scalars(const cai::token_batch&, cai::tensor_view<float, 2>)`");
  return scalar_model<M>;
}

}  // namespace cai
