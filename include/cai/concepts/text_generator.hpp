// cai/concepts/text_generator.hpp — chat in, completions out (what the Constitutional-AI layer drives).
//
// generate(std::span<const conversation>, const sampling_params&) -> convertible to std::vector<std::string>,
// one completion per conversation, in order. An HTTP server client satisfies it directly; a policy plus a
// tokenizer satisfies it through an adapter (constitution layer).
#pragma once

#include <concepts>
#include <span>
#include <string>
#include <vector>

#include "types.hpp"

namespace cai {

namespace detail::gen {
template <class G>
concept has_generate = requires(G& g, std::span<const conversation> prompts, const sampling_params& sp) {
  { g.generate(prompts, sp) } -> std::convertible_to<std::vector<std::string>>;
};
}

template <class G>
concept text_generator = detail::gen::has_generate<G>;

template <class G>
consteval bool diagnose_text_generator() {
  static_assert(detail::gen::has_generate<G>,
                "cai::text_generator: missing `generate(std::span<const cai::conversation>, const "
                "cai::sampling_params&)` -> std::vector<std::string>");
  return text_generator<G>;
}

}  // namespace cai
