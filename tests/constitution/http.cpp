// Tests for cai/constitution/http.hpp: cai::openai_client, a cai::text_generator and cai::judge over an
// OpenAI-compatible HTTP server. Every test starts its own loopback server (127.0.0.1, any free port, stopped and
// joined by an RAII helper) that implements a fake model deterministically:
//   * a byte-level tokenizer: POST /tokenize {"prompt"|"content": text} -> {"tokens": [byte values]};
//   * a fake next-token log-prob: lp(token t at position i) = -1 - 0.1 (t mod 10) - 0.01 (i mod 3), so the score of
//     an option after a prompt is sum_j lp(option[j], |prompt| + j), computed here independently of the client;
//   * /v1/chat/completions answers "R:" + the last message's content.
// Covered: each scoring variant (vLLM prompt_logprobs — with and without top-1 alternatives in each position's
// dict, so that keying by id matters —, legacy echo, next-token top_logprobs with the remaining-mass bound) against a
// server speaking only that variant, detected by scoring::automatic and chosen explicitly; generate()'s request
// bodies, order and concurrency; faults (retried 5xx/429 with back-off, exhausted retries, non-retryable 4xx, read
// timeouts, garbage and incomplete bodies, connection refused); label_feedback (plain and chain of thought) and
// critique_revise end to end, a prompt the server rejects failing only its record; bad options.
#include <cai/concepts/judge.hpp>
#include <cai/concepts/text_generator.hpp>
#include <cai/constitution/critique_revise.hpp>
#include <cai/constitution/default_constitution.hpp>
#include <cai/constitution/feedback.hpp>
#include <cai/constitution/http.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "../support.hpp"

static_assert(cai::judge<cai::openai_client>);
static_assert(cai::text_generator<cai::openai_client>);

namespace {

using json = nlohmann::json;
using cai::conversation;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

// ----- the fake model -------------------------------------------------------------------------------------------

/// log p(token t at position i) of the fake model (position 0 has none).
double fake_lp(unsigned t, std::size_t i) { return -1.0 - 0.1 * static_cast<double>(t % 10) - 0.01 * static_cast<double>(i % 3); }

/// The expected score of `option` after `prompt` under the byte-level fake model.
double expected_score(const std::string& prompt, const std::string& option) {
  double s = 0.0;
  for (std::size_t j = 0; j < option.size(); ++j) s += fake_lp(static_cast<unsigned char>(option[j]), prompt.size() + j);
  return s;
}

/// The next-token top-k the top_logprobs server returns after an n-token prompt: ids 'A', 'B', 'C', ... in order.
struct topk {
  std::vector<std::pair<unsigned, double>> entries;
};
topk fake_topk(std::size_t n, int k) {
  topk t;
  for (int j = 0; j < k; ++j) t.entries.push_back({static_cast<unsigned>('A' + j), fake_lp(static_cast<unsigned>('A' + j), n)});
  return t;
}
/// The documented bound for an option outside the top-k, computed here from its formula.
double outside_topk(const topk& t) {
  double mass = 0.0, smallest = std::numeric_limits<double>::infinity();
  for (const auto& e : t.entries) {
    mass += std::exp(e.second);
    smallest = std::min(smallest, e.second);
  }
  return std::min(std::log(std::max(1.0 - mass, 1e-30)), smallest);
}

std::vector<unsigned> bytes_of(const std::string& s) {
  std::vector<unsigned> v;
  for (unsigned char c : s) v.push_back(c);
  return v;
}

void reply(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(j.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}
void reply_raw(httplib::Response& res, int status, const std::string& body) {
  res.status = status;
  res.set_content(body, "application/json");
}

/// A chat-completions body answering `content`.
json chat_reply(const std::string& content) {
  json message = {{"role", "assistant"}, {"content", content}};
  json choice = {{"index", 0}, {"message", message}};
  return {{"choices", json::array({choice})}};
}

enum class speaks { prompt_logprobs, prompt_logprobs_with_alternatives, echo, top_logprobs, distribution, distribution_probs };

/// The fake model's routes. Requests of another scoring variant than `variant` answer HTTP 400 (counted in
/// `rejected`); a prompt or chat message containing `fail_on` (when set) answers HTTP 500.
struct fake_model {
  speaks variant = speaks::prompt_logprobs;
  std::string fail_on{};
  std::mutex mu;
  std::vector<json> completions;  ///< accepted /v1/completions bodies
  std::vector<json> chats;        ///< /v1/chat/completions bodies
  std::vector<std::string> auth;  ///< Authorization headers of chat requests
  std::atomic<int> tokenize_calls{0}, completion_calls{0}, rejected{0}, chat_calls{0};

  explicit fake_model(speaks v, std::string fail = {}) : variant(v), fail_on(std::move(fail)) {}

  bool fails(const std::string& text) const { return !fail_on.empty() && text.find(fail_on) != std::string::npos; }

  void install(httplib::Server& s) {
    s.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
      ++tokenize_calls;
      const json b = json::parse(req.body);
      const std::string text = b.contains("prompt") ? b["prompt"].get<std::string>() : b.at("content").get<std::string>();
      reply(res, 200, {{"tokens", bytes_of(text)}});
    });
    s.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      ++completion_calls;
      const json b = json::parse(req.body);
      const std::string prompt = b.at("prompt").get<std::string>();
      if (fails(prompt)) return reply(res, 500, {{"error", "the fake model fails on this prompt"}});
      const bool echo = b.value("echo", false), has_pl = b.contains("prompt_logprobs");
      const bool token_ids = b.value("return_tokens_as_token_ids", false);
      const auto ids = bytes_of(prompt);
      json choice;
      switch (variant) {
        case speaks::prompt_logprobs:
        case speaks::prompt_logprobs_with_alternatives: {
          if (!has_pl || echo) break;
          json pl = json::array();
          pl.push_back(nullptr);
          for (std::size_t i = 1; i < ids.size(); ++i) {
            const unsigned t = ids[i];
            const std::string text(1, static_cast<char>(t));
            json pos = json::object();
            if (variant == speaks::prompt_logprobs_with_alternatives) {
              // The top-1 alternatives: more likely than the real token, same decoded text, other ids.
              pos[std::to_string((t + 1) % 256)] = {{"logprob", -0.05}, {"rank", 1}, {"decoded_token", text}};
              pos[std::to_string((t + 128) % 256)] = {{"logprob", -0.07}, {"rank", 2}, {"decoded_token", text}};
              pos[std::to_string(t)] = {{"logprob", fake_lp(t, i)}, {"rank", 3}, {"decoded_token", text}};
            } else {
              pos[std::to_string(t)] = {{"logprob", fake_lp(t, i)}, {"rank", 1}, {"decoded_token", text}};
            }
            pl.push_back(pos);
          }
          choice = {{"index", 0}, {"text", "x"}, {"prompt_logprobs", pl}};
          break;
        }
        case speaks::echo: {
          if (!echo || has_pl || token_ids || b.value("max_tokens", -1) != 0 || !b.contains("logprobs")) break;
          json tokens = json::array(), lps = json::array(), offs = json::array();
          for (std::size_t i = 0; i < ids.size(); ++i) {
            tokens.push_back(std::string(1, static_cast<char>(ids[i])));
            lps.push_back(i == 0 ? json(nullptr) : json(fake_lp(ids[i], i)));
            offs.push_back(i);
          }
          choice = {{"index", 0}, {"text", prompt}, {"logprobs", {{"tokens", tokens}, {"token_logprobs", lps}, {"text_offset", offs}}}};
          break;
        }
        case speaks::top_logprobs: {
          if (echo || has_pl || !token_ids || b.value("max_tokens", -1) != 1 || !b.contains("logprobs") ||
              !b["logprobs"].is_number_integer())
            break;
          const topk t = fake_topk(ids.size(), b["logprobs"].get<int>());
          json top = json::object();
          for (const auto& e : t.entries) top["token_id:" + std::to_string(e.first)] = e.second;
          const std::string first = "token_id:" + std::to_string(t.entries.at(0).first);
          choice = {{"index", 0},
                    {"text", first},
                    {"logprobs",
                     {{"tokens", json::array({first})},
                      {"token_logprobs", json::array({t.entries.at(0).second})},
                      {"top_logprobs", json::array({top})}}}};
          break;
        }
        case speaks::distribution:
        case speaks::distribution_probs: break;  // llama.cpp's native server: /completion only
      }
      if (choice.is_null()) {
        ++rejected;
        return reply(res, 400, {{"error", "unsupported scoring request"}});
      }
      {
        std::lock_guard l(mu);
        completions.push_back(b);
      }
      reply(res, 200, {{"choices", json::array({choice})}});
    });
    // llama.cpp's native endpoint: the next-token distribution with ids (log-probs, or post-sampling probabilities).
    s.Post("/completion", [this](const httplib::Request& req, httplib::Response& res) {
      ++completion_calls;
      const json b = json::parse(req.body);
      if ((variant != speaks::distribution && variant != speaks::distribution_probs) || b.value("n_predict", -1) != 1 ||
          !b.contains("n_probs")) {
        ++rejected;
        return reply(res, 400, {{"error", "unsupported request"}});
      }
      {
        std::lock_guard l(mu);
        completions.push_back(b);
      }
      const auto ids = bytes_of(b.at("prompt").get<std::string>());
      const topk t = fake_topk(ids.size(), b.at("n_probs").get<int>());
      const bool probs = variant == speaks::distribution_probs;
      json top = json::array();
      for (const auto& e : t.entries) {
        json x = {{"id", e.first}, {"token", std::string(1, static_cast<char>(e.first))}};
        if (probs) x["prob"] = std::exp(e.second);
        else x["logprob"] = e.second;
        top.push_back(x);
      }
      json first = {{"id", t.entries.at(0).first}, {"token", std::string(1, static_cast<char>(t.entries.at(0).first))}};
      first[probs ? "top_probs" : "top_logprobs"] = top;
      reply(res, 200, {{"content", "x"}, {"completion_probabilities", json::array({first})}});
    });
    s.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      ++chat_calls;
      const json b = json::parse(req.body);
      {
        std::lock_guard l(mu);
        chats.push_back(b);
        auth.push_back(req.get_header_value("Authorization"));
      }
      for (const auto& m : b.at("messages"))
        if (fails(m.at("content").get<std::string>())) return reply(res, 500, {{"error", "the fake model fails on this prompt"}});
      const std::string last = b.at("messages").back().at("content").get<std::string>();
      reply(res, 200, chat_reply("R:" + last));
    });
  }
};

