// Tests for cai/trainers/: schedules, metrics writers, and the learning direction of the SFT, reward and DPO
// trainers on the embedded transformer (tiny config, byte tokenizer, vocab 257).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "cai/core/host.hpp"
#include "cai/models/byte_tokenizer.hpp"
#include "cai/models/transformer.hpp"
#include "cai/models/transformer_scalar.hpp"
#include "cai/trainers/dpo.hpp"
#include "cai/trainers/metrics.hpp"
#include "cai/trainers/reward.hpp"
#include "cai/trainers/schedule.hpp"
#include "cai/trainers/sft.hpp"
#include "../file_support.hpp"
#include "../support.hpp"

namespace {

using lm_t = cai::models::transformer_lm<>;
using rm_t = cai::models::transformer_scalar<>;
const cai::models::transformer_config tiny{.vocab = 257, .d_model = 16, .n_heads = 2, .n_layers = 1, .d_ff = 32, .max_seq = 160};
const cai::models::byte_tokenizer tok;

static_assert(cai::trainable_scalar_model<rm_t>);

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const cai::invalid_argument& e) {
    return e.what();
  }
  return "(no cai::invalid_argument)";
}

/// A trainable_policy that forwards to a transformer_lm and records every dlogp passed to backward.
struct spy_policy {
  lm_t* m;
  std::vector<std::vector<float>> dlogp;
  std::vector<std::int64_t> widths;
  using forward_handle = lm_t::forward_handle;
  std::int64_t vocab_size() const { return m->vocab_size(); }
  void log_probs(const cai::token_batch& b, cai::tensor_view<float, 2> out) { m->log_probs(b, out); }
  forward_handle train_forward(const cai::token_batch& b, const cai::forward_request& r) { return m->train_forward(b, r); }
  void backward(forward_handle&& h, const cai::per_token_grads& g) {
    std::vector<float> d;
    for (std::int64_t b = 0; b < g.dlogp.extent(0); ++b)
      for (std::int64_t t = 0; t < g.dlogp.extent(1); ++t) d.push_back(g.dlogp(b, t));
    dlogp.push_back(d);
    widths.push_back(g.dlogp.extent(1));
    m->backward(std::move(h), g);
  }
  void zero_grad() { m->zero_grad(); }
  float step(double lr) { return m->step(lr); }
  const cai::models::transformer_config& config() const { return m->config(); }
};
static_assert(cai::trainable_policy<spy_policy>);

/// A frozen reference that counts its forwards.
struct counting_reference {
  const lm_t* m;
  int forwards = 0;
  std::int64_t vocab_size() const { return m->vocab_size(); }
  void log_probs(const cai::token_batch& b, cai::tensor_view<float, 2> out) {
    ++forwards;
    m->log_probs(b, out);
  }
};
static_assert(cai::policy<counting_reference>);

std::vector<cai::conversation> sft_data() {
  return {
      {{"user", "hi"}, {"assistant", "hello there"}},
      {{"system", "be brief"}, {"user", "name?"}, {"assistant", "cai"}, {"user", "more"}, {"assistant", "tiny model"}},
      {{"user", "2+2"}, {"assistant", "four"}},
      {{"user", "color"}, {"assistant", "blue sky"}, {"user", "why"}, {"assistant", "light"}},
  };
}

std::vector<cai::preference_record> keyword_pairs(std::optional<double> label = {}) {
  std::vector<cai::preference_record> v;
  const char* topics[] = {"cats", "rain", "code", "tea", "maps", "jazz", "salt", "wind"};
  for (const char* t : topics)
    v.push_back({{{"user", std::string("tell me about ") + t}}, std::string("yes, ") + t + " ok", std::string("no, ") + t + " hm", label});
  return v;
}

using cai_test::temp_dir;

/// What an on_metrics callback throws to simulate a killed process.
struct killed {};

template <class M>
bool same_bits(const M& a, const M& b) {
  return a.parameters().size() == b.parameters().size() &&
         std::memcmp(a.parameters().data(), b.parameters().data(), a.parameters().size() * sizeof(float)) == 0;
}

nlohmann::json read_sidecar(const std::filesystem::path& dir) {
  std::ifstream f(dir / "trainer.json");
  return nlohmann::json::parse(f);
}
void write_text(const std::filesystem::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << s;
}

}  // namespace

