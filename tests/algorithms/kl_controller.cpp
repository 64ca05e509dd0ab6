// Tests for cai/algorithms/kl_controller.hpp: the adaptive update against hand-computed values and a reference loop
// written as TRL writes it (np.clip of the proportional error, multiplicative update), error clipping, the floor on
// the multiplier, set_value, the fixed controller, and bad arguments.
#include <cai/algorithms/kl_controller.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../support.hpp"

TEST_CASE("the adaptive KL controller follows beta *= 1 + clip(kl / target - 1) * n / horizon", "[kl]") {
  cai::adaptive_kl_controller ctl;  // Ziegler et al. / TRL defaults: init 0.2, target 6, horizon 10000, clip 0.2
  CHECK(ctl.value() == 0.2);
  CHECK(ctl.options().target == 6.0);
  CHECK(ctl.options().horizon == 10000.0);
  CHECK(ctl.options().error_clip == 0.2);

  // By hand: KL 6.6 is 10% above target; 256 samples move beta by 0.1 * 256 / 10000 = 0.256%.
  CHECK(ctl.update(6.6, 256) == Approx(0.2 * 1.00256).epsilon(1e-15));
  // KL 12 is 100% above target: clipped to +20%, so 0.2 * 512 / 10000 = 1.024% up.
  CHECK(ctl.update(12.0, 512) == Approx(0.2 * 1.00256 * 1.01024).epsilon(1e-15));
  // KL 0 is 100% below target: clipped to -20%: 1 - 0.2 * 1000 / 10000 = 0.98.
  CHECK(ctl.update(0.0, 1000) == Approx(0.2 * 1.00256 * 1.01024 * 0.98).epsilon(1e-14));
  // At the target, or after 0 steps, beta does not move.
  const double before = ctl.value();
  CHECK(ctl.update(6.0, 4096) == before);
  CHECK(ctl.update(100.0, 0) == before);
  // Errors exactly at the clip bound are not changed by the clip: KL 7.2 is +20%.
  CHECK(ctl.update(7.2, 100) == Approx(before * (1 + 0.2 * 100 / 10000.0)).epsilon(1e-14));
}

TEST_CASE("the adaptive controller matches a TRL-style reference loop over a long run", "[kl]") {
  const cai::adaptive_kl_options opt{.init = 0.05, .target = 0.1, .horizon = 500, .error_clip = 0.3};
  cai::adaptive_kl_controller ctl(opt);
  const auto kls = cai_test::uniform_floats(400, 0.0f, 0.3f, 7);
  double ref = 0.05;
  for (std::size_t i = 0; i < kls.size(); ++i) {
    const std::int64_t n = 16 + static_cast<std::int64_t>(i % 5) * 8;
    const double err = std::clamp(static_cast<double>(kls[i]) / 0.1 - 1.0, -0.3, 0.3);
    ref *= 1.0 + err * static_cast<double>(n) / 500.0;
    const double got = ctl.update(kls[i], n);
    REQUIRE(got == Approx(ref).epsilon(1e-12));
    REQUIRE(got == ctl.value());
  }
  // The coefficient rises while the measured KL stays above the target and falls while it stays below.
  cai::adaptive_kl_controller up(opt), down(opt);
  for (int i = 0; i < 50; ++i) {
    const double u0 = up.value(), d0 = down.value();
    CHECK(up.update(0.2, 64) > u0);
    CHECK(down.update(0.01, 64) < d0);
  }
  // Copies are independent values.
  cai::adaptive_kl_controller copy = up;
  copy.update(1.0, 64);
  CHECK(copy.value() != up.value());
}

TEST_CASE("a multiplier that would reach 0 or below is floored at 1e-3", "[kl]") {
  cai::adaptive_kl_controller ctl({.init = 0.4, .target = 6, .horizon = 100, .error_clip = 0.2});
  // -0.2 * 1000 / 100 = -2: the raw multiplier is -1; beta keeps its sign and shrinks by 1000.
  CHECK(ctl.update(0.0, 1000) == Approx(0.4e-3).epsilon(1e-15));
  CHECK(ctl.value() > 0.0);
  // Exactly 0 (n = 500): floored too.
  CHECK(ctl.update(0.0, 500) == Approx(0.4e-6).epsilon(1e-15));
}

