// Tests for cai/core/error.hpp: the hierarchy and the canonical message format.
#include <cai/core/error.hpp>

#include <type_traits>

#include "../support.hpp"

TEST_CASE("every cai exception derives from cai::error and std::runtime_error", "[core]") {
  static_assert(std::is_base_of_v<std::runtime_error, cai::error>);
  static_assert(std::is_base_of_v<cai::error, cai::shape_error> && std::is_base_of_v<cai::error, cai::invalid_argument>);
  static_assert(std::is_base_of_v<cai::error, cai::dtype_error> && std::is_base_of_v<cai::error, cai::memory_space_error>);
  static_assert(std::is_base_of_v<cai::error, cai::layout_error> && std::is_base_of_v<cai::error, cai::parse_error>);
  static_assert(std::is_base_of_v<cai::error, cai::cuda_error>);
}

TEST_CASE("argument errors name the call, the argument, what was expected and what came", "[core]") {
  try {
    cai::detail::fail_argument<cai::shape_error>("cai::f", "logits", "rank 2", 3);
    FAIL("no exception");
  } catch (const cai::shape_error& e) {
    CHECK(std::string(e.what()) == "cai::f: argument 'logits': expected rank 2, got 3");
  }
  CAI_REQUIRE_THROWS_NAMING(cai::detail::fail<cai::parse_error>("cai::load", "line 3: unexpected '}'"), cai::error,
                            "cai::load: line 3");
}
