// cai/core/error.hpp — the exception hierarchy thrown at cai's public boundary.
//
// Every message names the call and the argument, what was expected and what came, e.g.
//   cai::token_logprobs: argument 'targets': expected extent(0) == 6 (rows of 'logits'), got 5
// Kernels never throw; they return status codes that the backend turns into these exceptions.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace cai {

/// Base of every exception cai throws.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
/// Extents or ranks that do not match what the call requires.
class shape_error : public error {
 public:
  using error::error;
};
/// A value outside its documented domain (beta <= 0, temperature <= 0, a token id >= vocabulary, ...).
class invalid_argument : public error {
 public:
  using error::error;
};
/// A run-time element type (a type-erased view) that is not the one required.
class dtype_error : public error {
 public:
  using error::error;
};
/// Memory in the wrong space (device memory given to a host backend, or the reverse).
class memory_space_error : public error {
 public:
  using error::error;
};
/// A layout the call cannot use (non-contiguous where contiguity is required, misaligned data).
class layout_error : public error {
 public:
  using error::error;
};
/// Malformed text input (JSON, JSONL, constitution files).
class parse_error : public error {
 public:
  using error::error;
};
/// A failure reported by the CUDA runtime or found on the device.
class cuda_error : public error {
 public:
  using error::error;
};

namespace detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}

/// Throws E with the canonical message "<call>: argument '<arg>': expected <expected>, got <actual>".
template <class E = invalid_argument, class Expected, class Actual>
[[noreturn]] void fail_argument(std::string_view call, std::string_view arg, const Expected& expected,
                                const Actual& actual) {
  throw E(concat(call, ": argument '", arg, "': expected ", expected, ", got ", actual));
}

/// Throws E with "<call>: <what>" for conditions that are not about a single argument.
template <class E = error>
[[noreturn]] void fail(std::string_view call, std::string_view what) {
  throw E(concat(call, ": ", what));
}

}  // namespace detail
}  // namespace cai