TEST_CASE("learning-rate schedules give the documented values at key steps", "[trainer]") {
  const auto c = cai::constant_schedule(0.5, 4);
  CHECK(c.lr(0) == 0.0);
  CHECK(c.lr(2) == Approx(0.25));
  CHECK(c.lr(4) == 0.5);
  CHECK(c.lr(1000) == 0.5);
  const auto l = cai::linear_schedule(1.0, 2, 10);
  CHECK(l.lr(1) == Approx(0.5));
  CHECK(l.lr(2) == Approx(1.0));
  CHECK(l.lr(6) == Approx(0.5));
  CHECK(l.lr(10) == Approx(0.0).margin(1e-15));
  CHECK(l.lr(50) == Approx(0.0).margin(1e-15));
  const auto k = cai::cosine_schedule(1.0, 0, 10, 0.1);
  CHECK(k.lr(0) == Approx(1.0));
  CHECK(k.lr(5) == Approx(0.55));
  CHECK(k.lr(10) == Approx(0.1));
  CHECK(k.lr(20) == Approx(0.1));
  CHECK(cai::cosine_schedule(1.0, 5, 5).lr(5) == Approx(0.0).margin(1e-15));
  CHECK_THAT(error_of([] { cai::linear_schedule(1.0, 11, 10); }), Catch::Contains("warmup_steps"));
  CHECK_THAT(error_of([] { cai::cosine_schedule(0.0, 0, 10); }), Catch::Contains("peak"));
  CHECK_THAT(error_of([] { cai::cosine_schedule(1.0, 0, 10, 2.0); }), Catch::Contains("min_lr"));
  CHECK_THAT(error_of([] { cai::linear_schedule(1.0, 0, 0); }), Catch::Contains("total_steps"));
  CHECK_THAT(error_of([] { cai::constant_schedule(1.0, -1); }), Catch::Contains("warmup_steps"));
  CHECK_THAT(error_of([&] { (void)c.lr(-1); }), Catch::Contains("step"));
}

TEST_CASE("the CSV metrics writer fixes its columns from the first record", "[trainer]") {
  cai_test::temp_file f("trainers", "metrics_csv");
  {
    cai::csv_metrics_writer w(f.path);
    cai::metrics_callback cb = std::ref(w);
    cb(0, {{"loss", 1.5}, {"lr", 0.25}});
    cb(1, {{"loss", 0.5}});
    CHECK_THAT(error_of([&] { cb(2, {{"loss", 0.1}, {"extra", 1.0}}); }), Catch::Contains("extra"));
    CHECK(w.columns() == std::vector<std::string>{"loss", "lr"});
  }
  CHECK(cai_test::slurp(f.path) == "step,loss,lr\n0,1.5,0.25\n1,0.5,\n");
}

TEST_CASE("the JSONL metrics writer writes one object per step", "[trainer]") {
  cai_test::temp_file f("trainers", "metrics_jsonl");
  {
    cai::jsonl_metrics_writer w(f.path);
    w(0, {{"loss", 2.0}, {"accuracy", 0.5}});
    w(1, {{"loss", std::nan("")}});
  }
  std::vector<nlohmann::json> got;
  cai::read_jsonl(f.path, [&](const nlohmann::json& j, std::size_t) { got.push_back(j); });
  REQUIRE(got.size() == 2);
  CHECK(got[0]["step"] == 0);
  CHECK(got[0]["loss"] == 2.0);
  CHECK(got[0]["accuracy"] == 0.5);
  CHECK(got[1]["loss"].is_null());
}

TEST_CASE("render_chat marks exactly the assistant turns and their end markers", "[trainer]") {
  const cai::conversation c{{"system", "S"}, {"user", "hi"}, {"assistant", "yo"}, {"user", "q"}, {"assistant", "ok"}};
  const auto r = cai::render_chat(tok, c);
  REQUIRE(r.assistant_spans.size() == 2);
  const auto text = [&](std::pair<std::int64_t, std::int64_t> s) {
    return tok.decode(std::span<const std::int32_t>(r.tokens.data() + s.first, static_cast<std::size_t>(s.second - s.first)));
  };
  CHECK(text(r.assistant_spans[0]) == "yo<|end|>");
  CHECK(text(r.assistant_spans[1]) == "ok<|end|>");
  const auto m = r.loss_mask();
  CHECK(std::count(m.begin(), m.end(), std::uint8_t{1}) == 6);
  const auto last = r.loss_mask(true);
  CHECK(std::count(last.begin(), last.end(), std::uint8_t{1}) == 3);
  CHECK_THAT(error_of([&] { cai::render_chat(tok, {{"user", "a"}, {"assistant", ""}}); }), Catch::Contains("conversation[1].content"));
}

TEST_CASE("SFT puts gradient only on assistant tokens, every assistant turn, none on user tokens", "[trainer]") {
  lm_t lm(tiny, cai::host{}, 3);
  spy_policy spy{&lm, {}, {}};
  const std::vector<cai::conversation> one{sft_data()[1]};
  cai::train_sft(spy, tok, std::span<const cai::conversation>(one), {.batch_size = 1, .schedule = cai::constant_schedule(1e-3)});
  REQUIRE(spy.dlogp.size() == 1);
  const auto r = cai::render_chat(tok, one[0]);
  const auto mask = r.loss_mask();
  const auto& d = spy.dlogp[0];
  REQUIRE(d.size() == r.tokens.size());
  const float expect = -1.0f / static_cast<float>(std::count(mask.begin(), mask.end(), std::uint8_t{1}));
  int user_tokens = 0;
  for (std::size_t t = 0; t < d.size(); ++t) {
    if (mask[t]) CHECK(d[t] == expect);
    else {
      CHECK(d[t] == 0.0f);
      ++user_tokens;
    }
  }
  CHECK(user_tokens > 20);  // system, user turns and role headers all got a zero gradient
  // Both assistant turns ("cai<|end|>", "tiny model<|end|>") are trained.
  CHECK(std::count(mask.begin(), mask.end(), std::uint8_t{1}) == 4 + 11);
}

