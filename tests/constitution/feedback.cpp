// Tests for cai/constitution/feedback.hpp: AI-feedback preference labels (RLAIF) over scripted, deterministic
// judges and generators. The exact request layout (multiple-choice question over the hh transcript, option strings,
// few-shot exchanges, system prompt, chain-of-thought reasoning as the assistant turn the options continue); the
// label math against long-double references (normalised option probabilities at extreme log-probs, the exact effect
// of scoring both orders under a constant position bias, the mean over K principles, the CoT clamp); principles drawn
// without replacement from a stream keyed by (seed, id) only; faults (unusable log-probs, judges and generators that
// throw or miscount) failing only the records concerned; the JSON record as a messages-form preference pair whose
// label feeds bradley_terry_loss; run_feedback resumed after a kill; bad input naming the argument.
#include <cai/algorithms/preference.hpp>
#include <cai/constitution/default_constitution.hpp>
#include <cai/constitution/feedback.hpp>
#include <cai/core/host.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "../file_support.hpp"
#include "../support.hpp"

namespace {

namespace fs = std::filesystem;
using cai_test::slurp;

/// This file's temporary JSONL files.
struct temp_file : cai_test::temp_file {
  explicit temp_file(const std::string& stem) : cai_test::temp_file("feedback", stem) {}
};
using json = nlohmann::json;
using ld = long double;
using cai::conversation;

constexpr double inf = std::numeric_limits<double>::infinity();

// ----- what the judge is shown ----------------------------------------------------------------------------------

const std::string head = "Consider the following conversation between a human and an assistant:\n";

/// The parts of a feedback question (responses and questions hold no newline in these tests).
struct shown {
  std::string transcript, question, first, second, lead;
};

/// Parses a question written by the labeller; throws (a judge failure for the library) when it is not one.
shown parse_question(const std::string& m) {
  const auto bad = [&] { return std::runtime_error("not a feedback question: " + m); };
  if (m.rfind(head, 0) != 0) throw bad();
  const auto opt = m.rfind("\nOptions:\n(A) ");
  if (opt == std::string::npos) throw bad();
  const auto qs = m.rfind("\n\n", opt);
  const auto bpos = m.find("\n(B) ", opt);
  if (qs == std::string::npos || qs < head.size() || bpos == std::string::npos) throw bad();
  const auto end = m.find('\n', bpos + 5);
  if (end == std::string::npos) throw bad();
  shown s;
  s.transcript = m.substr(head.size(), qs - head.size());
  s.question = m.substr(qs + 2, opt - qs - 2);
  s.first = m.substr(opt + 14, bpos - opt - 14);
  s.second = m.substr(bpos + 5, end - bpos - 5);
  s.lead = m.substr(end + 1);
  return s;
}

const std::string& last_user(const conversation& c) {
  for (std::size_t i = c.size(); i-- > 0;)
    if (c[i].role == "user") return c[i].content;
  throw std::runtime_error("no user turn");
}

shown shown_of(const conversation& c) { return parse_question(last_user(c)); }

/// "Answer ..., worth 1.5" -> 1.5
double worth(const std::string& response) {
  const auto k = response.rfind("worth ");
  if (k == std::string::npos) throw std::runtime_error("no worth in '" + response + "'");
  return std::stod(response.substr(k + 6));
}

/// The test constitution's principles weigh a response's worth differently: topic k has weight w[k].
constexpr double topic_weight[] = {1.0, -2.0, 0.5, 3.0};
double weight(const std::string& question) {
  const auto k = question.find("topic ");
  if (k == std::string::npos) return 1.0;
  return topic_weight[question[k + 6] - '0'];
}

// ----- scripted judge and generator -----------------------------------------------------------------------------

struct scripted_judge {
  std::function<std::vector<double>(const cai::judge_request&)> per_request;
  std::function<void(std::span<const cai::judge_request>, std::size_t)> before{};  ///< may throw (call number from 1)
  std::function<void(std::vector<std::vector<double>>&)> after{};                  ///< may tamper with the result
  std::vector<cai::judge_request> seen;
  std::vector<std::size_t> call_sizes;

  std::vector<std::vector<double>> score(std::span<const cai::judge_request> rs) {
    call_sizes.push_back(rs.size());
    if (before) before(rs, call_sizes.size());
    std::vector<std::vector<double>> out;
    for (const auto& r : rs) {
      seen.push_back(r);
      out.push_back(per_request(r));
    }
    if (after) after(out);
    return out;
  }
};
static_assert(cai::judge<scripted_judge>);

/// log P(first option) = w * worth(first) + bias, log P(second option) = w * worth(second): a judge whose preference
/// depends on the principle's question and, with bias != 0, on the position.
scripted_judge quality_judge(double bias = 0.0) {
  scripted_judge j;
  j.per_request = [bias](const cai::judge_request& r) {
    const shown s = shown_of(r.prompt);
    const double w = weight(s.question);
    return std::vector<double>{w * worth(s.first) + bias, w * worth(s.second)};
  };
  return j;
}

struct scripted_generator {
  std::function<std::string(const conversation&)> reason = [](const conversation& c) {
    const shown s = shown_of(c);
    return "I weigh '" + s.first + "' against '" + s.second + "'.";
  };
  std::function<void(std::span<const conversation>, std::size_t)> before{};  ///< may throw (call number from 1)
  bool drop_one = false;                                                     ///< return one completion too few
  bool tag_seed = false;                                                     ///< append the sampling seed
  std::vector<conversation> seen;
  std::vector<cai::sampling_params> params;
  std::size_t calls = 0;

