// cai/concepts/tokenizer.hpp — text to token ids and back.
//
// Requirements (const member functions):
//   encode(std::string_view)            -> convertible to std::vector<std::int32_t>
//   decode(std::span<const std::int32_t>) -> convertible to std::string
//   eos_id()                            -> convertible to std::int32_t
//   vocab_size()                        -> convertible to std::int64_t
//   apply_chat_template(const conversation&, bool add_generation_prompt) -> convertible to std::string
// cai::diagnose_tokenizer<T>() static_asserts each requirement separately, one readable line per miss.
#pragma once

#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "types.hpp"

namespace cai {

namespace detail::tok {
template <class T>
concept has_encode = requires(const T& t, std::string_view s) {
  { t.encode(s) } -> std::convertible_to<std::vector<std::int32_t>>;
};
template <class T>
concept has_decode = requires(const T& t, std::span<const std::int32_t> ids) {
  { t.decode(ids) } -> std::convertible_to<std::string>;
};
template <class T>
concept has_eos = requires(const T& t) {
  { t.eos_id() } -> std::convertible_to<std::int32_t>;
};
template <class T>
concept has_vocab = requires(const T& t) {
  { t.vocab_size() } -> std::convertible_to<std::int64_t>;
};
template <class T>
concept has_chat_template = requires(const T& t, const conversation& c) {
  { t.apply_chat_template(c, true) } -> std::convertible_to<std::string>;
};
}  // namespace detail::tok

template <class T>
concept tokenizer = detail::tok::has_encode<T> && detail::tok::has_decode<T> && detail::tok::has_eos<T> &&
                    detail::tok::has_vocab<T> && detail::tok::has_chat_template<T>;

/// Compile-time diagnosis: instantiate to get one static_assert line per missing tokenizer requirement.
template <class T>
consteval bool diagnose_tokenizer() {
  static_assert(detail::tok::has_encode<T>, "cai::tokenizer: missing `encode(std::string_view) const` -> std::vector<std::int32_t>");
  static_assert(detail::tok::has_decode<T>, "cai::tokenizer: missing `decode(std::span<const std::int32_t>) const` -> std::string");
  static_assert(detail::tok::has_eos<T>, "cai::tokenizer: missing `eos_id() const` -> std::int32_t");
  static_assert(detail::tok::has_vocab<T>, "cai::tokenizer: missing `vocab_size() const` -> std::int64_t");
  static_assert(detail::tok::has_chat_template<T>,
                "cai::tokenizer: missing `apply_chat_template(const cai::conversation&, bool) const` -> std::string");
  return tokenizer<T>;
}

}  // namespace cai