TEST_CASE("SFT lowers the assistant-span NLL and reports metrics per step", "[trainer]") {
  lm_t lm(tiny, cai::host{}, 5);
  const auto data = sft_data();
  const double before = cai::sft_nll(lm, tok, data);
  std::vector<cai::metric_map> log;
  const auto s = cai::train_sft(lm, tok, std::span<const cai::conversation>(data),
                                {.batch_size = 4, .micro_batch_size = 2, .epochs = 40, .schedule = cai::cosine_schedule(1e-2, 4, 40),
                                 .on_metrics = [&](std::int64_t, const cai::metric_map& m) { log.push_back(m); }});
  const double after = cai::sft_nll(lm, tok, data);
  INFO("NLL before " << before << " after " << after << "; loss " << s.first_loss << " -> " << s.last_loss);
  INFO("SFT assistant-span NLL: " << before << " -> " << after << " (train loss " << s.first_loss << " -> " << s.last_loss << ")");
  CHECK(s.steps == 40);
  CHECK(log.size() == 40);
  CHECK(log[0].at("lr") == 0.0);
  CHECK(log[0].count("grad_norm") == 1);
  CHECK(log[0].at("loss") == Approx(before).epsilon(1e-4));
  CHECK(after < 0.7 * before);
}

TEST_CASE("SFT gradient accumulation over 2 micro-batches equals one batch", "[trainer]") {
  const cai::models::transformer_options o{.eps = 1e-4f};
  lm_t a(tiny, cai::host{}, 9, o), b(tiny, cai::host{}, 9, o);
  const auto data = sft_data();
  const auto sa = cai::train_sft(a, tok, std::span<const cai::conversation>(data), {.batch_size = 4, .schedule = cai::constant_schedule(1e-3)});
  const auto sb = cai::train_sft(b, tok, std::span<const cai::conversation>(data),
                                 {.batch_size = 4, .micro_batch_size = 2, .schedule = cai::constant_schedule(1e-3)});
  CHECK(sa.first_loss == Approx(sb.first_loss).epsilon(1e-6));
  double max_dp = 0, max_dg = 0, max_g = 0;
  for (std::size_t i = 0; i < a.parameters().size(); ++i) {
    max_dp = std::max(max_dp, static_cast<double>(std::fabs(a.parameters()[i] - b.parameters()[i])));
    max_dg = std::max(max_dg, static_cast<double>(std::fabs(a.gradients()[i] - b.gradients()[i])));
    max_g = std::max(max_g, static_cast<double>(std::fabs(a.gradients()[i])));
  }
  INFO("accumulation: max |param diff| " << max_dp << ", max |grad diff| " << max_dg << " (max |grad| " << max_g << ")");
  CHECK(max_g > 1e-3);
  CHECK(max_dg <= 1e-6 * max_g + 1e-9);
  CHECK(max_dp <= 1e-6);
}

TEST_CASE("SFT rejects bad input with errors naming the argument", "[trainer]") {
  lm_t lm(tiny, cai::host{}, 1);
  const std::vector<cai::conversation> none;
  CHECK_THAT(error_of([&] { cai::train_sft(lm, tok, std::span<const cai::conversation>(none)); }), Catch::Contains("'data'"));
  const std::vector<cai::sft_record> empty_resp{{{{"user", "x"}}, ""}};
  CHECK_THAT(error_of([&] { cai::train_sft(lm, tok, std::span<const cai::sft_record>(empty_resp)); }),
             Catch::Contains("data[0].response"));
  const std::vector<cai::sft_record> long_one{{{{"user", "x"}}, "fine"}, {{{"user", "x"}}, std::string(200, 'z')}};
  CHECK_THAT(error_of([&] { cai::train_sft(lm, tok, std::span<const cai::sft_record>(long_one)); }), Catch::Contains("data[1]"));
  CHECK_THAT(error_of([&] { cai::train_sft(lm, tok, std::span<const cai::sft_record>(long_one), {.max_length = 10}); }),
             Catch::Contains("data[0]"));
  const auto data = sft_data();
  const std::span<const cai::conversation> d(data);
  CHECK_THAT(error_of([&] { cai::train_sft(lm, tok, d, {.batch_size = 0}); }), Catch::Contains("batch_size"));
  CHECK_THAT(error_of([&] { cai::train_sft(lm, tok, d, {.batch_size = 2, .micro_batch_size = 3}); }), Catch::Contains("micro_batch_size"));
  CHECK_THAT(error_of([&] { cai::train_sft(lm, tok, d, {.epochs = 0}); }), Catch::Contains("epochs"));
  CHECK_THAT(error_of([&] { cai::train_sft(lm, tok, d, {.schedule = {.peak = -1.0}}); }), Catch::Contains("peak"));
  const std::vector<cai::conversation> no_assistant{{{"user", "only"}}};
  CHECK_THAT(error_of([&] { cai::train_sft(lm, tok, std::span<const cai::conversation>(no_assistant)); }), Catch::Contains("data[0]"));
}