TEST_CASE("set_value restores a saved coefficient, and the fixed controller never moves", "[kl]") {
  cai::adaptive_kl_controller ctl;
  ctl.set_value(0.0123);
  CHECK(ctl.value() == 0.0123);
  CHECK(ctl.update(6.6, 100) == Approx(0.0123 * (1 + 0.1 * 100 / 10000.0)).epsilon(1e-15));

  const cai::fixed_kl_controller fixed(0.07);
  CHECK(fixed.value() == 0.07);
  fixed.update(100.0, 1000);
  CHECK(fixed.value() == 0.07);
  CHECK(cai::fixed_kl_controller{}.value() == 0.05);
  CHECK(cai::fixed_kl_controller(0.0).value() == 0.0);  // beta = 0 switches the penalty off
}

TEST_CASE("KL controllers reject bad arguments with exceptions naming the argument", "[kl]") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  using opts = cai::adaptive_kl_options;
  CAI_REQUIRE_THROWS_NAMING(cai::adaptive_kl_controller(opts{.init = 0.0}), cai::invalid_argument, "cai::adaptive_kl_controller",
                            "'init'", "> 0");
  CAI_REQUIRE_THROWS_NAMING(cai::adaptive_kl_controller(opts{.init = nan}), cai::invalid_argument, "'init'");
  CAI_REQUIRE_THROWS_NAMING(cai::adaptive_kl_controller(opts{.init = inf}), cai::invalid_argument, "'init'");
  CAI_REQUIRE_THROWS_NAMING(cai::adaptive_kl_controller(opts{.target = -1.0}), cai::invalid_argument, "'target'", "got -1");
  CAI_REQUIRE_THROWS_NAMING(cai::adaptive_kl_controller(opts{.target = 0.0}), cai::invalid_argument, "'target'");
  CAI_REQUIRE_THROWS_NAMING(cai::adaptive_kl_controller(opts{.horizon = 0.0}), cai::invalid_argument, "'horizon'");
  CAI_REQUIRE_THROWS_NAMING(cai::adaptive_kl_controller(opts{.horizon = nan}), cai::invalid_argument, "'horizon'");
  CAI_REQUIRE_THROWS_NAMING(cai::adaptive_kl_controller(opts{.error_clip = 0.0}), cai::invalid_argument, "'error_clip'");
  CAI_REQUIRE_THROWS_NAMING(cai::adaptive_kl_controller(opts{.error_clip = -0.2}), cai::invalid_argument, "'error_clip'");

  cai::adaptive_kl_controller ctl;
  CAI_REQUIRE_THROWS_NAMING(ctl.update(nan, 10), cai::invalid_argument, "cai::adaptive_kl_controller::update", "'current_kl'", "finite");
  CAI_REQUIRE_THROWS_NAMING(ctl.update(inf, 10), cai::invalid_argument, "'current_kl'");
  CAI_REQUIRE_THROWS_NAMING(ctl.update(1.0, -1), cai::invalid_argument, "'n_steps'", "got -1");
  CHECK(ctl.value() == 0.2);  // failed updates change nothing
  CAI_REQUIRE_THROWS_NAMING(ctl.set_value(0.0), cai::invalid_argument, "cai::adaptive_kl_controller::set_value", "'beta'");
  CAI_REQUIRE_THROWS_NAMING(ctl.set_value(-0.1), cai::invalid_argument, "'beta'");
  CAI_REQUIRE_THROWS_NAMING(ctl.set_value(nan), cai::invalid_argument, "'beta'");
  CAI_REQUIRE_THROWS_NAMING(ctl.set_value(inf), cai::invalid_argument, "'beta'");
  CHECK(ctl.value() == 0.2);

  CAI_REQUIRE_THROWS_NAMING(cai::fixed_kl_controller(-0.01), cai::invalid_argument, "cai::fixed_kl_controller", "'beta'", ">= 0");
  CAI_REQUIRE_THROWS_NAMING(cai::fixed_kl_controller(nan), cai::invalid_argument, "'beta'");
  const cai::fixed_kl_controller fixed;
  CAI_REQUIRE_THROWS_NAMING(fixed.update(nan, 1), cai::invalid_argument, "cai::fixed_kl_controller::update", "'current_kl'");
  CAI_REQUIRE_THROWS_NAMING(fixed.update(0.1, -5), cai::invalid_argument, "'n_steps'");
}