  std::vector<std::string> generate(std::span<const conversation> cs, const cai::sampling_params& sp) {
    ++calls;
    params.push_back(sp);
    if (before) before(cs, calls);
    std::vector<std::string> out;
    for (const auto& c : cs) {
      seen.push_back(c);
      out.push_back(reason(c) + (tag_seed ? " (seed " + std::to_string(sp.seed) + ")" : std::string()));
    }
    if (drop_one && !out.empty()) out.pop_back();
    return out;
  }
};
static_assert(cai::text_generator<scripted_generator>);

// ----- data -----------------------------------------------------------------------------------------------------

cai::principle topic(int k) {
  const std::string n = std::to_string(k);
  return {"t" + n, "Critique topic " + n + ".", "Revise topic " + n + ".", "Which response is better on topic " + n + "?"};
}

/// Four principles (weights 1, -2, 0.5, 3) and two feedback examples (one with reasoning, one without).
cai::constitution topics() {
  cai::constitution c;
  c.name = "topics";
  for (int k = 0; k < 4; ++k) c.principles.push_back(topic(k));
  c.feedback_examples.push_back({"", "Which is kinder?", {{"user", "Q"}}, {"x", "y"}, 1, "Option y is kinder."});
  c.feedback_examples.push_back({"", "Which is clearer?", {{"user", "Hi"}, {"assistant", "Hey"}, {"user", "Help"}}, {"sure", "no"}, 0, ""});
  return c;
}

/// One principle (topic 0, weight 1) and one feedback example: every request is fully determined.
cai::constitution one_topic(std::size_t example = 0) {
  cai::constitution c = topics();
  c.principles.resize(1);
  c.feedback_examples = {c.feedback_examples[example]};
  return c;
}

std::vector<cai::comparison> comparisons(std::size_t n, const std::string& prefix = "c") {
  std::vector<cai::comparison> v;
  for (std::size_t i = 0; i < n; ++i) {
    const std::string s = std::to_string(i);
    conversation d{{"user", "Question " + s + "?"}};
    if (i % 3 == 1) d = {{"user", "Hello " + s}, {"assistant", "Hi."}, {"user", "Question " + s + "?"}};
    const double x = 0.25 * static_cast<double>(i % 7), y = 0.5 * static_cast<double>(i % 4);
    v.push_back({prefix + s, d, "Answer a" + s + ", worth " + std::to_string(x), "Answer b" + s + ", worth " + std::to_string(y)});
  }
  return v;
}

ld sig(ld x) { return 1.0L / (1.0L + std::exp(-x)); }

/// The normalised option probability, literally e^lA / (e^lA + e^lB), in long double.
ld option_probability(double la, double lb) {
  const ld ea = std::exp(static_cast<ld>(la)), eb = std::exp(static_cast<ld>(lb));
  return ea / (ea + eb);
}

/// P(a preferred) of one principle (weight w) for a quality_judge with the given bias.
ld expected_vote(double w, double x, double y, double bias, bool both_orders) {
  const ld p_ab = sig(static_cast<ld>(w * x + bias - w * y));
  if (!both_orders) return p_ab;
  const ld p_ba = sig(static_cast<ld>(w * y + bias - w * x));
  return 0.5L * (p_ab + (1.0L - p_ba));
}

bool close(double got, ld want, ld rel = 1e-14L) {
  return std::isfinite(got) && std::fabs(static_cast<ld>(got) - want) <= rel * std::fabs(want) + 1e-300L;
}

cai::feedback_options opts() {
  cai::feedback_options o;
  o.progress = false;
  return o;
}


std::vector<std::string> lines_of(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<std::string> v;
  std::string line;
  while (std::getline(in, line)) v.push_back(line);
  return v;
}


/// The records of a JSONL file by id; REQUIREs that no id appears twice.
std::map<std::string, json> by_id(const fs::path& p) {
  std::map<std::string, json> m;
  for (const auto& line : lines_of(p)) {
    const json j = json::parse(line);
    INFO("id " << j.at("id"));
    REQUIRE(m.emplace(j.at("id").get<std::string>(), j).second);
  }
  return m;
}

std::map<std::string, double> labels_by_id(const std::vector<cai::feedback_label>& v) {
  std::map<std::string, double> m;
  for (const auto& f : v)
    if (f.ok()) m[f.id] = f.label;
  return m;
}

}  // namespace

// ----- the request layout ---------------------------------------------------------------------------------------

TEST_CASE("a feedback request asks the principle's question over the hh transcript with both responses as options", "[rlaif][constitution]") {
  const cai::constitution c = one_topic();
  const std::vector<cai::comparison> items{{"bread",
                                            {{"user", "Hi there"}, {"assistant", "Hello! How can I help?"}, {"user", "How do I bake bread?"}},
                                            "Knead it, worth 2",
                                            "Buy it, worth 1"}};
  const std::string body = head +
                           "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: How do I bake bread?"
                           "\n\nWhich response is better on topic 0?\nOptions:\n";
  const std::string q_ab = body + "(A) Knead it, worth 2\n(B) Buy it, worth 1\nThe answer is:";
  const std::string q_ba = body + "(A) Buy it, worth 1\n(B) Knead it, worth 2\nThe answer is:";
  const std::string shot = head + "\n\nHuman: Q\n\nWhich is kinder?\nOptions:\n(A) x\n(B) y\nThe answer is:";

  SECTION("bare: one user turn per order, (a, b) then (b, a)") {
    scripted_judge j = quality_judge();
    const auto out = cai::label_feedback(j, c, items, opts());
    REQUIRE(j.seen.size() == 2);
    CHECK(j.seen[0].prompt == conversation{{"user", q_ab}});
    CHECK(j.seen[1].prompt == conversation{{"user", q_ba}});
    for (const auto& r : j.seen) CHECK(r.options == std::vector<std::string>{"(A)", "(B)"});
    CHECK(j.call_sizes == std::vector<std::size_t>{2});  // one judge call for the batch
    REQUIRE(out.size() == 1);
    CHECK(out[0].ok());
    CHECK(out[0].id == "bread");
    CHECK(out[0].dialogue == items[0].dialogue);
    CHECK(out[0].a == items[0].a);
    CHECK(out[0].b == items[0].b);
    REQUIRE(out[0].votes.size() == 1);
    CHECK(out[0].votes[0].principle == "t0");
  }
  SECTION("system prompt and a few-shot example answered with the option string") {
    scripted_judge j = quality_judge();
    auto o = opts();
    o.few_shot = 1;
    o.system_prompt = "You are a careful judge.";
    (void)cai::label_feedback(j, c, items, o);
    REQUIRE(j.seen.size() == 2);
    const conversation pre{{"system", "You are a careful judge."}, {"user", shot}, {"assistant", "(B)"}};
    conversation want_ab = pre, want_ba = pre;
    want_ab.push_back({"user", q_ab});
    want_ba.push_back({"user", q_ba});
    CHECK(j.seen[0].prompt == want_ab);
    CHECK(j.seen[1].prompt == want_ba);
  }
  SECTION("custom option strings are scored and answer the few-shot examples; one order only") {
    scripted_judge j = quality_judge();
    auto o = opts();
    o.few_shot = 1;
    o.option_strings = {"A", "B"};
    o.both_orders = false;
    (void)cai::label_feedback(j, c, items, o);
    REQUIRE(j.seen.size() == 1);
    CHECK(j.seen[0].prompt == conversation{{"user", shot}, {"assistant", "B"}, {"user", q_ab}});
    CHECK(j.seen[0].options == std::vector<std::string>{"A", "B"});
  }
  SECTION("a judge-and-generator call without chain of thought never calls the generator") {
    scripted_judge j = quality_judge();
    scripted_generator g;
    auto o = opts();
    o.few_shot = 1;
    const auto with_gen = cai::label_feedback(j, g, c, items, o);
    CHECK(g.calls == 0);
    scripted_judge j2 = quality_judge();
    CHECK(cai::label_feedback(j2, c, items, o) == with_gen);
    REQUIRE(j.seen.size() == 2);
    CHECK(j.seen[0].prompt == j2.seen[0].prompt);
  }
}