TEST_CASE("reward training separates keyword preferences; soft labels 0.5 keep the margin near 0", "[trainer]") {
  const auto hard = keyword_pairs();
  rm_t rm(tiny, cai::host{}, 11);
  const auto before = cai::evaluate_reward_model(rm, tok, std::span<const cai::preference_record>(hard));
  std::vector<cai::metric_map> log;
  cai::train_reward_model(rm, tok, std::span<const cai::preference_record>(hard),
                          {.batch_size = 8, .epochs = 30, .schedule = cai::constant_schedule(1e-2, 2),
                           .on_metrics = [&](std::int64_t, const cai::metric_map& m) { log.push_back(m); }});
  const auto after = cai::evaluate_reward_model(rm, tok, std::span<const cai::preference_record>(hard));
  INFO("reward (hard labels): accuracy " << before.accuracy << " -> " << after.accuracy << ", margin " << before.margin << " -> "
                                         << after.margin << "; loss " << log.front().at("loss") << " -> " << log.back().at("loss"));
  CHECK(after.accuracy == 1.0);
  CHECK(after.margin > before.margin + 1.0);
  CHECK(log.back().at("loss") < log.front().at("loss"));

  const auto soft = keyword_pairs(0.5);
  rm_t rs(tiny, cai::host{}, 11);
  cai::train_reward_model(rs, tok, std::span<const cai::preference_record>(soft),
                          {.batch_size = 8, .epochs = 30, .schedule = cai::constant_schedule(1e-2, 2)});
  const auto s = cai::evaluate_reward_model(rs, tok, std::span<const cai::preference_record>(soft));
  INFO("reward (soft labels 0.5): margin " << s.margin);
  CHECK(std::fabs(s.margin) < 0.1);
  CHECK(std::fabs(s.margin) < 0.05 * after.margin);

  // Margins and centring pass through to cai::bradley_terry_loss.
  rm_t rc(tiny, cai::host{}, 11);
  cai::train_reward_model(rc, tok, std::span<const cai::preference_record>(hard),
                          {.batch_size = 8, .epochs = 2, .margin = 1.0, .bt = {.center_coef = 0.01}});
}

TEST_CASE("reward training rejects bad input with errors naming the argument", "[trainer]") {
  rm_t rm(tiny, cai::host{}, 1);
  const std::vector<cai::preference_record> none;
  CHECK_THAT(error_of([&] { cai::train_reward_model(rm, tok, std::span<const cai::preference_record>(none)); }), Catch::Contains("'data'"));
  auto d = keyword_pairs();
  d[2].rejected = "";
  CHECK_THAT(error_of([&] { cai::train_reward_model(rm, tok, std::span<const cai::preference_record>(d)); }),
             Catch::Contains("data[2].rejected"));
  d = keyword_pairs(1.5);
  CHECK_THAT(error_of([&] { cai::train_reward_model(rm, tok, std::span<const cai::preference_record>(d)); }),
             Catch::Contains("data[0].label"));
  d = keyword_pairs();
  CHECK_THAT(error_of([&] { cai::train_reward_model(rm, tok, std::span<const cai::preference_record>(d), {.bt = {.center_coef = -1.0}}); }),
             Catch::Contains("center_coef"));
  CHECK_THAT(error_of([&] { cai::train_reward_model(rm, tok, std::span<const cai::preference_record>(d), {.margin = NAN}); }),
             Catch::Contains("margin"));
}