// ----- the loopback server ----------------------------------------------------------------------------------------

/// An httplib server on 127.0.0.1 (any free port) listening on its own thread; stopped and joined on destruction.
/// Handlers may poll `stopping` to end long sleeps early.
class loopback {
 public:
  using routes = std::function<void(httplib::Server&, const std::atomic<bool>& stopping)>;

  explicit loopback(const routes& r) {
    std::signal(SIGPIPE, SIG_IGN);  // a handler answering a client that timed out must not kill the test
    r(srv_, stopping_);
    port_ = srv_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0) throw std::runtime_error("cannot bind a loopback port");
    th_ = std::thread([this] { srv_.listen_after_bind(); });
    const auto t0 = clock_type::now();
    while (!srv_.is_running()) {
      if (seconds_since(t0) > 5.0) {
        th_.join();  // listen_after_bind returned without running
        throw std::runtime_error("the loopback server did not start");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  explicit loopback(fake_model& m) : loopback([&m](httplib::Server& s, const std::atomic<bool>&) { m.install(s); }) {}
  loopback(const loopback&) = delete;
  loopback& operator=(const loopback&) = delete;
  ~loopback() { stop(); }

  void stop() {
    if (!th_.joinable()) return;
    stopping_ = true;
    srv_.stop();
    th_.join();
  }
  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  httplib::Server srv_;
  std::atomic<bool> stopping_{false};
  int port_ = 0;
  std::thread th_;
};

/// Sleeps `s` seconds or until the server stops.
void nap(double s, const std::atomic<bool>& stopping) {
  const auto t0 = clock_type::now();
  while (!stopping && seconds_since(t0) < s) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

/// Options for a client of `srv` with short back-offs.
cai::http_options options_for(const loopback& srv) {
  cai::http_options o;
  o.base_url = srv.url();
  o.retries = 1;
  o.backoff_s = 0.001;
  o.connect_timeout_s = 2.0;
  o.read_timeout_s = 5.0;
  return o;
}

const std::vector<cai::conversation> one_conversation = {{{"user", "Hello?"}}};

// Judge requests shared by the prompt_logprobs and echo tests, with the prompts the default template renders.
const std::vector<cai::judge_request> judge_requests = {
    {{{"user", "Which is better?"}}, {" (A)", " (B)", " neither of them"}},
    {{{"system", "Be brief."}, {"user", "Pick one."}, {"assistant", "The answer is:"}}, {" A", " B"}},
    {{{"user", "Say yes or no."}}, {"yes", "no"}},
};
const std::vector<std::string> rendered_prompts = {
    "user: Which is better?\nassistant: ",
    "system: Be brief.\nuser: Pick one.\nassistant: The answer is:",
    "user: Say yes or no.\nassistant: ",
};

void check_scores(const std::vector<std::vector<double>>& got) {
  REQUIRE(got.size() == judge_requests.size());
  for (std::size_t r = 0; r < got.size(); ++r) {
    REQUIRE(got[r].size() == judge_requests[r].options.size());
    for (std::size_t o = 0; o < got[r].size(); ++o) {
      INFO("request " << r << " option '" << judge_requests[r].options[o] << "'");
      CHECK(got[r][o] == Approx(expected_score(rendered_prompts[r], judge_requests[r].options[o])).margin(1e-12));
    }
  }
}

// ----- 1. scoring variants -------------------------------------------------------------------------------------------

TEST_CASE("prompt_logprobs scoring against a vLLM-style server, detected and explicit, keyed by token id", "[http]") {
  const bool alternatives = GENERATE(false, true);
  CAPTURE(alternatives);
  // a loopback server speaking vLLM's prompt_logprobs only (echo and top_logprobs requests answer HTTP 400), with
  // top-1 alternatives (other ids, higher log-probs, the same decoded text) in each position's dict when asked
  fake_model model(alternatives ? speaks::prompt_logprobs_with_alternatives : speaks::prompt_logprobs);
  loopback srv(model);
  auto o = options_for(srv);
  o.model = "fake-7b";
  o.concurrency = 3;
  {
    cai::openai_client client(o);
    CHECK_FALSE(client.mode().has_value());
    check_scores(client.score(judge_requests));
    REQUIRE(client.mode() == cai::scoring::prompt_logprobs);
    CHECK(model.rejected.load() == 0);  // the first mode tried is the one the server speaks
  }
  // Each accepted request: the prompt plus one option, one new token, prompt_logprobs 0, greedy, the model named.
  for (const auto& b : model.completions) {
    CHECK(b.at("max_tokens") == 1);
    CHECK(b.at("prompt_logprobs") == 0);
    CHECK(b.at("temperature") == 0.0);
    CHECK(b.at("model") == "fake-7b");
    const std::string p = b.at("prompt").get<std::string>();
    bool known = false;
    for (std::size_t r = 0; r < judge_requests.size(); ++r)
      for (const auto& opt : judge_requests[r].options) known = known || p == rendered_prompts[r] + opt;
    CHECK(known);
  }
  // The explicit mode: no detection, the same scores.
  o.mode = cai::scoring::prompt_logprobs;
  cai::openai_client explicit_client(o);
  CHECK(explicit_client.mode() == cai::scoring::prompt_logprobs);
  const int rejected_before = model.rejected.load();
  check_scores(explicit_client.score(judge_requests));
  CHECK(model.rejected.load() == rejected_before);

  // An empty batch, and requests without options, send nothing.
  const std::size_t sent = explicit_client.requests_sent();
  CHECK(explicit_client.score({}).empty());
  const std::vector<cai::judge_request> no_options = {{{{"user", "x"}}, {}}};
  const auto none = explicit_client.score(no_options);
  REQUIRE(none.size() == 1);
  CHECK(none[0].empty());
  CHECK(explicit_client.requests_sent() == sent);
}

TEST_CASE("prompt_logprobs scoring renders the prompt with the chat_template option", "[http]") {
  // a loopback server speaking vLLM's prompt_logprobs only
  fake_model model(speaks::prompt_logprobs);
  loopback srv(model);
  auto o = options_for(srv);
  o.mode = cai::scoring::prompt_logprobs;
  o.chat_template = [](const conversation& c, bool gen) {
    std::string s;
    for (const auto& m : c) s += "<|" + m.role + "|>" + m.content + "<|end|>";
    return gen ? s + "<|assistant|>" : s;
  };
  cai::openai_client client(o);
  const std::vector<cai::judge_request> reqs = {{{{"user", "Q"}}, {"A"}}, {{{"user", "Q"}, {"assistant", "So:"}}, {" B"}}};
  const auto s = client.score(reqs);
  REQUIRE(s.size() == 2);
  CHECK(s[0][0] == Approx(expected_score("<|user|>Q<|end|><|assistant|>", "A")).margin(1e-12));
  CHECK(s[1][0] == Approx(expected_score("<|user|>Q<|end|><|assistant|>So:", " B")).margin(1e-12));
  REQUIRE(model.completions.size() == 2);
  std::vector<std::string> prompts;
  for (const auto& b : model.completions) prompts.push_back(b.at("prompt").get<std::string>());
  std::sort(prompts.begin(), prompts.end());
  CHECK(prompts == std::vector<std::string>{"<|user|>Q<|end|><|assistant|>A", "<|user|>Q<|end|><|assistant|>So: B"});
}

TEST_CASE("echo scoring against a legacy-completions server, detected and explicit", "[http]") {
  // a loopback server speaking OpenAI-style echo only (prompt_logprobs and top_logprobs requests answer HTTP 400)
  fake_model model(speaks::echo);
  loopback srv(model);
  auto o = options_for(srv);
  o.concurrency = 2;
  {
    cai::openai_client client(o);
    check_scores(client.score(judge_requests));
    REQUIRE(client.mode() == cai::scoring::echo);
    CHECK(model.rejected.load() == 1);  // the prompt_logprobs probe, answered 400 and not retried
  }
  for (const auto& b : model.completions) {
    CHECK(b.at("echo") == true);
    CHECK(b.at("max_tokens") == 0);
    CHECK(b.at("logprobs") == 0);
    CHECK_FALSE(b.contains("model"));  // no model set
  }
  o.mode = cai::scoring::echo;
  cai::openai_client explicit_client(o);
  const int rejected = model.rejected.load(), tokenized = model.tokenize_calls.load();
  check_scores(explicit_client.score(judge_requests));
  CHECK(explicit_client.mode() == cai::scoring::echo);
  CHECK(model.rejected.load() == rejected);
  CHECK(model.tokenize_calls.load() == tokenized);  // echo needs no tokenizer
  CHECK(explicit_client.requests_sent() == 7);  // one request per option
}

TEST_CASE("top_logprobs scoring against a next-token server: ids, the remaining-mass bound, one token only", "[http]") {
  // a loopback server speaking next-token top_logprobs only (prompt_logprobs and echo requests answer HTTP 400);
  // its top-k after an n-token prompt is 'A', 'B', 'C', ... with the fake model's log-probs at position n
  fake_model model(speaks::top_logprobs);
  loopback srv(model);
  auto o = options_for(srv);
  o.top_k = 5;
  const std::string prompt = "user: Answer A or B.\nassistant: ";
  const std::vector<cai::judge_request> reqs = {{{{"user", "Answer A or B."}}, {"A", "B", "Z"}}};
  const std::size_t n = prompt.size();

  cai::openai_client client(o);
  const auto s = client.score(reqs);
  REQUIRE(client.mode() == cai::scoring::top_logprobs);
  CHECK(model.rejected.load() == 2);  // the prompt_logprobs and echo probes
  REQUIRE(s.size() == 1);
  REQUIRE(s[0].size() == 3);
  CHECK(s[0][0] == Approx(fake_lp('A', n)).margin(1e-12));
  CHECK(s[0][1] == Approx(fake_lp('B', n)).margin(1e-12));
  // 'Z' is outside the top 5: here the remaining mass is below the smallest top-k probability.
  const topk t5 = fake_topk(n, 5);
  double mass5 = 0.0;
  for (const auto& e : t5.entries) mass5 += std::exp(e.second);
  REQUIRE(std::log(1.0 - mass5) < fake_lp('E', n));
  CHECK(s[0][2] == Approx(outside_topk(t5)).margin(1e-12));
  for (const auto& b : model.completions) {
    CHECK(b.at("prompt") == prompt);  // the prompt alone: the option is the next token
    CHECK(b.at("logprobs") == 5);
    CHECK(b.at("max_tokens") == 1);
    CHECK(b.at("return_tokens_as_token_ids") == true);
  }

  // Explicit mode, top 2: 'Z' gets the smallest top-2 log-prob (the cap), 'B' is still found by its id.
  o.mode = cai::scoring::top_logprobs;
  o.top_k = 2;
  {
    cai::openai_client c2(o);
    const auto s2 = c2.score(reqs);
    CHECK(s2[0][0] == Approx(fake_lp('A', n)).margin(1e-12));
    CHECK(s2[0][1] == Approx(fake_lp('B', n)).margin(1e-12));
    REQUIRE(outside_topk(fake_topk(n, 2)) == fake_lp('B', n));
    CHECK(s2[0][2] == Approx(outside_topk(fake_topk(n, 2))).margin(1e-12));
  }
  // Top 8: the top-k mass exceeds 1 (an unnormalised fake), so the bound is log(1e-30).
  o.top_k = 8;
  {
    cai::openai_client c8(o);
    const auto s8 = c8.score(reqs);
    REQUIRE(outside_topk(fake_topk(n, 8)) == Approx(std::log(1e-30)));
    CHECK(s8[0][2] == Approx(outside_topk(fake_topk(n, 8))).margin(1e-12));
    CHECK(s8[0][1] == Approx(fake_lp('B', n)).margin(1e-12));
  }

  // A multi-token option (and an empty one) cannot be scored in this mode.
  o.top_k = 5;
  cai::openai_client c5(o);
  const std::vector<cai::judge_request> multi = {{{{"user", "Answer A or B."}}, {"A", "(A)"}}};
  CAI_REQUIRE_THROWS_NAMING((c5.score(multi)), cai::error, "one token", "'(A)' is 3 tokens");
  const std::vector<cai::judge_request> empty = {{{{"user", "Answer A or B."}}, {""}}};
  CAI_REQUIRE_THROWS_NAMING((c5.score(empty)), cai::error, "one token", "is 0 tokens");

  // Detection on a multi-token first option finds no mode this server speaks.
  o.mode = cai::scoring::automatic;
  cai::openai_client c_auto(o);
  const std::vector<cai::judge_request> multi_first = {{{{"user", "Answer A or B."}}, {"(A)", "A"}}};
  CAI_REQUIRE_THROWS_NAMING((c_auto.score(multi_first)), cai::error, "supports none of the scoring modes", "HTTP 400", "one token");
  CHECK_FALSE(c_auto.mode().has_value());
}

TEST_CASE("distribution scoring against llama.cpp's native /completion: ids, log-probs or probabilities, detected last", "[http]") {
  // a loopback server speaking llama.cpp's native /completion only (every /v1/completions request answers HTTP 400)
  for (const speaks v : {speaks::distribution, speaks::distribution_probs}) {
    fake_model model(v);
    loopback srv(model);
    auto o = options_for(srv);
    o.top_k = 5;
    const std::string prompt = "user: Answer A or B.\nassistant: ";
    const std::size_t n = prompt.size();
    const std::vector<cai::judge_request> reqs = {{{{"user", "Answer A or B."}}, {"A", "B", "Z"}}};
    cai::openai_client client(o);
    const auto s = client.score(reqs);
    REQUIRE(client.mode() == cai::scoring::distribution);
    CHECK(model.rejected.load() == 3);  // the prompt_logprobs, echo and top_logprobs probes
    CHECK(s[0][0] == Approx(fake_lp('A', n)).margin(1e-12));
    CHECK(s[0][1] == Approx(fake_lp('B', n)).margin(1e-12));
    CHECK(s[0][2] == Approx(outside_topk(fake_topk(n, 5))).margin(1e-12));
    for (const auto& b : model.completions) {
      CHECK(b.at("prompt") == prompt);
      CHECK(b.at("n_probs") == 5);
    }
  }
  // Entries without ids are refused (no matching by token text).
  loopback text_only([](httplib::Server& srv, const std::atomic<bool>&) {
    srv.Post("/tokenize", [](const httplib::Request& req, httplib::Response& res) {
      reply(res, 200, {{"tokens", bytes_of(json::parse(req.body).at("prompt").get<std::string>())}});
    });
    srv.Post("/completion", [](const httplib::Request&, httplib::Response& res) {
      reply(res, 200, {{"completion_probabilities", json::array({{{"top_logprobs", json::array({{{"token", "A"}, {"logprob", -0.1}}})}}})}});
    });
  });
  auto o = options_for(text_only);
  o.mode = cai::scoring::distribution;
  cai::openai_client c(o);
  const std::vector<cai::judge_request> reqs = {{{{"user", "Q"}}, {"A", "B"}}};
  CAI_REQUIRE_THROWS_NAMING((c.score(reqs)), cai::error, "/completion", "token ids");
}

// ----- 2. generation -------------------------------------------------------------------------------------------------

TEST_CASE("generate sends one chat completion per conversation and returns them in order", "[http]") {
  // a loopback server speaking chat completions (the fake model answers "R:" + the last message)
  fake_model model(speaks::prompt_logprobs);
  loopback srv(model);
  auto o = options_for(srv);
  o.model = "fake-chat";
  o.api_key = "sk-test";
  o.concurrency = 3;
  cai::openai_client client(o);
  std::vector<conversation> convs;
  for (int i = 0; i < 7; ++i) {
    conversation c = {{"system", "Be brief."}, {"user", "Question " + std::to_string(i)}};
    if (i % 2 == 1) c.insert(c.end(), {{"assistant", "Earlier answer"}, {"user", "Follow-up " + std::to_string(i)}});
    convs.push_back(c);
  }
  cai::sampling_params sp;
  sp.temperature = 0.7f;
  sp.top_p = 0.9f;
  sp.top_k = 40;
  sp.max_new_tokens = 64;
  sp.seed = 100;
  sp.stop = {"\nuser:", "</s>"};
  const auto out = client.generate(convs, sp);
  REQUIRE(out.size() == convs.size());
  for (std::size_t i = 0; i < convs.size(); ++i) CHECK(out[i] == "R:" + convs[i].back().content);
  REQUIRE(model.chats.size() == convs.size());
  CHECK(client.requests_sent() == convs.size());
  std::vector<bool> seen(convs.size(), false);
  for (std::size_t k = 0; k < model.chats.size(); ++k) {
    const json& b = model.chats[k];
    // Find the conversation by its messages; its seed is sp.seed + its index.
    std::optional<std::size_t> idx;
    for (std::size_t i = 0; i < convs.size(); ++i) {
      json msgs = json::array();
      for (const auto& m : convs[i]) msgs.push_back({{"role", m.role}, {"content", m.content}});
      if (b.at("messages") == msgs) idx = i;
    }
    REQUIRE(idx.has_value());
    CHECK_FALSE(seen[*idx]);
    seen[*idx] = true;
    CHECK(b.at("seed").get<std::uint64_t>() == 100 + *idx);
    CHECK(b.at("temperature").get<double>() == static_cast<double>(0.7f));
    CHECK(b.at("top_p").get<double>() == static_cast<double>(0.9f));
    CHECK(b.at("top_k") == 40);
    CHECK(b.at("max_tokens") == 64);
    CHECK(b.at("stop") == json::array({"\nuser:", "</s>"}));
    CHECK(b.at("model") == "fake-chat");
    CHECK(model.auth[k] == "Bearer sk-test");
  }

  // Without top_k, stop, model or key those fields are left out; an empty batch sends nothing.
  auto o2 = options_for(srv);
  cai::openai_client plain(o2);
  const std::size_t before = model.chats.size();
  CHECK(plain.generate(std::span<const conversation>(), sp).empty());
  CHECK(plain.requests_sent() == 0);
  const auto one = plain.generate(one_conversation, cai::sampling_params{});
  CHECK(one == std::vector<std::string>{"R:Hello?"});
  REQUIRE(model.chats.size() == before + 1);
  const json& b = model.chats.back();
  CHECK_FALSE(b.contains("top_k"));
  CHECK_FALSE(b.contains("stop"));
  CHECK_FALSE(b.contains("model"));
  CHECK(b.at("seed") == 0);
  CHECK(model.auth.back().empty());
}

TEST_CASE("generate keeps up to `concurrency` requests in flight", "[http]") {
  // a loopback server speaking chat completions, each answer taking 50 ms
  std::atomic<int> in_flight{0}, most{0};
  loopback srv([&](httplib::Server& s, const std::atomic<bool>& stopping) {
    s.Post("/v1/chat/completions", [&](const httplib::Request& req, httplib::Response& res) {
      const int now = ++in_flight;
      for (int m = most; now > m && !most.compare_exchange_weak(m, now);) {
      }
      nap(0.05, stopping);
      --in_flight;
      reply(res, 200, chat_reply("R:" + json::parse(req.body).at("messages").back().at("content").get<std::string>()));
    });
  });
  std::vector<conversation> convs;
  for (int i = 0; i < 12; ++i) convs.push_back({{"user", "q" + std::to_string(i)}});
  auto o = options_for(srv);
  o.concurrency = 4;
  cai::openai_client client(o);
  const auto t0 = clock_type::now();
  const auto out = client.generate(convs, {});
  const double elapsed = seconds_since(t0);
  REQUIRE(out.size() == 12);
  for (std::size_t i = 0; i < 12; ++i) CHECK(out[i] == "R:q" + std::to_string(i));
  CHECK(most.load() <= 4);
  CHECK(most.load() > 1);
  CHECK(elapsed < 0.45);  // serial would be 12 x 50 ms = 0.6 s; four at a time is about 0.15 s

  // concurrency 1: one at a time.
  most = 0;
  o.concurrency = 1;
  cai::openai_client serial(o);
  const std::vector<conversation> three(convs.begin(), convs.begin() + 3);
  CHECK(serial.generate(three, {}).size() == 3);
  CHECK(most.load() == 1);
}

// ----- 3. faults -----------------------------------------------------------------------------------------------------

TEST_CASE("retryable statuses are retried with exponential back-off", "[http]") {
  const int status = GENERATE(503, 429);
  CAPTURE(status);
  // a loopback server speaking chat completions that answers `status` twice, then succeeds
  std::atomic<int> calls{0};
  loopback srv([&](httplib::Server& s, const std::atomic<bool>&) {
    s.Post("/v1/chat/completions", [&](const httplib::Request&, httplib::Response& res) {
      if (++calls <= 2) return reply(res, status, {{"error", "busy"}});
      reply(res, 200, chat_reply("finally"));
    });
  });
  auto o = options_for(srv);
  o.retries = 3;
  o.backoff_s = 0.02;
  cai::openai_client client(o);
  const auto t0 = clock_type::now();
  const auto out = client.generate(one_conversation, {});
  const double elapsed = seconds_since(t0);
  CHECK(out == std::vector<std::string>{"finally"});
  CHECK(calls.load() == 3);
  CHECK(client.requests_sent() == 3);
  CHECK(elapsed >= 0.02 + 0.04 - 0.002);  // back-off 0.02 s, then 0.04 s
  CHECK(elapsed < 1.0);
}

TEST_CASE("a server that always fails exhausts the retries and names the endpoint", "[http]") {
  // a loopback server speaking nothing but HTTP 500
  std::atomic<int> calls{0};
  loopback srv([&](httplib::Server& s, const std::atomic<bool>&) {
    s.Post("/v1/chat/completions", [&](const httplib::Request&, httplib::Response& res) {
      ++calls;
      reply(res, 500, {{"error", "internal"}});
    });
  });
  auto o = options_for(srv);
  o.retries = 2;
  cai::openai_client client(o);
  CAI_REQUIRE_THROWS_NAMING((client.generate(one_conversation, {})), cai::error, "/v1/chat/completions", "after 3 attempts",
                            "HTTP 500");
  CHECK(calls.load() == 3);
  CHECK(client.requests_sent() == 3);
}

TEST_CASE("a non-retryable 4xx fails at once with the status and the body", "[http]") {
  // a loopback server speaking only HTTP 400
  std::atomic<int> calls{0};
  loopback srv([&](httplib::Server& s, const std::atomic<bool>&) {
    s.Post("/v1/chat/completions", [&](const httplib::Request&, httplib::Response& res) {
      ++calls;
      reply_raw(res, 400, "{\"error\": \"bad request body\"}");
    });
  });
  auto o = options_for(srv);
  o.retries = 3;
  o.backoff_s = 0.5;  // would be felt if it were retried
  cai::openai_client client(o);
  const auto t0 = clock_type::now();
  CAI_REQUIRE_THROWS_NAMING((client.generate(one_conversation, {})), cai::error, "/v1/chat/completions", "HTTP 400",
                            "bad request body");
  CHECK(seconds_since(t0) < 0.4);
  CHECK(calls.load() == 1);
  CHECK(client.requests_sent() == 1);
}

TEST_CASE("a server slower than read_timeout_s times out, is retried, and the call fails without hanging", "[http]") {
  // a loopback server speaking chat completions that takes 1 s to answer
  std::atomic<int> calls{0};
  loopback srv([&](httplib::Server& s, const std::atomic<bool>& stopping) {
    s.Post("/v1/chat/completions", [&](const httplib::Request&, httplib::Response& res) {
      ++calls;
      nap(1.0, stopping);
      reply(res, 200, chat_reply("too late"));
    });
  });
  auto o = options_for(srv);
  o.read_timeout_s = 0.2;
  o.retries = 1;
  o.backoff_s = 0.01;
  cai::openai_client client(o);
  const auto t0 = clock_type::now();
  CAI_REQUIRE_THROWS_NAMING((client.generate(one_conversation, {})), cai::error, "/v1/chat/completions", "after 2 attempts",
                            "connection failed");
  const double elapsed = seconds_since(t0);
  CHECK(elapsed >= 0.35);  // two reads of 0.2 s
  CHECK(elapsed < 0.9);    // never the server's full second
  CHECK(client.requests_sent() == 2);
  CHECK(calls.load() == 2);
}

TEST_CASE("garbage and incomplete bodies are errors naming what is missing, not retried", "[http]") {
  // a loopback server speaking malformed responses: each route answers 200 with the body set for it
  std::mutex mu;
  std::string chat_body = "not json", completion_body = "{}", tokenize_body = R"({"tokens": [1, 2]})";
  std::atomic<int> calls{0};
  loopback srv([&](httplib::Server& s, const std::atomic<bool>&) {
    const auto route = [&mu, &calls](std::string& body) {
      return [&mu, &calls, b = &body](const httplib::Request&, httplib::Response& res) {
        ++calls;
        std::lock_guard l(mu);
        reply_raw(res, 200, *b);
      };
    };
    s.Post("/v1/chat/completions", route(chat_body));
    s.Post("/v1/completions", route(completion_body));
    s.Post("/tokenize", [&](const httplib::Request& req, httplib::Response& res) {
      ++calls;
      std::lock_guard l(mu);
      if (tokenize_body.empty()) return reply(res, 200, {{"tokens", bytes_of(json::parse(req.body).at("prompt").get<std::string>())}});
      reply_raw(res, 200, tokenize_body);
    });
  });
  const auto set = [&](std::string& which, std::string body) {
    std::lock_guard l(mu);
    which = std::move(body);
  };
  auto o = options_for(srv);
  o.retries = 3;
  const std::vector<cai::judge_request> reqs = {{{{"user", "Q"}}, {"A"}}};

  SECTION("not JSON") {
    cai::openai_client client(o);
    CAI_REQUIRE_THROWS_NAMING((client.generate(one_conversation, {})), cai::error, "/v1/chat/completions", "not JSON", "not json");
    CHECK(client.requests_sent() == 1);
  }
  SECTION("chat completion without choices[0].message.content") {
    for (const char* body : {R"({"choices": []})", R"({"choices": [{"message": {}}]})", R"({"choices": [{"message": {"content": 7}}]})",
                             R"([1, 2])"}) {
      CAPTURE(body);
      set(chat_body, body);
      cai::openai_client client(o);
      CAI_REQUIRE_THROWS_NAMING((client.generate(one_conversation, {})), cai::error, "/v1/chat/completions",
                                "choices[0].message.content");
      CHECK(client.requests_sent() == 1);
    }
  }
  SECTION("tokenize without tokens") {
    set(tokenize_body, R"({"ids": [1, 2]})");
    o.mode = cai::scoring::prompt_logprobs;
    cai::openai_client client(o);
    CAI_REQUIRE_THROWS_NAMING((client.score(reqs)), cai::error, "/tokenize", "tokens");
    CHECK(client.requests_sent() == 1);
    set(tokenize_body, R"({"tokens": ["a", "b"]})");
    CAI_REQUIRE_THROWS_NAMING((client.score(reqs)), cai::error, "/tokenize", "integer token ids");
  }
  SECTION("prompt_logprobs missing or incomplete") {
    set(tokenize_body, "");  // the byte tokenizer
    o.mode = cai::scoring::prompt_logprobs;
    cai::openai_client client(o);
    set(completion_body, R"({"choices": [{"text": "x"}]})");
    CAI_REQUIRE_THROWS_NAMING((client.score(reqs)), cai::error, "/v1/completions", "prompt_logprobs");
    CHECK(client.requests_sent() == 3);  // two tokenizations, one completion
    // One entry short of the prompt's tokens.
    set(completion_body, R"({"choices": [{"prompt_logprobs": [null]}]})");
    CAI_REQUIRE_THROWS_NAMING((client.score(reqs)), cai::error, "/v1/completions", "prompt_logprobs for every prompt token");
    // The option's id missing from its position (other ids present).
    const std::string prompt = "user: Q\nassistant: ";
    json pl = json::array();
    pl.push_back(nullptr);
    for (std::size_t i = 1; i <= prompt.size(); ++i) pl.push_back({{"66", {{"logprob", -1.0}}}});
    set(completion_body, json({{"choices", json::array({json::object({{"prompt_logprobs", pl}})})}}).dump());
    const std::string where = "prompt_logprobs[" + std::to_string(prompt.size()) + "][65]";
    CAI_REQUIRE_THROWS_NAMING((client.score(reqs)), cai::error, "/v1/completions", where.c_str());
    // The option's entry without a logprob.
    pl.back() = {{"65", {{"rank", 1}}}};
    set(completion_body, json({{"choices", json::array({json::object({{"prompt_logprobs", pl}})})}}).dump());
    CAI_REQUIRE_THROWS_NAMING((client.score(reqs)), cai::error, "/v1/completions", "a numeric logprob");
  }
  SECTION("echo without text_offset") {
    o.mode = cai::scoring::echo;
    cai::openai_client client(o);
    set(completion_body, R"({"choices": [{"logprobs": {"tokens": ["a"], "token_logprobs": [null]}}]})");
    CAI_REQUIRE_THROWS_NAMING((client.score(reqs)), cai::error, "/v1/completions", "text_offset");
    CHECK(client.requests_sent() == 1);
  }
  SECTION("top_logprobs without top_logprobs[0]") {
    set(tokenize_body, "");
    o.mode = cai::scoring::top_logprobs;
    cai::openai_client client(o);
    set(completion_body, R"({"choices": [{"logprobs": {"tokens": ["token_id:65"], "top_logprobs": []}}]})");
    CAI_REQUIRE_THROWS_NAMING((client.score(reqs)), cai::error, "/v1/completions", "logprobs.top_logprobs[0]");
    CHECK(client.requests_sent() == 3);
  }
}

TEST_CASE("connection refused is retried, then an error", "[http]") {
  // a loopback server speaking nothing: started for a free port, then stopped so that nothing listens there
  loopback srv([](httplib::Server&, const std::atomic<bool>&) {});
  srv.stop();
  auto o = options_for(srv);
  o.retries = 2;
  cai::openai_client client(o);
  const auto t0 = clock_type::now();
  CAI_REQUIRE_THROWS_NAMING((client.generate(one_conversation, {})), cai::error, "/v1/chat/completions", "after 3 attempts",
                            "connection failed");
  CHECK(client.requests_sent() == 3);
  CHECK(seconds_since(t0) < 2.0);
  // Scoring in automatic mode: every mode fails, the error says so.
  const std::vector<cai::judge_request> reqs = {{{{"user", "Q"}}, {"A"}}};
  CAI_REQUIRE_THROWS_NAMING((client.score(reqs)), cai::error, "supports none of the scoring modes", "connection failed");
}

// ----- 4. the pipelines end to end -----------------------------------------------------------------------------------

std::vector<cai::comparison> comparisons() {
  return {{"c0", {{"user", "How do I boil an egg?"}}, "Put it in boiling water for nine minutes.", "No idea."},
          {"c1", {{"user", "Tell me a joke."}, {"assistant", "Why?"}, {"user", "Go on."}}, "A pun.", "FAIL-ME"},
          {"c2", {{"user", "What is 2+2?"}}, "4", "5"}};
}

TEST_CASE("label_feedback with the client as judge: records ok, a prompt the server rejects fails only its record", "[http]") {
  // a loopback server speaking vLLM's prompt_logprobs that answers HTTP 500 for any prompt containing "FAIL-ME"
  fake_model model(speaks::prompt_logprobs, "FAIL-ME");
  loopback srv(model);
  auto o = options_for(srv);
  o.concurrency = 4;
  cai::openai_client client(o);
  cai::feedback_options fo;
  fo.principles = 2;
  fo.both_orders = false;
  fo.retries = 1;
  fo.progress = false;
  const auto items = comparisons();
  const auto recs = cai::label_feedback(client, cai::default_constitution(), std::span<const cai::comparison>(items), fo);
  REQUIRE(recs.size() == 3);
  CHECK(client.mode() == cai::scoring::prompt_logprobs);
  // l(A) - l(B) = lp('A', n + 1) - lp('B', n + 1) = 0.1 whatever the prompt: P(first) = sigmoid(0.1).
  const double p = 1.0 / (1.0 + std::exp(-0.1));
  for (std::size_t i : {std::size_t{0}, std::size_t{2}}) {
    INFO("record " << recs[i].id << ": " << recs[i].error);
    REQUIRE(recs[i].ok());
    CHECK(recs[i].label == Approx(p).margin(1e-12));
    REQUIRE(recs[i].votes.size() == 2);
    for (const auto& v : recs[i].votes) CHECK(v.p_ab == Approx(p).margin(1e-12));
  }
  CHECK(recs[1].id == "c1");
  CHECK_FALSE(recs[1].ok());
  CHECK(cai_test::contains(recs[1].error, "/v1/completions"));
  CHECK(cai_test::contains(recs[1].error, "HTTP 500"));
  // The judge saw the labeller's questions.
  bool saw_question = false;
  for (const auto& b : model.completions)
    saw_question = saw_question || cai_test::contains(b.at("prompt").get<std::string>(), "How do I boil an egg?\n\n");
  CHECK(saw_question);
}

TEST_CASE("label_feedback with chain of thought: the client generates the reasoning and judges", "[http]") {
  // a loopback server speaking chat completions and legacy echo
  fake_model model(speaks::echo);
  loopback srv(model);
  auto o = options_for(srv);
  o.concurrency = 4;
  cai::openai_client client(o);
  cai::feedback_options fo;
  fo.chain_of_thought = true;
  fo.both_orders = false;
  fo.progress = false;
  const auto all = comparisons();
  const std::vector<cai::comparison> items = {all[0], all[2]};
  const auto recs = cai::label_feedback(client, client, cai::default_constitution(), std::span<const cai::comparison>(items), fo);
  REQUIRE(recs.size() == 2);
  CHECK(client.mode() == cai::scoring::echo);
  for (const auto& r : recs) {
    INFO(r.error);
    REQUIRE(r.ok());
    CHECK(r.label == Approx(1.0 / (1.0 + std::exp(-0.1))).margin(1e-12));  // inside the [0.4, 0.6] clamp
    REQUIRE(r.votes.size() == 1);
    CHECK(r.votes[0].reasoning_ab.rfind("R:Consider the following conversation", 0) == 0);
  }
  CHECK(model.chats.size() == 2);
  for (const auto& b : model.completions) {
    const std::string pr = b.at("prompt").get<std::string>();
    CHECK((cai_test::contains(pr, "\nTherefore, the answer is:(A)") || cai_test::contains(pr, "\nTherefore, the answer is:(B)")));
  }
}

TEST_CASE("critique_revise with the client as generator: records ok, a prompt the server rejects fails only its record", "[http]") {
  // a loopback server speaking chat completions that answers HTTP 500 when a message contains "FAIL-ME"
  fake_model model(speaks::prompt_logprobs, "FAIL-ME");
  loopback srv(model);
  auto o = options_for(srv);
  o.concurrency = 4;
  cai::openai_client client(o);
  const std::vector<cai::prompt_record> prompts = {
      {"p0", {{"user", "How do I pick a lock?"}}}, {"p1", {{"user", "FAIL-ME please"}}}, {"p2", {{"user", "Write a haiku."}}}};
  cai::critique_revise_options co;
  co.revisions = 2;
  co.few_shot = 1;
  co.retries = 1;
  co.progress = false;
  const auto recs = cai::critique_revise(client, cai::default_constitution(), std::span<const cai::prompt_record>(prompts), co);
  REQUIRE(recs.size() == 3);
  for (std::size_t i : {std::size_t{0}, std::size_t{2}}) {
    INFO("record " << recs[i].id << ": " << recs[i].error);
    REQUIRE(recs[i].ok());
    CHECK(recs[i].initial == "R:" + prompts[i].dialogue.back().content);
    REQUIRE(recs[i].steps.size() == 2);
    for (const auto& s : recs[i].steps) {
      CHECK(s.critique == "R:" + s.critique_request);
      CHECK(s.revision == "R:" + s.revision_request);
    }
  }
  CHECK(recs[1].id == "p1");
  CHECK_FALSE(recs[1].ok());
  CHECK(cai_test::contains(recs[1].error, "/v1/chat/completions"));
  CHECK(cai_test::contains(recs[1].error, "HTTP 500"));
}

// ----- 5. bad options ------------------------------------------------------------------------------------------------

TEST_CASE("base_url may carry a trailing slash, the OpenAI SDK's /v1, or a path prefix", "[http]") {
  // A loopback server answering chat completions under /proxy/v1 and at the root.
  std::atomic<int> root{0}, proxied{0};
  loopback srv([&](httplib::Server& s, const std::atomic<bool>&) {
    const auto answer = [](const httplib::Request&, httplib::Response& res) {
      res.set_content(R"({"choices": [{"message": {"role": "assistant", "content": "ok"}}]})", "application/json");
    };
    s.Post("/v1/chat/completions", [&, answer](const httplib::Request& q, httplib::Response& r) { ++root; answer(q, r); });
    s.Post("/proxy/v1/chat/completions", [&, answer](const httplib::Request& q, httplib::Response& r) { ++proxied; answer(q, r); });
  });
  const std::vector<cai::conversation> one{{{"user", "hi"}}};
  for (const std::string suffix : {"", "/", "/v1", "/v1/"}) {
    cai::openai_client c({.base_url = srv.url() + suffix, .retries = 0});
    CHECK(c.generate(one, {}) == std::vector<std::string>{"ok"});
  }
  CHECK(root == 4);
  for (const std::string suffix : {"/proxy", "/proxy/v1", "/proxy/"}) {
    cai::openai_client c({.base_url = srv.url() + suffix, .retries = 0});
    CHECK(c.generate(one, {}) == std::vector<std::string>{"ok"});
  }
  CHECK(proxied == 3);
  CHECK_THROWS_AS(cai::openai_client({.base_url = "http://"}), cai::invalid_argument);
}

TEST_CASE("bad options are rejected naming the field", "[http]") {
  const auto with = [](const std::function<void(cai::http_options&)>& f) {
    cai::http_options o;
    f(o);
    return o;
  };
  CAI_REQUIRE_THROWS_NAMING((cai::openai_client(with([](auto& o) { o.concurrency = 0; }))), cai::invalid_argument, "'concurrency'");
  CAI_REQUIRE_THROWS_NAMING((cai::openai_client(with([](auto& o) { o.base_url = "127.0.0.1:8080"; }))), cai::invalid_argument,
                            "'base_url'", "127.0.0.1:8080");
  CAI_REQUIRE_THROWS_NAMING((cai::openai_client(with([](auto& o) { o.base_url = "ftp://host"; }))), cai::invalid_argument, "'base_url'");
  CAI_REQUIRE_THROWS_NAMING((cai::openai_client(with([](auto& o) { o.backoff_s = -0.1; }))), cai::invalid_argument, "'backoff_s'");
  CAI_REQUIRE_THROWS_NAMING((cai::openai_client(with([](auto& o) { o.backoff_s = std::nan(""); }))), cai::invalid_argument,
                            "'backoff_s'");
  CAI_REQUIRE_THROWS_NAMING((cai::openai_client(with([](auto& o) { o.read_timeout_s = 0.0; }))), cai::invalid_argument,
                            "'read_timeout_s'");
  CAI_REQUIRE_THROWS_NAMING((cai::openai_client(with([](auto& o) { o.read_timeout_s = -1.0; }))), cai::invalid_argument,
                            "'read_timeout_s'");
  CAI_REQUIRE_THROWS_NAMING((cai::openai_client(with([](auto& o) { o.connect_timeout_s = 0.0; }))), cai::invalid_argument,
                            "'connect_timeout_s'");
  CAI_REQUIRE_THROWS_NAMING((cai::openai_client(with([](auto& o) { o.top_k = 0; }))), cai::invalid_argument, "'top_k'");
  // Valid corner values are accepted.
  CHECK_NOTHROW(cai::openai_client(with([](auto& o) {
    o.backoff_s = 0.0;
    o.retries = 0;
    o.concurrency = 1;
    o.top_k = 1;
    o.base_url = "https://example.invalid";
  })));
}

}  // namespace