TEST_CASE("with chain of thought the generator reasons first and its reasoning leads the assistant turn the options continue", "[rlaif][constitution]") {
  const std::vector<cai::comparison> items{{"bread", {{"user", "How do I bake bread?"}}, "Knead it, worth 2", "Buy it, worth 1"}};
  const std::string body = head + "\n\nHuman: How do I bake bread?\n\nWhich response is better on topic 0?\nOptions:\n";
  const std::string q_ab = body + "(A) Knead it, worth 2\n(B) Buy it, worth 1\nLet's think step by step:";
  const std::string q_ba = body + "(A) Buy it, worth 1\n(B) Knead it, worth 2\nLet's think step by step:";
  const std::string r_ab = "I weigh 'Knead it, worth 2' against 'Buy it, worth 1'.";
  const std::string r_ba = "I weigh 'Buy it, worth 1' against 'Knead it, worth 2'.";

  SECTION("with a system prompt and a few-shot example that has reasoning") {
    scripted_judge j = quality_judge();
    scripted_generator g;
    auto o = opts();
    o.chain_of_thought = true;
    o.few_shot = 1;
    o.system_prompt = "Judge carefully.";
    o.sampling.temperature = 0.25f;
    o.sampling.max_new_tokens = 77;
    const auto out = cai::label_feedback(j, g, one_topic(0), items, o);
    const conversation pre{{"system", "Judge carefully."},
                           {"user", head + "\n\nHuman: Q\n\nWhich is kinder?\nOptions:\n(A) x\n(B) y\nLet's think step by step:"},
                           {"assistant", "Option y is kinder.\nTherefore, the answer is: (B)"}};
    conversation g_ab = pre, g_ba = pre;
    g_ab.push_back({"user", q_ab});
    g_ba.push_back({"user", q_ba});
    CHECK(g.calls == 1);  // one generate() call for the batch
    REQUIRE(g.seen.size() == 2);
    CHECK(g.seen[0] == g_ab);
    CHECK(g.seen[1] == g_ba);
    REQUIRE(g.params.size() == 1);
    CHECK(g.params[0].temperature == 0.25f);
    CHECK(g.params[0].max_new_tokens == 77);
    conversation j_ab = g_ab, j_ba = g_ba;
    j_ab.push_back({"assistant", r_ab + "\nTherefore, the answer is:"});
    j_ba.push_back({"assistant", r_ba + "\nTherefore, the answer is:"});
    REQUIRE(j.seen.size() == 2);
    CHECK(j.seen[0].prompt == j_ab);
    CHECK(j.seen[1].prompt == j_ba);
    CHECK(j.seen[0].options == std::vector<std::string>{"(A)", "(B)"});
    REQUIRE(out.size() == 1);
    REQUIRE(out[0].ok());
    REQUIRE(out[0].votes.size() == 1);
    CHECK(out[0].votes[0].reasoning_ab == r_ab);
    CHECK(out[0].votes[0].reasoning_ba == r_ba);
  }
  SECTION("a few-shot example without reasoning answers right after the lead") {
    scripted_judge j = quality_judge();
    scripted_generator g;
    auto o = opts();
    o.chain_of_thought = true;
    o.few_shot = 1;
    o.both_orders = false;
    (void)cai::label_feedback(j, g, one_topic(1), items, o);
    const conversation want{{"user", head + "\n\nHuman: Hi\n\nAssistant: Hey\n\nHuman: Help\n\nWhich is clearer?\nOptions:\n(A) sure\n(B) no\nLet's think step by step:"},
                            {"assistant", "\nTherefore, the answer is: (A)"},
                            {"user", q_ab},
                            {"assistant", r_ab + "\nTherefore, the answer is:"}};
    REQUIRE(j.seen.size() == 1);
    CHECK(j.seen[0].prompt == want);
    REQUIRE(g.seen.size() == 1);
    CHECK(g.seen[0] == conversation(want.begin(), want.begin() + 3));
  }
}

// ----- the label math -------------------------------------------------------------------------------------------

TEST_CASE("the label is the normalised option probability, computed without overflow at extreme log-probs", "[rlaif][constitution]") {
  // (log P(A), log P(B)) for the response shown first; one principle, one order: label = p_ab.
  const std::vector<std::pair<double, double>> cases{
      {0.0, 0.0},       {-0.7, -1.9},      {-1.9, -0.7},   {-3.5, -3.25},   {800.0, 0.0},     {0.0, 800.0},   {-1000.0, -1000.0},
      {-1000.0, -200.0}, {-200.0, -1000.0}, {700.5, -99.25}, {-745.0, -0.1}, {-30.0, 0.0},     {36.0, 0.0},    {-inf, -3.0},
      {-3.0, -inf},     {-inf, 0.0},       {1e-9, 0.0}};
  std::vector<cai::comparison> items;
  std::map<std::string, std::pair<double, double>> table;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const std::string s = std::to_string(i);
    items.push_back({"p" + s, {{"user", "Q" + s}}, "first " + s, "second " + s});
    table["first " + s] = cases[i];
  }
  scripted_judge j;
  j.per_request = [&](const cai::judge_request& r) {
    const auto lp = table.at(shown_of(r.prompt).first);
    return std::vector<double>{lp.first, lp.second};
  };
  auto o = opts();
  o.both_orders = false;
  o.batch_size = 5;
  const auto out = cai::label_feedback(j, one_topic(), items, o);
  REQUIRE(out.size() == cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto [la, lb] = cases[i];
    const ld want = option_probability(la, lb);
    INFO("log-probs " << la << ", " << lb << ": label " << out[i].label << ", want " << static_cast<double>(want));
    REQUIRE(out[i].ok());
    CHECK(out[i].id == items[i].id);
    CHECK(close(out[i].label, want));
    CHECK(out[i].label >= 0.0);
    CHECK(out[i].label <= 1.0);
    REQUIRE(out[i].votes.size() == 1);
    CHECK(out[i].votes[0].p_ab == out[i].label);
    CHECK(out[i].votes[0].p == out[i].label);
  }
  // The naive formula really overflows there (what "stably" guards against).
  CHECK(std::isnan(std::exp(800.0) / (std::exp(800.0) + std::exp(0.0))));
  CHECK(out[4].label == 1.0);
  CHECK(out[6].label == 0.5);
  CHECK(out[13].label == 0.0);  // -inf against a finite log-prob is usable: P = 0
  CHECK(out[14].label == 1.0);
}