TEST_CASE("DPO raises the chosen-vs-rejected margin with reference log-probs computed once", "[trainer]") {
  const auto data = keyword_pairs();
  const std::span<const cai::preference_record> d(data);
  lm_t lm(tiny, cai::host{}, 21);
  const lm_t frozen = lm;
  counting_reference ref{&frozen};
  std::vector<cai::metric_map> log;
  const auto s = cai::train_dpo(lm, ref, tok, d, cai::dpo::sigmoid{.beta = 0.5},
                                {.batch_size = 4, .epochs = 10, .schedule = cai::constant_schedule(1e-2),
                                 .on_metrics = [&](std::int64_t, const cai::metric_map& m) { log.push_back(m); }});
  INFO("DPO: margin " << log.front().at("margin") << " -> " << log.back().at("margin") << ", accuracy " << log.front().at("accuracy")
                      << " -> " << log.back().at("accuracy") << ", loss " << s.first_loss << " -> " << s.last_loss
                      << "; reference forwards " << ref.forwards);
  CHECK(s.steps == 20);
  CHECK(ref.forwards == 4);  // 2 batches x (chosen, rejected), once for all 10 epochs
  CHECK(log.front().at("margin") == Approx(0.0).margin(1e-5));  // the policy starts as the reference
  CHECK(s.first_loss == Approx(std::log(2.0)).epsilon(1e-5));
  CHECK(log.back().at("margin") > 1.0);
  CHECK(log.back().at("accuracy") == 1.0);
  CHECK(s.last_loss < 0.5 * s.first_loss);

  // Any spec dpo_loss accepts: IPO (needs lengths) and a mix, one epoch each from the policy's own initial copy.
  lm_t p2(tiny, cai::host{}, 21);
  CHECK_NOTHROW(cai::train_dpo(p2, tok, d, cai::dpo::ipo{.beta = 0.1}, {.batch_size = 8}));
  CHECK_NOTHROW(cai::train_dpo(p2, tok, d, cai::dpo::mix{cai::dpo::sigmoid{}, cai::dpo::sft{}}.weighted(1.0, 0.5),
                               {.batch_size = 8, .sequence = {.from_divergence = true}}));
}

TEST_CASE("DPO's on-disk reference cache round-trips and is checked against the dataset", "[trainer]") {
  const auto data = keyword_pairs();
  const std::span<const cai::preference_record> d(data);
  cai_test::temp_file f("trainers", "dpo_ref");
  const lm_t frozen(tiny, cai::host{}, 4);
  counting_reference r1{&frozen};
  const auto a = cai::compute_reference_logps(r1, tok, d, {}, 3, f.path);
  CHECK(r1.forwards == 6);  // 3 batches x 2 sides
  std::size_t lines = 0;
  cai::read_jsonl(f.path, [&](const nlohmann::json&, std::size_t) { ++lines; });
  CHECK(lines == data.size());
  counting_reference r2{&frozen};
  const auto b = cai::compute_reference_logps(r2, tok, d, {}, 3, f.path);
  CHECK(r2.forwards == 0);
  CHECK(a.chosen == b.chosen);
  CHECK(a.rejected == b.rejected);
  CHECK(a.chosen[0] < 0.0f);
  // A later run of train_dpo with the same cache does not run its reference.
  lm_t lm(tiny, cai::host{}, 4);
  counting_reference r3{&frozen};
  cai::train_dpo(lm, r3, tok, d, cai::dpo::sigmoid{}, {.batch_size = 8, .reference_cache = f.path});
  CHECK(r3.forwards == 0);
  // A cache for a different dataset size is refused.
  const std::span<const cai::preference_record> fewer(data.data(), 5);
  CHECK_THAT(error_of([&] { cai::compute_reference_logps(r3, tok, fewer, {}, 3, f.path); }), Catch::Contains("reference_cache"));
}

TEST_CASE("DPO rejects bad input with errors naming the argument", "[trainer]") {
  lm_t lm(tiny, cai::host{}, 1);
  const std::vector<cai::preference_record> none;
  CHECK_THAT(error_of([&] { cai::train_dpo(lm, tok, std::span<const cai::preference_record>(none), cai::dpo::sigmoid{}); }),
             Catch::Contains("'data'"));
  auto data = keyword_pairs();
  CHECK_THAT(error_of([&] { cai::train_dpo(lm, tok, std::span<const cai::preference_record>(data), cai::dpo::sigmoid{.beta = 0.0}); }),
             Catch::Contains("beta"));
  CHECK_THAT(error_of([&] { cai::train_dpo(lm, tok, std::span<const cai::preference_record>(data), cai::dpo::sigmoid{}, {.batch_size = 0}); }),
             Catch::Contains("batch_size"));
  data[1].chosen = "";
  CHECK_THAT(error_of([&] { cai::train_dpo(lm, tok, std::span<const cai::preference_record>(data), cai::dpo::sigmoid{}); }),
             Catch::Contains("data[1].chosen"));
  const cai::reference_logps wrong{{0.0f}, {0.0f}};
  data = keyword_pairs();
  CHECK_THAT(error_of([&] { cai::train_dpo(lm, tok, std::span<const cai::preference_record>(data), cai::dpo::sigmoid{}, wrong); }),
             Catch::Contains("reference"));
}

// ----- checkpoint / resume and shuffling (cai/trainers/checkpoint.hpp) ------------------------------------------------

TEST_CASE("the shuffled epoch order is a seeded permutation that changes with the epoch", "[trainer]") {
  const auto a = cai::detail::trn::epoch_order(50, 0, true, 7), b = cai::detail::trn::epoch_order(50, 0, true, 7);
  const auto c = cai::detail::trn::epoch_order(50, 1, true, 7), d = cai::detail::trn::epoch_order(50, 0, true, 8);
  CHECK(a == b);
  CHECK(a != c);
  CHECK(a != d);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (std::int64_t i = 0; i < 50; ++i) CHECK(sorted[static_cast<std::size_t>(i)] == i);
  const auto in_order = cai::detail::trn::epoch_order(5, 3, false, 7);
  CHECK(in_order == std::vector<std::int64_t>{0, 1, 2, 3, 4});
}

