// cai/concepts/judge.hpp — log-probabilities of given continuations (the RLAIF labeller's view of a model).
//
// score(std::span<const judge_request>) -> convertible to std::vector<std::vector<double>>: for each request, the
// total log-probability of each option string as the continuation of the prompt (natural log, same order).
#pragma once

#include <concepts>
#include <span>
#include <vector>

#include "types.hpp"

namespace cai {

namespace detail::jdg {
template <class J>
concept has_score = requires(J& j, std::span<const judge_request> reqs) {
  { j.score(reqs) } -> std::convertible_to<std::vector<std::vector<double>>>;
};
}

template <class J>
concept judge = detail::jdg::has_score<J>;

template <class J>
consteval bool diagnose_judge() {
  static_assert(detail::jdg::has_score<J>,
                "cai::judge: missing `score(std::span<const cai::judge_request>)` -> std::vector<std::vector<double>>");
  return judge<J>;
}

}  // namespace cai