TEST_CASE("scoring both orders cancels a constant position bias: the label is the mean of sigmoid(d + b) and sigmoid(d - b)", "[rlaif][constitution]") {
  // A judge adding b to the log-prob of whichever response is shown first, on quality difference d = worth(a) -
  // worth(b): p_ab = s(d + b), p_ba = s(-d + b), label = (p_ab + 1 - p_ba) / 2 = (s(d + b) + s(d - b)) / 2.
  // That is odd-symmetric (swapping a and b gives 1 - label) and exactly 1/2 for equal responses, whatever b is;
  // one order alone gives s(d + b).
  const auto items = comparisons(14);
  std::vector<cai::comparison> swapped = items;
  for (auto& it : swapped) std::swap(it.a, it.b);
  for (const double b : {0.0, 0.75, -1.5, 6.0}) {
    INFO("bias " << b);
    scripted_judge j = quality_judge(b), js = quality_judge(b), j1 = quality_judge(b);
    auto o = opts();
    o.batch_size = 4;
    const auto out = cai::label_feedback(j, one_topic(), items, o);
    const auto sw = cai::label_feedback(js, one_topic(), swapped, o);
    o.both_orders = false;
    const auto one = cai::label_feedback(j1, one_topic(), items, o);
    for (std::size_t i = 0; i < items.size(); ++i) {
      const double x = worth(items[i].a), y = worth(items[i].b);
      const ld d = static_cast<ld>(x) - static_cast<ld>(y);
      INFO("worths " << x << ", " << y);
      REQUIRE(out[i].ok());
      REQUIRE(sw[i].ok());
      REQUIRE(one[i].ok());
      const ld want = 0.5L * (sig(d + static_cast<ld>(b)) + sig(d - static_cast<ld>(b)));
      CHECK(close(out[i].label, want));
      CHECK(close(out[i].label, expected_vote(1.0, x, y, b, true)));
      CHECK(close(out[i].votes[0].p_ab, sig(d + static_cast<ld>(b))));
      CHECK(close(out[i].votes[0].p_ba, sig(-d + static_cast<ld>(b))));
      CHECK(out[i].label + sw[i].label == Approx(1.0).margin(1e-15));
      if (x == y) CHECK(out[i].label == Approx(0.5).margin(1e-15));
      CHECK(close(one[i].label, sig(d + static_cast<ld>(b))));
      if (b == 0.0) CHECK(close(out[i].label, sig(d)));  // an unbiased judge: both orders agree with one
    }
  }
}

TEST_CASE("the label is the mean over the principles drawn, and chain-of-thought labels are clamped", "[rlaif][constitution]") {
  const auto items = comparisons(12);
  const cai::constitution c = topics();
  const auto weight_of = [&](const std::string& id) { return topic_weight[id[1] - '0']; };
  SECTION("an ensemble of K principles whose questions weigh the responses differently") {
    for (const std::size_t k : {std::size_t{1}, std::size_t{2}, std::size_t{4}}) {
      for (const bool both : {true, false}) {
        INFO("K = " << k << ", both orders " << both);
        scripted_judge j = quality_judge(0.5);
        auto o = opts();
        o.principles = k;
        o.both_orders = both;
        o.seed = 11;
        o.batch_size = 5;
        const auto out = cai::label_feedback(j, c, items, o);
        CHECK(j.seen.size() == items.size() * k * (both ? 2 : 1));
        REQUIRE(out.size() == items.size());
        for (std::size_t i = 0; i < items.size(); ++i) {
          const double x = worth(items[i].a), y = worth(items[i].b);
          REQUIRE(out[i].ok());
          REQUIRE(out[i].votes.size() == k);
          ld sum = 0.0L;
          std::set<std::string> ids;
          for (const auto& v : out[i].votes) {
            ids.insert(v.principle);
            const ld want = expected_vote(weight_of(v.principle), x, y, 0.5, both);
            CHECK(close(v.p, want));
            sum += want;
          }
          CHECK(ids.size() == k);
          CHECK(close(out[i].label, sum / static_cast<ld>(k)));
        }
      }
    }
  }
  SECTION("with all four principles the label does not depend on the draw") {
    scripted_judge j1 = quality_judge(), j2 = quality_judge();
    auto o = opts();
    o.principles = 4;
    o.seed = 1;
    const auto a = cai::label_feedback(j1, c, items, o);
    o.seed = 2;
    const auto b = cai::label_feedback(j2, c, items, o);
    for (std::size_t i = 0; i < items.size(); ++i) {
      const double x = worth(items[i].a), y = worth(items[i].b);
      ld want = 0.0L;
      for (double w : topic_weight) want += expected_vote(w, x, y, 0.0, true) / 4.0L;
      CHECK(close(a[i].label, want, 1e-13L));
      CHECK(close(b[i].label, want, 1e-13L));
    }
  }
  SECTION("chain-of-thought labels are clamped to [cot_min, cot_max]; the votes are not") {
    std::vector<cai::comparison> cmp{{"hi", {{"user", "Q"}}, "a, worth 5", "b, worth 0"},
                                     {"lo", {{"user", "Q"}}, "a, worth 0", "b, worth 5"},
                                     {"mid", {{"user", "Q"}}, "a, worth 0.25", "b, worth 0"},
                                     {"tie", {{"user", "Q"}}, "a, worth 1", "b, worth 1"}};
    const ld mid = sig(0.25L);
    for (const auto& [lo, hi] : {std::pair{0.4, 0.6}, std::pair{0.1, 0.55}, std::pair{0.0, 1.0}}) {
      INFO("clamp [" << lo << ", " << hi << "]");
      scripted_judge j = quality_judge();
      scripted_generator g;
      auto o = opts();
      o.chain_of_thought = true;
      o.cot_min = lo;
      o.cot_max = hi;
      const auto out = cai::label_feedback(j, g, one_topic(), cmp, o);
      for (const auto& f : out) REQUIRE(f.ok());
      CHECK(out[0].label == (hi < 1.0 ? hi : out[0].votes[0].p));
      CHECK(out[0].votes[0].p == Approx(static_cast<double>(sig(5.0L))).epsilon(1e-14));
      CHECK(out[1].label == (lo > 0.0 ? lo : out[1].votes[0].p));
      CHECK(out[1].votes[0].p == Approx(static_cast<double>(sig(-5.0L))).epsilon(1e-14));
      if (hi >= 0.6) CHECK(close(out[2].label, mid));
      else CHECK(out[2].label == hi);
      CHECK(out[3].label == Approx(0.5).margin(1e-16));
    }
    // Without chain of thought the same judge gives unclamped labels.
    scripted_judge j = quality_judge();
    const auto plain = cai::label_feedback(j, one_topic(), cmp, opts());
    CHECK(close(plain[0].label, sig(5.0L)));
    CHECK(close(plain[1].label, sig(-5.0L)));
  }
}