TEST_CASE("shuffled SFT, reward and DPO runs differ from in-order runs and are deterministic for the seed", "[trainer]") {
  const auto conv = sft_data();
  const auto pairs = keyword_pairs();
  const std::span<const cai::conversation> c(conv);
  const std::span<const cai::preference_record> p(pairs);
  const auto sft = [&](bool shuffle, std::uint64_t seed) {
    lm_t m(tiny, cai::host{}, 5);
    cai::train_sft(m, tok, c, {.batch_size = 2, .epochs = 2, .schedule = cai::constant_schedule(1e-2), .shuffle_seed = seed, .shuffle = shuffle});
    return m;
  };
  CHECK(same_bits(sft(true, 1), sft(true, 1)));
  CHECK_FALSE(same_bits(sft(true, 1), sft(false, 1)));
  CHECK_FALSE(same_bits(sft(true, 1), sft(true, 2)));
  const auto reward = [&](bool shuffle, std::uint64_t seed) {
    rm_t m(tiny, cai::host{}, 5);
    cai::train_reward_model(m, tok, p, {.batch_size = 3, .epochs = 2, .schedule = cai::constant_schedule(1e-2), .shuffle_seed = seed, .shuffle = shuffle});
    return m;
  };
  CHECK(same_bits(reward(true, 1), reward(true, 1)));
  CHECK_FALSE(same_bits(reward(true, 1), reward(false, 1)));
  const auto dpo = [&](bool shuffle, std::uint64_t seed) {
    lm_t m(tiny, cai::host{}, 5);
    cai::train_dpo(m, tok, p, cai::dpo::sigmoid{.beta = 0.5},
                   {.batch_size = 3, .epochs = 2, .schedule = cai::constant_schedule(1e-2), .shuffle_seed = seed, .shuffle = shuffle});
    return m;
  };
  CHECK(same_bits(dpo(true, 1), dpo(true, 1)));
  CHECK_FALSE(same_bits(dpo(true, 1), dpo(false, 1)));
}

TEST_CASE("SFT killed mid-epoch and resumed from its checkpoint ends with the uninterrupted run's parameters and summary",
          "[trainer]") {
  const auto data = sft_data();
  const std::span<const cai::conversation> d(data);
  // 4 records, batch 1, 2 epochs: 8 steps; checkpoints after steps 2, 4, 6, 8; the kill comes during step 3.
  cai::sft_options o{.batch_size = 1, .epochs = 2, .schedule = cai::cosine_schedule(1e-2, 2, 8), .shuffle_seed = 3, .shuffle = true};
  lm_t a(tiny, cai::host{}, 5);
  const auto sa = cai::train_sft(a, tok, d, o);
  temp_dir dir("sft");
  o.checkpoint = {.path = dir.path, .every = 2};
  o.on_metrics = [](std::int64_t step, const cai::metric_map&) {
    if (step == 3) throw killed{};
  };
  {
    lm_t first(tiny, cai::host{}, 5);
    REQUIRE_THROWS_AS(cai::train_sft(first, tok, d, o), killed);
  }
  const auto side = read_sidecar(dir.path);
  CHECK(side["step"] == 2);
  CHECK(side["trainer"] == "sft");
  CHECK(std::filesystem::exists(dir.path / "model-2.ckpt"));
  CHECK_FALSE(std::filesystem::exists(dir.path / "trainer.json.tmp"));
  std::vector<std::int64_t> seen;
  o.on_metrics = [&](std::int64_t step, const cai::metric_map&) { seen.push_back(step); };
  lm_t b(tiny, cai::host{}, 77);  // a fresh process: other initial weights, replaced by the checkpoint's
  const auto sb = cai::train_sft(b, tok, d, o);
  CHECK(seen == std::vector<std::int64_t>{2, 3, 4, 5, 6, 7});  // done steps are skipped, not recomputed
  CHECK(sb.steps == sa.steps);
  CHECK(sb.first_loss == sa.first_loss);
  CHECK(sb.last_loss == sa.last_loss);
  CHECK(same_bits(a, b));
  CHECK(b.steps_taken() == 8);
  // Only the latest model file is kept.
  CHECK(std::filesystem::exists(dir.path / "model-8.ckpt"));
  CHECK_FALSE(std::filesystem::exists(dir.path / "model-6.ckpt"));
  // A finished run resumes to its end at once: the model is loaded, nothing is trained.
  seen.clear();
  lm_t c(tiny, cai::host{}, 78);
  const auto sc = cai::train_sft(c, tok, d, o);
  CHECK(seen.empty());
  CHECK(sc.steps == 8);
  CHECK(sc.last_loss == sa.last_loss);
  CHECK(same_bits(a, c));
}