// ----- principle sampling ---------------------------------------------------------------------------------------

TEST_CASE("principles are drawn without replacement from a stream keyed by seed and id only", "[rlaif][constitution]") {
  const cai::constitution& c = cai::default_constitution();
  REQUIRE(c.principles.size() == 16);
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < c.principles.size(); ++i) index[c.principles[i].id] = i;
  scripted_judge flat;
  flat.per_request = [](const cai::judge_request&) { return std::vector<double>{-1.0, -1.0}; };
  const auto drawn = [&](const std::vector<cai::comparison>& items, cai::feedback_options o) {
    o.both_orders = false;
    std::map<std::string, std::vector<std::string>> m;
    for (const auto& f : cai::label_feedback(flat, c, items, o)) {
      std::vector<std::string> ids;
      for (const auto& v : f.votes) ids.push_back(v.principle);
      m[f.id] = ids;
    }
    return m;
  };
  auto o = opts();
  o.principles = 4;
  o.seed = 7;
  const auto items = comparisons(300, "r");
  const auto base = drawn(items, o);
  for (const auto& [id, ids] : base) {
    REQUIRE(ids.size() == 4);
    CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == 4);
    for (const auto& p : ids) CHECK(index.count(p) == 1);
  }
  // Another batching, another order, other content, the id among other ids: the same principles, in the same order.
  std::vector<cai::comparison> other(items.rbegin(), items.rend());
  for (auto& it : other) {
    it.a += " (edited)";
    it.dialogue.insert(it.dialogue.begin(), {{"user", "Earlier"}, {"assistant", "Yes"}});
  }
  other.insert(other.begin() + 5, comparisons(20, "extra")[3]);
  auto o2 = o;
  o2.batch_size = 3;
  o2.few_shot = 2;  // the shots are drawn after the principles
  const auto moved = drawn(other, o2);
  for (const auto& [id, ids] : base) CHECK(moved.at(id) == ids);
  CHECK(drawn(std::vector<cai::comparison>(items.begin() + 17, items.begin() + 18), o).at(items[17].id) == base.at(items[17].id));
  // Another seed: other draws.
  auto o3 = o;
  o3.seed = 8;
  const auto reseeded = drawn(items, o3);
  std::size_t same = 0;
  for (const auto& [id, ids] : base) same += reseeded.at(id) == ids ? 1 : 0;
  CHECK(same < 10);
  // K = 16: a permutation of the constitution.
  auto o4 = o;
  o4.principles = 16;
  for (const auto& [id, ids] : drawn(comparisons(20, "perm"), o4)) CHECK(std::set<std::string>(ids.begin(), ids.end()).size() == 16);
  // Uniform-ish: each principle drawn first about 1/16 of the time, and present about K/16 of the time.
  const auto many = comparisons(1600, "u");
  std::vector<std::size_t> first(16), present(16);
  for (const auto& [id, ids] : drawn(many, o)) {
    ++first[index.at(ids[0])];
    for (const auto& p : ids) ++present[index.at(p)];
  }
  for (std::size_t k = 0; k < 16; ++k) {
    INFO("principle " << c.principles[k].id << ": first " << first[k] << ", present " << present[k]);
    CHECK(first[k] >= 55);  // mean 100, sd 9.7
    CHECK(first[k] <= 145);
    CHECK(present[k] >= 320);  // mean 400, sd 17.3
    CHECK(present[k] <= 480);
  }
  // Few-shot examples: distinct, and fixed by (seed, id) too.
  scripted_judge rec = quality_judge();
  auto o5 = opts();
  o5.few_shot = 2;
  o5.both_orders = false;
  o5.seed = 3;
  const auto small = comparisons(6);
  (void)cai::label_feedback(rec, topics(), small, o5);
  REQUIRE(rec.seen.size() == 6);
  std::map<std::string, conversation> prefix_of;
  for (std::size_t i = 0; i < 6; ++i) {
    const auto& p = rec.seen[i].prompt;
    REQUIRE(p.size() == 5);
    CHECK(p[0].content != p[2].content);
    prefix_of[small[i].id] = conversation(p.begin(), p.begin() + 4);
  }
  scripted_judge rec2 = quality_judge();
  const std::vector<cai::comparison> rev(small.rbegin(), small.rend());
  (void)cai::label_feedback(rec2, topics(), rev, o5);
  for (std::size_t i = 0; i < 6; ++i) CHECK(conversation(rec2.seen[i].prompt.begin(), rec2.seen[i].prompt.begin() + 4) == prefix_of.at(rev[i].id));
}

// ----- faults ---------------------------------------------------------------------------------------------------