TEST_CASE("reward training killed after an epoch boundary and resumed ends with the uninterrupted run's parameters",
          "[trainer]") {
  const auto data = keyword_pairs();
  const std::span<const cai::preference_record> d(data);
  // 8 pairs, batch 3 (3 + 3 + 2), 2 epochs: 6 steps; checkpoints after steps 2, 4, 6; the kill comes during step 5.
  cai::reward_options o{.batch_size = 3, .epochs = 2, .schedule = cai::linear_schedule(1e-2, 1, 6), .shuffle_seed = 9, .shuffle = true};
  rm_t a(tiny, cai::host{}, 11);
  const auto sa = cai::train_reward_model(a, tok, d, o);
  temp_dir dir("reward");
  o.checkpoint = {.path = dir.path, .every = 2};
  o.on_metrics = [](std::int64_t step, const cai::metric_map&) {
    if (step == 5) throw killed{};
  };
  {
    rm_t first(tiny, cai::host{}, 11);
    REQUIRE_THROWS_AS(cai::train_reward_model(first, tok, d, o), killed);
  }
  const auto side = read_sidecar(dir.path);
  CHECK(side["step"] == 4);
  CHECK(side["epoch"] == 1);
  o.on_metrics = {};
  rm_t b(tiny, cai::host{}, 12);
  const auto sb = cai::train_reward_model(b, tok, d, o);
  CHECK(sb.steps == sa.steps);
  CHECK(sb.first_loss == sa.first_loss);
  CHECK(sb.last_loss == sa.last_loss);
  CHECK(same_bits(a, b));
}

TEST_CASE("DPO killed and resumed ends with the uninterrupted run's parameters without re-running the reference",
          "[trainer]") {
  const auto data = keyword_pairs();
  const std::span<const cai::preference_record> d(data);
  const lm_t frozen(tiny, cai::host{}, 21);
  // 8 pairs, batch 4, 3 epochs: 6 steps; checkpoints after 2, 4, 6; the kill comes during step 3.
  cai::dpo_train_options o{.batch_size = 4, .epochs = 3, .schedule = cai::constant_schedule(1e-2), .shuffle_seed = 4, .shuffle = true};
  lm_t a(tiny, cai::host{}, 21);
  counting_reference ra{&frozen};
  const auto sa = cai::train_dpo(a, ra, tok, d, cai::dpo::sigmoid{.beta = 0.5}, o);
  CHECK(ra.forwards == 4);

  SECTION("with an explicit reference cache") {
    temp_dir dir("dpo");
    cai_test::temp_file cache("trainers", "dpo_resume_ref");
    o.reference_cache = cache.path;
    o.checkpoint = {.path = dir.path, .every = 2};
    o.on_metrics = [](std::int64_t step, const cai::metric_map&) {
      if (step == 3) throw killed{};
    };
    {
      lm_t first(tiny, cai::host{}, 21);
      counting_reference r1{&frozen};
      REQUIRE_THROWS_AS(cai::train_dpo(first, r1, tok, d, cai::dpo::sigmoid{.beta = 0.5}, o), killed);
      CHECK(r1.forwards == 4);
    }
    CHECK(read_sidecar(dir.path)["step"] == 2);
    o.on_metrics = {};
    lm_t b(tiny, cai::host{}, 21);
    counting_reference r2{&frozen};
    const auto sb = cai::train_dpo(b, r2, tok, d, cai::dpo::sigmoid{.beta = 0.5}, o);
    CHECK(r2.forwards == 0);
    CHECK(sb.steps == sa.steps);
    CHECK(sb.first_loss == sa.first_loss);
    CHECK(sb.last_loss == sa.last_loss);
    CHECK(same_bits(a, b));
  }
  SECTION("with the policy's own copy as reference: the log-probs are cached in the checkpoint directory") {
    temp_dir dir("dpo_self");
    o.checkpoint = {.path = dir.path, .every = 2};
    o.on_metrics = [](std::int64_t step, const cai::metric_map&) {
      if (step == 3) throw killed{};
    };
    lm_t first(tiny, cai::host{}, 21);
    REQUIRE_THROWS_AS(cai::train_dpo(first, tok, d, cai::dpo::sigmoid{.beta = 0.5}, o), killed);
    CHECK(std::filesystem::exists(dir.path / "reference_logps.jsonl"));
    // Resuming in the same process with the half-trained model: its copy would be a wrong reference, the cache is not.
    o.on_metrics = {};
    const auto sb = cai::train_dpo(first, tok, d, cai::dpo::sigmoid{.beta = 0.5}, o);
    CHECK(sb.last_loss == sa.last_loss);
    CHECK(same_bits(a, first));
  }
}