TEST_CASE("unusable log-probs and failing judges fail only the records concerned", "[rlaif][constitution]") {
  const cai::constitution c = topics();
  auto o = opts();
  o.principles = 2;
  o.seed = 4;
  o.batch_size = 8;
  const auto items = comparisons(10);
  scripted_judge clean_judge = quality_judge();
  const auto clean = labels_by_id(cai::label_feedback(clean_judge, c, items, o));
  REQUIRE(clean.size() == items.size());
  const auto others_match = [&](const std::vector<cai::feedback_label>& out, const std::set<std::string>& failed) {
    REQUIRE(out.size() == items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      INFO("record " << out[i].id << ": " << out[i].error);
      CHECK(out[i].id == items[i].id);
      CHECK(out[i].ok() == (failed.count(out[i].id) == 0));
      if (out[i].ok()) CHECK(out[i].label == clean.at(out[i].id));
    }
  };

  SECTION("NaN, +inf or two -inf log-probs") {
    for (const auto& [bad, what] : {std::pair{std::pair{std::nan(""), -1.0}, "NaN"}, std::pair{std::pair{-1.0, inf}, "+inf"},
                                    std::pair{std::pair{-inf, -inf}, "both -inf"}, std::pair{std::pair{inf, -inf}, "+inf, -inf"}}) {
      INFO(what);
      const std::pair<double, double> lp = bad;
      scripted_judge j = quality_judge();
      const auto inner = j.per_request;
      j.per_request = [&items, lp, inner](const cai::judge_request& r) {
        const shown s = shown_of(r.prompt);
        if (s.first == items[3].b) return std::vector<double>{lp.first, lp.second};  // only in the swapped order
        return inner(r);
      };
      const auto out = cai::label_feedback(j, c, items, o);
      others_match(out, {"c3"});
      CHECK(cai_test::contains(out[3].error, "unusable log-probs"));
      CHECK(cai_test::contains(out[3].error, out[3].votes[0].principle));
    }
  }
  SECTION("a judge that throws once is retried") {
    scripted_judge j = quality_judge();
    j.before = [](std::span<const cai::judge_request>, std::size_t call) {
      if (call == 1) throw std::runtime_error("transient");
    };
    const auto out = cai::label_feedback(j, c, items, o);
    others_match(out, {});
    CHECK(j.call_sizes == std::vector<std::size_t>{32, 32, 8});  // batch 0 twice, then batch 1
  }
  SECTION("with no retries a failing batch call falls back to one call per request") {
    scripted_judge j = quality_judge();
    j.before = [](std::span<const cai::judge_request>, std::size_t call) {
      if (call == 1) throw std::runtime_error("transient");
    };
    auto o0 = o;
    o0.retries = 0;
    others_match(cai::label_feedback(j, c, items, o0), {});
    CHECK(j.call_sizes.size() == 1 + 32 + 1);
  }
  SECTION("a judge that always throws for one comparison fails that record only") {
    scripted_judge j = quality_judge();
    j.before = [&](std::span<const cai::judge_request> rs, std::size_t) {
      for (const auto& r : rs)
        if (shown_of(r.prompt).first == items[5].a) throw std::runtime_error("poisoned request");
    };
    const auto out = cai::label_feedback(j, c, items, o);
    others_match(out, {"c5"});
    CHECK(cai_test::contains(out[5].error, "judge failed after 3 attempts"));
    CHECK(cai_test::contains(out[5].error, "poisoned request"));
  }
  SECTION("a judge returning the wrong number of results") {
    scripted_judge j = quality_judge();
    j.after = [](std::vector<std::vector<double>>& r) { r.push_back({0.0, 0.0}); };
    const auto out = cai::label_feedback(j, c, items, o);
    for (const auto& f : out) {
      CHECK(!f.ok());
      CHECK(cai_test::contains(f.error, "results for"));
    }
    scripted_judge j2 = quality_judge();  // wrong only for batched calls: the per-request fallback recovers
    j2.after = [](std::vector<std::vector<double>>& r) {
      if (r.size() > 1) r.pop_back();
    };
    others_match(cai::label_feedback(j2, c, items, o), {});
  }
  SECTION("a judge returning the wrong number of log-probs for one request") {
    scripted_judge j = quality_judge();
    const auto inner = j.per_request;
    j.per_request = [&, inner](const cai::judge_request& r) {
      auto v = inner(r);
      if (shown_of(r.prompt).first == items[8].a) v.push_back(-2.0);
      return v;
    };
    const auto out = cai::label_feedback(j, c, items, o);
    others_match(out, {"c8"});
    CHECK(cai_test::contains(out[8].error, "log-probs for 2 options"));
  }
  SECTION("failed records are written without a label") {
    scripted_judge j = quality_judge();
    j.per_request = [](const cai::judge_request&) { return std::vector<double>{std::nan(""), 0.0}; };
    const auto out = cai::label_feedback(j, c, std::vector<cai::comparison>(items.begin(), items.begin() + 2), o);
    for (const auto& f : out) {
      const json js = cai::to_json(f);
      CHECK(!js.contains("label"));
      CHECK(cai_test::contains(js.at("error").get<std::string>(), "unusable log-probs"));
      CHECK(js.at("id") == f.id);
      CHECK(cai::preference_from_json(js).label == std::nullopt);
    }
  }
}

TEST_CASE("generator failures in chain-of-thought mode fail records without crashing", "[rlaif][constitution]") {
  const cai::constitution c = topics();
  auto o = opts();
  o.chain_of_thought = true;
  o.principles = 2;
  o.seed = 9;
  o.batch_size = 4;
  const auto items = comparisons(6);
  scripted_judge j0 = quality_judge();
  scripted_generator g0;
  const auto clean = cai::label_feedback(j0, g0, c, items, o);
  for (const auto& f : clean) REQUIRE(f.ok());

  SECTION("a generator that throws once is retried") {
    scripted_judge j = quality_judge();
    scripted_generator g;
    g.before = [](std::span<const conversation>, std::size_t call) {
      if (call == 1) throw std::runtime_error("busy");
    };
    CHECK(cai::label_feedback(j, g, c, items, o) == clean);
    CHECK(g.calls == 3);  // batch 0 twice, batch 1 once
  }
  SECTION("a generator that always throws") {
    scripted_judge j = quality_judge();
    scripted_generator g;
    g.before = [](std::span<const conversation>, std::size_t) { throw std::runtime_error("server down"); };
    const auto out = cai::label_feedback(j, g, c, items, o);
    REQUIRE(out.size() == items.size());
    for (const auto& f : out) {
      CHECK(!f.ok());
      CHECK(cai_test::contains(f.error, "generate failed after 3 attempts"));
      CHECK(cai_test::contains(f.error, "server down"));
      CHECK(!cai::to_json(f).contains("label"));
    }
    CHECK(j.seen.empty());
  }
  SECTION("a generator returning one completion too few") {
    scripted_judge j = quality_judge();
    scripted_generator g;
    g.drop_one = true;
    for (const auto& f : cai::label_feedback(j, g, c, items, o)) {
      CHECK(!f.ok());
      CHECK(cai_test::contains(f.error, "completions"));
    }
  }
  SECTION("a generator failing for one comparison fails that record alone") {
    scripted_judge j = quality_judge();
    scripted_generator g;
    g.before = [&](std::span<const conversation> cs, std::size_t) {
      for (const auto& cv : cs)
        if (shown_of(cv).first == items[2].b) throw std::runtime_error("cannot reason about this");
    };
    auto o1 = o;
    o1.batch_size = 1;
    const auto out = cai::label_feedback(j, g, c, items, o1);
    REQUIRE(out.size() == items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      INFO(out[i].id << ": " << out[i].error);
      CHECK(out[i].ok() == (i != 2));
      if (i != 2) CHECK(out[i].label == clean[i].label);
    }
    CHECK(cai_test::contains(out[2].error, "cannot reason about this"));
    // In larger batches the failing call is retried question by question: only that record fails; the others keep
    // their clean labels only where the reasoning does not depend on the call (the scripted generator's does not).
    scripted_judge j4 = quality_judge();
    scripted_generator g4;
    g4.before = g.before;
    const auto out4 = cai::label_feedback(j4, g4, c, items, o);
    REQUIRE(out4.size() == items.size());
    for (std::size_t i = 0; i < items.size(); ++i) CHECK(out4[i].ok() == (i != 2));
  }
}

// ----- records --------------------------------------------------------------------------------------------------

TEST_CASE("a label is a messages-form preference pair whose label feeds bradley_terry_loss as a soft label", "[rlaif][constitution]") {
  const cai::constitution c = topics();
  const auto items = comparisons(7);
  scripted_judge j = quality_judge(0.25);
  scripted_generator g;
  auto o = opts();
  o.principles = 3;
  o.seed = 21;
  const auto out = cai::label_feedback(j, c, items, o);
  o.chain_of_thought = true;
  const auto cot = cai::label_feedback(j, g, c, items, o);
  std::vector<double> labels;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const auto& f = out[i];
    REQUIRE(f.ok());
    const json js = json::parse(cai::to_json(f).dump());  // as written to a file and read back
    CHECK(js.at("id") == f.id);
    CHECK(js.at("label").get<double>() == f.label);
    CHECK(js.at("prompt").size() == f.dialogue.size());
    CHECK(js.at("chosen") == json::array({{{"role", "assistant"}, {"content", f.a}}}));
    CHECK(js.at("rejected") == json::array({{{"role", "assistant"}, {"content", f.b}}}));
    CHECK(!js.contains("error"));
    REQUIRE(js.at("votes").size() == 3);
    for (std::size_t k = 0; k < 3; ++k) {
      const json& v = js.at("votes")[k];
      CHECK(v.at("principle") == f.votes[k].principle);
      CHECK(v.at("p").get<double>() == f.votes[k].p);
      CHECK(v.at("p_ab").get<double>() == f.votes[k].p_ab);
      CHECK(v.at("p_ba").get<double>() == f.votes[k].p_ba);
      CHECK(!v.contains("reasoning_ab"));
    }
    const cai::preference_record back = cai::preference_from_json(js);
    CHECK(back == f.to_preference());
    CHECK(back.prompt == items[i].dialogue);
    CHECK(back.chosen == items[i].a);
    CHECK(back.rejected == items[i].b);
    REQUIRE(back.label.has_value());
    CHECK(*back.label == f.label);
    labels.push_back(*back.label);
    const json jc = cai::to_json(cot[i]);
    CHECK(jc.at("votes")[0].at("reasoning_ab") == cot[i].votes[0].reasoning_ab);
    CHECK(jc.at("votes")[0].at("reasoning_ba") == cot[i].votes[0].reasoning_ba);
    CHECK(jc.at("label").get<double>() >= 0.4);
    CHECK(jc.at("label").get<double>() <= 0.6);
  }
  // The labels as reward_pair_batch::labels: loss = mean_i [-p log s(d) - (1 - p) log s(-d)], d = r+ - r-.
  const std::vector<double> rc{0.5, -1.25, 2.0, 0.0, 3.5, -0.75, 1.0}, rr{0.25, 0.5, -1.0, 0.0, -2.5, -0.5, 4.0};
  const auto view = [](const std::vector<double>& v) { return cai::make_view(v.data(), {static_cast<std::int64_t>(v.size())}); };
  const auto res = cai::bradley_terry_loss(cai::host{}, cai::reward_pair_batch<double>{view(rc), view(rr), {}, view(labels)});
  ld want = 0.0L;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const ld d = static_cast<ld>(rc[i]) - static_cast<ld>(rr[i]), p = static_cast<ld>(labels[i]);
    want += -p * std::log(1.0L / (1.0L + std::exp(-d))) - (1.0L - p) * std::log(1.0L / (1.0L + std::exp(d)));
  }
  want /= static_cast<ld>(labels.size());
  CHECK(res.loss == Approx(static_cast<double>(want)).epsilon(1e-13));
  // Not the hard-label loss: the soft labels matter.
  const auto hard = cai::bradley_terry_loss(cai::host{}, cai::reward_pair_batch<double>{view(rc), view(rr), {}, {}});
  CHECK(std::fabs(hard.loss - res.loss) > 1e-3);
}

TEST_CASE("run_feedback resumed after a kill writes exactly the records of an uninterrupted run", "[rlaif][constitution]") {
  const cai::constitution c = topics();
  const auto items = comparisons(10);
  auto o = opts();
  o.principles = 2;
  o.seed = 5;
  o.batch_size = 3;
  // A judge failing one record (kept, with its error, and not retried on resume).
  const auto make_judge = [&] {
    scripted_judge j = quality_judge(0.5);
    const auto inner = j.per_request;
    j.per_request = [&items, inner](const cai::judge_request& r) {
      if (shown_of(r.prompt).first == items[4].a) return std::vector<double>{std::nan(""), 0.0};
      return inner(r);
    };
    return j;
  };
  for (const bool cot : {false, true}) {
    INFO("chain of thought " << cot);
    auto oc = o;
    oc.chain_of_thought = cot;
    const auto run = [&](const fs::path& p) {
      scripted_judge j = make_judge();
      scripted_generator g;
      g.tag_seed = true;  // the reasoning depends on the batch's sampling seed
      return cot ? cai::run_feedback(j, g, c, items, p, oc) : cai::run_feedback(j, c, items, p, oc);
    };
    temp_file full("full"), cut("cut");
    const cai::pipeline_report r0 = run(full.path);
    CHECK(r0.written == 10);
    CHECK(r0.skipped == 0);
    CHECK(r0.failed == 1);
    const auto want = by_id(full.path);
    REQUIRE(want.size() == 10);
    CHECK(!want.at("c4").contains("label"));
    for (std::size_t i = 0; i < items.size(); ++i) CHECK(want.count(items[i].id) == 1);
    if (cot) CHECK(cai_test::contains(want.at("c9").at("votes")[0].at("reasoning_ab").get<std::string>(), "(seed "));

    (void)run(cut.path);
    const auto lines = lines_of(cut.path);
    REQUIRE(lines.size() == 10);
    {  // killed: the last two lines lost and half of one written
      std::ofstream f(cut.path, std::ios::binary | std::ios::trunc);
      for (std::size_t i = 0; i < 8; ++i) f << lines[i] << '\n';
      f << lines[8].substr(0, lines[8].size() / 2);
    }
    const cai::pipeline_report r1 = run(cut.path);
    CHECK(r1.skipped == 8);
    CHECK(r1.written == 2);
    CHECK(r1.failed == 0);
    CHECK(lines_of(cut.path).size() == 10);
    CHECK(by_id(cut.path) == want);  // batch 2 (c6 c7 c8) was re-run whole: same seeds, same records
    // Nothing left to do.
    const std::string before = slurp(cut.path);
    const cai::pipeline_report r2 = run(cut.path);
    CHECK(r2.written == 0);
    CHECK(r2.skipped == 10);
    CHECK(slurp(cut.path) == before);
  }
}

// ----- bad input ------------------------------------------------------------------------------------------------