TEST_CASE("trainer checkpoints reject bad options and foreign or damaged sidecars naming the problem", "[trainer]") {
  const auto data = sft_data();
  const std::span<const cai::conversation> d(data);
  lm_t lm(tiny, cai::host{}, 1);
  CHECK_THAT(error_of([&] { cai::train_sft(lm, tok, d, {.checkpoint = {.path = "x", .every = -1}}); }), Catch::Contains("checkpoint.every"));
  CHECK_THAT(error_of([&] { cai::train_sft(lm, tok, d, {.checkpoint = {.path = {}, .every = 1}}); }), Catch::Contains("checkpoint.path"));
  spy_policy spy{&lm, {}, {}};
  static_assert(!cai::checkpointable<spy_policy>);
  static_assert(cai::checkpointable<lm_t> && cai::checkpointable<rm_t>);
  CHECK_THAT(error_of([&] { cai::train_sft(spy, tok, d, {.checkpoint = {.path = "x", .every = 2}}); }),
             Catch::Contains("'checkpoint'") && Catch::Contains("save_checkpoint"));
  CHECK(spy.dlogp.empty());  // refused before any step
  const auto pairs = keyword_pairs();
  const std::span<const cai::preference_record> p(pairs);
  CHECK_THAT(error_of([&] { cai::train_dpo(lm, tok, p, cai::dpo::sigmoid{}, {.checkpoint = {.path = "x", .every = -3}}); }),
             Catch::Contains("checkpoint.every"));
  rm_t rm(tiny, cai::host{}, 1);
  CHECK_THAT(error_of([&] { cai::train_reward_model(rm, tok, p, {.checkpoint = {.path = "x", .every = -1}}); }),
             Catch::Contains("checkpoint.every"));

  temp_dir dir("bad");
  const cai::sft_options o{.batch_size = 1, .epochs = 2, .checkpoint = {.path = dir.path, .every = 2}};
  cai::train_sft(lm, tok, d, o);  // a finished 8-step run
  const auto side = dir.path / "trainer.json";
  const auto good = cai_test::slurp(side);
  // The same directory for a shorter run: its step 8 exceeds this run's 4 steps.
  auto shorter = o;
  shorter.epochs = 1;
  CHECK_THAT(error_of([&] { cai::train_sft(lm, tok, d, shorter); }),
             Catch::Contains("checkpoint.path") && Catch::Contains("total_steps = 4") && Catch::Contains("step 8"));
  auto other_batch = o;
  other_batch.batch_size = 2;
  CHECK_THAT(error_of([&] { cai::train_sft(lm, tok, d, other_batch); }), Catch::Contains("checkpoint.path") && Catch::Contains("batch_size"));
  auto shuffled = o;
  shuffled.shuffle = true;
  CHECK_THAT(error_of([&] { cai::train_sft(lm, tok, d, shuffled); }), Catch::Contains("shuffle"));
  rm_t rm2(tiny, cai::host{}, 1);
  CHECK_THAT(error_of([&] {
               cai::train_reward_model(rm2, tok, std::span<const cai::preference_record>(pairs.data(), 4),
                                       {.batch_size = 1, .epochs = 2, .checkpoint = {.path = dir.path, .every = 2}});
             }),
             Catch::Contains("checkpoint.path") && Catch::Contains("trainer \"sft\""));
  // Damaged sidecars: parse errors naming the file.
  const std::vector<float> before(lm.parameters().begin(), lm.parameters().end());
  write_text(side, "{\"format\": \"cai.trainer_checkpoint\", \"step\": ");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sft(lm, tok, d, o), cai::parse_error, "trainer.json", "not valid JSON");
  write_text(side, "[1, 2]");
  CAI_REQUIRE_THROWS_NAMING(cai::train_sft(lm, tok, d, o), cai::parse_error, "trainer.json", "JSON object");
  auto j = nlohmann::json::parse(good);
  j.erase("step");
  write_text(side, j.dump());
  CAI_REQUIRE_THROWS_NAMING(cai::train_sft(lm, tok, d, o), cai::parse_error, "trainer.json", "\"step\"", "missing");
  j = nlohmann::json::parse(good);
  j["model"] = "../elsewhere.ckpt";
  write_text(side, j.dump());
  CAI_REQUIRE_THROWS_NAMING(cai::train_sft(lm, tok, d, o), cai::parse_error, "\"model\"");
  j = nlohmann::json::parse(good);
  j["epoch"] = 0;
  write_text(side, j.dump());
  CAI_REQUIRE_THROWS_NAMING(cai::train_sft(lm, tok, d, o), cai::parse_error, "\"epoch\"");
  // A damaged model file named by a good sidecar: the model's own parse error.
  write_text(side, good);
  {
    std::fstream f(dir.path / "model-8.ckpt", std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(200);
    f.put('\x7f');
  }
  CAI_REQUIRE_THROWS_NAMING(cai::train_sft(lm, tok, d, o), cai::parse_error, "model-8.ckpt", "checksum mismatch");
  CHECK(std::vector<float>(lm.parameters().begin(), lm.parameters().end()) == before);
}