TEST_CASE("bad options and comparisons are rejected naming the argument", "[rlaif][constitution]") {
  const cai::constitution c = topics();
  const auto items = comparisons(3);
  scripted_judge j = quality_judge();
  scripted_generator g;
  const auto lf = [&](const cai::feedback_options& o, const std::vector<cai::comparison>& v) { return cai::label_feedback(j, c, v, o); };
  const auto lfg = [&](const cai::feedback_options& o, const std::vector<cai::comparison>& v) { return cai::label_feedback(j, g, c, v, o); };
  const auto with = [](auto edit) {
    auto o = opts();
    edit(o);
    return o;
  };
  const auto ok_opts = opts();
  CHECK(lf(ok_opts, items).size() == 3);
  CHECK(lf(with([](auto& o) { o.principles = 4; }), items).size() == 3);

  CAI_REQUIRE_THROWS_NAMING((lf(with([](auto& o) { o.principles = 0; }), items)), cai::invalid_argument, "cai::label_feedback", "'principles'", "got 0");
  CAI_REQUIRE_THROWS_NAMING((lf(with([](auto& o) { o.principles = 5; }), items)), cai::invalid_argument, "'principles'", "4", "got 5");
  CAI_REQUIRE_THROWS_NAMING((lfg(with([](auto& o) { o.principles = 5; }), items)), cai::invalid_argument, "'principles'");
  CAI_REQUIRE_THROWS_NAMING((lf(with([](auto& o) { o.option_strings = {"(A)"}; }), items)), cai::invalid_argument, "'option_strings'");
  CAI_REQUIRE_THROWS_NAMING((lf(with([](auto& o) { o.option_strings = {"(A)", "(B)", "(C)"}; }), items)), cai::invalid_argument, "'option_strings'");
  CAI_REQUIRE_THROWS_NAMING((lf(with([](auto& o) { o.option_strings = {"(A)", "(A)"}; }), items)), cai::invalid_argument, "'option_strings'", "distinct");
  CAI_REQUIRE_THROWS_NAMING((lf(with([](auto& o) { o.option_strings = {"", "(B)"}; }), items)), cai::invalid_argument, "'option_strings'", "non-empty");
  CAI_REQUIRE_THROWS_NAMING((lf(with([](auto& o) { o.option_strings = {"(A)", ""}; }), items)), cai::invalid_argument, "'option_strings'");
  CAI_REQUIRE_THROWS_NAMING((lf(with([](auto& o) { o.chain_of_thought = true; }), items)), cai::invalid_argument, "'generator'", "chain_of_thought");
  CAI_REQUIRE_THROWS_NAMING((lfg(with([](auto& o) { o.chain_of_thought = true; o.cot_min = 0.7; o.cot_max = 0.6; }), items)), cai::invalid_argument, "'cot_min'");
  CAI_REQUIRE_THROWS_NAMING((lfg(with([](auto& o) { o.chain_of_thought = true; o.cot_min = -0.1; }), items)), cai::invalid_argument, "'cot_min'");
  CAI_REQUIRE_THROWS_NAMING((lfg(with([](auto& o) { o.chain_of_thought = true; o.cot_max = 1.5; }), items)), cai::invalid_argument, "'cot_min'", "cot_max");
  CAI_REQUIRE_THROWS_NAMING((lfg(with([](auto& o) { o.cot_min = std::nan(""); }), items)), cai::invalid_argument, "'cot_min'");
  CAI_REQUIRE_THROWS_NAMING((lf(with([](auto& o) { o.batch_size = 0; }), items)), cai::invalid_argument, "'batch_size'", "got 0");

  auto dup = items;
  dup[2].id = dup[0].id;
  CAI_REQUIRE_THROWS_NAMING((lf(ok_opts, dup)), cai::invalid_argument, "'comparisons[2].id'", "unique", "c0");
  auto empty_id = items;
  empty_id[1].id.clear();
  CAI_REQUIRE_THROWS_NAMING((lf(ok_opts, empty_id)), cai::invalid_argument, "'comparisons[1].id'", "non-empty");
  auto ends_assistant = items;
  ends_assistant[1].dialogue.push_back({"assistant", "Already answered."});
  CAI_REQUIRE_THROWS_NAMING((lf(ok_opts, ends_assistant)), cai::invalid_argument, "'comparisons[1].dialogue'", "ending with a user turn");
  auto no_dialogue = items;
  no_dialogue[0].dialogue.clear();
  CAI_REQUIRE_THROWS_NAMING((lf(ok_opts, no_dialogue)), cai::invalid_argument, "'comparisons[0].dialogue'");
  auto system_turn = items;
  system_turn[2].dialogue.insert(system_turn[2].dialogue.begin(), {"system", "Be terse."});
  CAI_REQUIRE_THROWS_NAMING((lf(ok_opts, system_turn)), cai::invalid_argument, "'comparisons[2].dialogue'", "role 'system'");
  CAI_REQUIRE_THROWS_NAMING((lfg(ok_opts, system_turn)), cai::invalid_argument, "'comparisons[2].dialogue'", "role 'system'");

  // Few-shot examples must have two options; an empty constitution has nothing to ask.
  cai::constitution three = c;
  three.feedback_examples[1].options.push_back("maybe");
  CAI_REQUIRE_THROWS_NAMING((cai::label_feedback(j, three, items, with([](auto& o) { o.few_shot = 1; }))), cai::invalid_argument,
                            "'constitution.feedback_examples[1].options'", "got 3");
  CHECK(cai::label_feedback(j, three, items, ok_opts).size() == 3);  // unused without few-shot
  cai::constitution none = c;
  none.principles.clear();
  CAI_REQUIRE_THROWS_NAMING((cai::label_feedback(j, none, items, ok_opts)), cai::invalid_argument, "'constitution'");

  // The batch function and the pipelines check too; a rejected run creates no file.
  CAI_REQUIRE_THROWS_NAMING((cai::label_feedback_batch(j, static_cast<scripted_generator*>(nullptr), c, std::span<const cai::comparison>(items), 0,
                                                       with([](auto& o) { o.chain_of_thought = true; }))),
                            cai::invalid_argument, "cai::label_feedback_batch", "'generator'");
  temp_file t("bad");
  CAI_REQUIRE_THROWS_NAMING((cai::run_feedback(j, c, items, t.path, with([](auto& o) { o.chain_of_thought = true; }))), cai::invalid_argument,
                            "cai::run_feedback", "'generator'");
  CAI_REQUIRE_THROWS_NAMING((cai::run_feedback(j, g, c, dup, t.path, ok_opts)), cai::invalid_argument, "cai::run_feedback", "'comparisons[2].id'");
  CAI_REQUIRE_THROWS_NAMING((cai::run_feedback(j, g, c, items, t.path, with([](auto& o) { o.batch_size = 0; }))), cai::invalid_argument, "'batch_size'");
  CHECK(!fs::exists(t.path));
  CHECK(g.calls == 0);
}
