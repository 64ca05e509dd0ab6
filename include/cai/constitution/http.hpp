// cai/constitution/http.hpp — a text_generator and judge backed by an OpenAI-compatible HTTP server (llama.cpp's
// server, vLLM, Ollama, ...). Component cai::http (Debian's cpp-httplib and nlohmann-json).
//
// Generation: POST {base}/v1/chat/completions {model, messages, temperature, top_p, max_tokens, seed, stop} per
// conversation, `concurrency` requests in flight; choices[0].message.content is the completion.
//
// Judging needs log p(option | prompt) for given option strings, and servers offer it in different ways, so the
// client supports each and detects which one a server speaks (scoring::automatic tries them in this order, once,
// and keeps the first that works):
//   prompt_logprobs  vLLM: POST /v1/completions {prompt: text + option, max_tokens: 1, prompt_logprobs: 0}; the
//                    response's choices[0].prompt_logprobs[i] maps token id -> {logprob}; the option's positions are
//                    those past the prompt's own token count (POST /tokenize {prompt} -> {tokens: [ids]}), and each
//                    is looked up by the id at that position of the tokenised prompt + option — keyed by id, never
//                    by token text.
//   echo             OpenAI-style legacy completions: {prompt: text + option, max_tokens: 0, echo: true, logprobs: 0};
//                    choices[0].logprobs.{token_logprobs, text_offset}: the tokens starting at or after the prompt's
//                    length in characters are the option's (a server that rejects echo answers 4xx: not this mode).
//   top_logprobs     next-token only: {prompt: text, max_tokens: 1, logprobs: k, return_tokens_as_token_ids: true};
//                    choices[0].logprobs.top_logprobs[0] maps "token_id:<id>" -> logprob. The option must be ONE token
//                    after the prompt (checked with /tokenize); an option outside the returned top-k gets the
//                    remaining probability mass log(max(1 - sum_topk p, 1e-30)) capped at the smallest top-k
//                    log-prob — an upper bound on its true probability, documented as such.
//   distribution     llama.cpp's native endpoint: POST /completion {prompt: text, n_predict: 1, n_probs: k}; the
//                    next-token distribution completion_probabilities[0].top_logprobs = [{id, logprob}] (or, with
//                    post-sampling probabilities, top_probs = [{id, prob}]), looked up by token id; one-token options
//                    and the same out-of-top-k bound as top_logprobs (n_probs up to the vocabulary size gives the full
//                    distribution, where the bound is never needed). Entries without an "id" are an error: matching by
//                    token text is not done.
// The prompt text is the request's conversation rendered by the client's chat template (a plain role-tagged
// transcript by default; set http_options::chat_template to the model's, e.g. a tokenizer's apply_chat_template).
// Faults: each HTTP call has connection/read timeouts and is retried `retries` times with exponential back-off
// (backoff_s, x2 each time) on connection errors, timeouts, 5xx and 429; other 4xx and malformed bodies are not
// retried. A call that still fails throws cai::error naming the endpoint and the last status or error — the
// pipelines turn that into a failed record. Non-finite log-probs are returned as they are (the labeller rejects them).
//
//   cai::openai_client server({.base_url = "http://127.0.0.1:8080", .model = "qwen"});
//   auto labels = cai::label_feedback(server, cai::default_constitution(), comparisons);
#pragma once

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "../concepts/types.hpp"
#include "../core/error.hpp"

namespace cai {

enum class scoring { automatic, prompt_logprobs, echo, top_logprobs, distribution };

struct http_options {
  std::string base_url = "http://127.0.0.1:8080";  ///< scheme://host:port, optionally a path prefix and/or "/v1"
  std::string model{};
  std::string api_key{};         ///< sent as "Authorization: Bearer ..." when not empty
  double connect_timeout_s = 5.0;
  double read_timeout_s = 120.0;
  std::size_t retries = 3;       ///< extra attempts after a retryable failure
  double backoff_s = 0.5;        ///< first back-off; doubles each retry
  std::size_t concurrency = 4;   ///< requests in flight; >= 1
  scoring mode = scoring::automatic;
  int top_k = 20;                ///< logprobs requested in top_logprobs mode
  std::function<std::string(const conversation&, bool)> chat_template{};  ///< prompt rendering for scoring
};

namespace detail::http {

/// The default rendering of a conversation for scoring: "<role>: content\n" per turn, then "assistant: " for the
/// reply (or the last assistant turn continued).
inline std::string plain_template(const conversation& c, bool add_generation_prompt) {
  std::string s;
  for (const auto& m : c) s += m.role + ": " + m.content + "\n";
  if (add_generation_prompt) s += "assistant: ";
  return s;
}

struct response {
  int status = 0;
  std::string body;
};

}  // namespace detail::http

class openai_client {
 public:
  explicit openai_client(http_options opt = {}) : opt_(std::move(opt)) {
    constexpr std::string_view call = "cai::openai_client";
    if (opt_.concurrency < 1) detail::fail_argument(call, "concurrency", "at least 1", opt_.concurrency);
    if (!(opt_.connect_timeout_s > 0.0)) detail::fail_argument(call, "connect_timeout_s", "a value > 0", opt_.connect_timeout_s);
    if (!(opt_.read_timeout_s > 0.0)) detail::fail_argument(call, "read_timeout_s", "a value > 0", opt_.read_timeout_s);
    if (!(opt_.backoff_s >= 0.0)) detail::fail_argument(call, "backoff_s", "a value >= 0", opt_.backoff_s);
    if (opt_.base_url.rfind("http://", 0) != 0 && opt_.base_url.rfind("https://", 0) != 0)
      detail::fail_argument(call, "base_url", "an http:// or https:// URL", opt_.base_url);
    if (opt_.top_k < 1) detail::fail_argument(call, "top_k", "at least 1", opt_.top_k);
    if (!opt_.chat_template) opt_.chat_template = detail::http::plain_template;
    // "http://host:port[/prefix][/v1][/]": requests go to host:port with the prefix; a trailing /v1 (the OpenAI SDK's
    // form of a base URL) is dropped because the endpoint paths carry it.
    const std::size_t slash = opt_.base_url.find('/', opt_.base_url.find("://") + 3);
    host_ = opt_.base_url.substr(0, slash);
    if (slash != std::string::npos) {
      prefix_ = opt_.base_url.substr(slash);
      while (!prefix_.empty() && prefix_.back() == '/') prefix_.pop_back();
      if (prefix_.size() >= 3 && prefix_.compare(prefix_.size() - 3, 3, "/v1") == 0) prefix_.resize(prefix_.size() - 3);
    }
    if (host_.size() <= opt_.base_url.find("://") + 3) detail::fail_argument(call, "base_url", "a URL with a host", opt_.base_url);
    detected_ = opt_.mode == scoring::automatic ? std::nullopt : std::optional<scoring>(opt_.mode);
  }

  /// One chat completion per conversation (text_generator).
  std::vector<std::string> generate(std::span<const conversation> convs, const sampling_params& sp) {
    std::vector<std::string> out(convs.size());
    parallel(convs.size(), [&](std::size_t i) {
      nlohmann::json msgs = nlohmann::json::array();
      for (const auto& m : convs[i]) msgs.push_back({{"role", m.role}, {"content", m.content}});
      nlohmann::json body = {{"messages", msgs}, {"temperature", sp.temperature}, {"top_p", sp.top_p},
                             {"max_tokens", sp.max_new_tokens}, {"seed", sp.seed + i}};
      if (!opt_.model.empty()) body["model"] = opt_.model;
      if (sp.top_k > 0) body["top_k"] = sp.top_k;
      if (!sp.stop.empty()) body["stop"] = sp.stop;
      const nlohmann::json r = post_json("/v1/chat/completions", body);
      const auto* content = find_path(r, {"choices", "0", "message", "content"});
      if (!content || !content->is_string()) bad_body("/v1/chat/completions", "choices[0].message.content");
      out[i] = content->get<std::string>();
    });
    return out;
  }

  /// log p(option | prompt) for every option of every request (judge).
  std::vector<std::vector<double>> score(std::span<const judge_request> reqs) {
    std::vector<std::vector<double>> out(reqs.size());
    for (std::size_t r = 0; r < reqs.size(); ++r) out[r].assign(reqs[r].options.size(), 0.0);
    struct job {
      std::size_t r, o;
    };
    std::vector<job> jobs;
    for (std::size_t r = 0; r < reqs.size(); ++r)
      for (std::size_t o = 0; o < reqs[r].options.size(); ++o) jobs.push_back({r, o});
    if (jobs.empty()) return out;
    if (!mode()) detect(prompt_text(reqs[jobs[0].r].prompt), reqs[jobs[0].r].options[jobs[0].o]);
    const scoring m = *mode();
    parallel(jobs.size(), [&](std::size_t k) {
      const auto& rq = reqs[jobs[k].r];
      out[jobs[k].r][jobs[k].o] = score_one(m, prompt_text(rq.prompt), rq.options[jobs[k].o]);
    });
    return out;
  }

  /// The scoring mode in use (after detection), if known.
  std::optional<scoring> mode() const {
    std::lock_guard lock(mu_);
    return detected_;
  }
  /// HTTP requests sent so far (attempts included).
  std::size_t requests_sent() const noexcept { return sent_.load(); }

 private:
  std::string prompt_text(const conversation& c) const {
    if (!c.empty() && c.back().role == "assistant")
      return opt_.chat_template(conversation(c.begin(), c.end() - 1), true) + c.back().content;
    return opt_.chat_template(c, true);
  }

  [[noreturn]] static void bad_body(std::string_view path, std::string_view what) {
    throw error(detail::concat("cai::openai_client: ", path, ": the response lacks ", what));
  }

  static const nlohmann::json* find_path(const nlohmann::json& j, std::initializer_list<std::string_view> path) {
    const nlohmann::json* cur = &j;
    for (auto key : path) {
      if (cur->is_array() && !key.empty() && key.find_first_not_of("0123456789") == std::string_view::npos) {
        const std::size_t i = static_cast<std::size_t>(std::stoul(std::string(key)));
        if (i >= cur->size()) return nullptr;
        cur = &(*cur)[i];
      } else if (cur->is_object()) {
        const auto it = cur->find(std::string(key));
        if (it == cur->end()) return nullptr;
        cur = &*it;
      } else {
        return nullptr;
      }
    }
    return cur;
  }

  /// One POST with retries; returns the parsed JSON of a 2xx response. Throws cai::error otherwise.
  nlohmann::json post_json(const std::string& path, const nlohmann::json& body) {
    std::string last;
    double wait = opt_.backoff_s;
    for (std::size_t attempt = 0; attempt <= opt_.retries; ++attempt) {
      if (attempt > 0) {
        std::this_thread::sleep_for(std::chrono::duration<double>(wait));
        wait *= 2.0;
      }
      httplib::Client cli(host_);
      const auto to = [](double s) { return std::chrono::microseconds(static_cast<std::int64_t>(s * 1e6)); };
      cli.set_connection_timeout(to(opt_.connect_timeout_s));
      cli.set_read_timeout(to(opt_.read_timeout_s));
      cli.set_write_timeout(to(opt_.read_timeout_s));
      if (!opt_.api_key.empty()) cli.set_bearer_token_auth(opt_.api_key.c_str());
      ++sent_;
      const auto res = cli.Post((prefix_ + path).c_str(), body.dump(), "application/json");
      if (!res) {
        last = detail::concat("connection failed (", httplib::to_string(res.error()), ")");
        continue;
      }
      if (res->status == 429 || res->status >= 500) {
        last = detail::concat("HTTP ", res->status);
        continue;
      }
      if (res->status < 200 || res->status >= 300)
        throw error(detail::concat("cai::openai_client: ", path, ": HTTP ", res->status, ": ", res->body.substr(0, 200)));
      try {
        return nlohmann::json::parse(res->body);
      } catch (const nlohmann::json::parse_error&) {
        throw error(detail::concat("cai::openai_client: ", path, ": the response is not JSON: '", res->body.substr(0, 80), "'"));
      }
    }
    throw error(detail::concat("cai::openai_client: ", path, ": failed after ", opt_.retries + 1, " attempts: ", last));
  }

  std::vector<std::int64_t> tokenize(const std::string& text) {
    const nlohmann::json r = post_json("/tokenize", {{"prompt", text}, {"content", text}, {"add_special_tokens", false}});
    const auto* t = find_path(r, {"tokens"});
    if (!t || !t->is_array()) bad_body("/tokenize", "tokens");
    std::vector<std::int64_t> ids;
    for (const auto& x : *t) {
      if (x.is_number_integer()) ids.push_back(x.get<std::int64_t>());
      else if (x.is_object() && x.contains("id") && x["id"].is_number_integer()) ids.push_back(x["id"].get<std::int64_t>());
      else bad_body("/tokenize", "integer token ids");
    }
    return ids;
  }

  nlohmann::json completion_body(const std::string& prompt) const {
    nlohmann::json b = {{"prompt", prompt}, {"temperature", 0.0}};
    if (!opt_.model.empty()) b["model"] = opt_.model;
    return b;
  }

  double score_one(scoring mode, const std::string& prompt, const std::string& option) {
    switch (mode) {
      case scoring::prompt_logprobs: {
        const auto pid = tokenize(prompt), fid = tokenize(prompt + option);
        if (fid.size() <= pid.size()) throw error("cai::openai_client: the option adds no tokens to the prompt");
        nlohmann::json b = completion_body(prompt + option);
        b["max_tokens"] = 1;
        b["prompt_logprobs"] = 0;
        const nlohmann::json r = post_json("/v1/completions", b);
        const auto* pl = find_path(r, {"choices", "0", "prompt_logprobs"});
        if (!pl || !pl->is_array() || pl->size() != fid.size()) bad_body("/v1/completions", "prompt_logprobs for every prompt token");
        double s = 0.0;
        for (std::size_t i = pid.size(); i < fid.size(); ++i) {
          const auto& pos = (*pl)[i];
          const std::string key = std::to_string(fid[i]);
          if (!pos.is_object() || !pos.contains(key)) bad_body("/v1/completions", detail::concat("prompt_logprobs[", i, "][", key, "]"));
          const auto& e = pos[key];
          const nlohmann::json lp = e.is_object() ? e.value("logprob", nlohmann::json()) : e;
          if (!lp.is_number()) bad_body("/v1/completions", "a numeric logprob");
          s += lp.get<double>();
        }
        return s;
      }
      case scoring::echo: {
        nlohmann::json b = completion_body(prompt + option);
        b["max_tokens"] = 0;
        b["echo"] = true;
        b["logprobs"] = 0;
        const nlohmann::json r = post_json("/v1/completions", b);
        const auto* lps = find_path(r, {"choices", "0", "logprobs", "token_logprobs"});
        const auto* off = find_path(r, {"choices", "0", "logprobs", "text_offset"});
        if (!lps || !off || !lps->is_array() || !off->is_array() || lps->size() != off->size())
          bad_body("/v1/completions", "logprobs.token_logprobs and text_offset of equal length");
        double s = 0.0;
        std::size_t counted = 0;
        for (std::size_t i = 0; i < lps->size(); ++i) {
          if (!(*off)[i].is_number_integer()) bad_body("/v1/completions", "integer text offsets");
          if ((*off)[i].get<std::int64_t>() < static_cast<std::int64_t>(prompt.size())) continue;
          if (!(*lps)[i].is_number()) bad_body("/v1/completions", "numeric token_logprobs for the option");
          s += (*lps)[i].get<double>();
          ++counted;
        }
        if (counted == 0) bad_body("/v1/completions", "tokens of the option (none starts after the prompt)");
        return s;
      }
      case scoring::top_logprobs: {
        const std::int64_t id = single_token(prompt, option, "top_logprobs");
        nlohmann::json b = completion_body(prompt);
        b["max_tokens"] = 1;
        b["logprobs"] = opt_.top_k;
        b["return_tokens_as_token_ids"] = true;
        const nlohmann::json r = post_json("/v1/completions", b);
        const auto* top = find_path(r, {"choices", "0", "logprobs", "top_logprobs", "0"});
        if (!top || !top->is_object() || top->empty()) bad_body("/v1/completions", "logprobs.top_logprobs[0]");
        std::vector<std::pair<std::int64_t, double>> entries;
        for (auto it = top->begin(); it != top->end(); ++it) {
          if (!it.value().is_number()) bad_body("/v1/completions", "numeric top log-probs");
          if (it.key().rfind("token_id:", 0) != 0) bad_body("/v1/completions", "\"token_id:<id>\" keys (return_tokens_as_token_ids)");
          std::int64_t tok = 0;
          const std::string& k = it.key();
          const auto [end, ec] = std::from_chars(k.data() + 9, k.data() + k.size(), tok);
          if (ec != std::errc{} || end != k.data() + k.size()) bad_body("/v1/completions", detail::concat("an integer id in key '", k, "'"));
          entries.emplace_back(tok, it.value().get<double>());
        }
        return lookup_top_k(entries, id);
      }
      case scoring::distribution: {
        const std::int64_t id = single_token(prompt, option, "distribution");
        nlohmann::json b = {{"prompt", prompt}, {"n_predict", 1}, {"n_probs", opt_.top_k}, {"temperature", 0.0}, {"cache_prompt", true}};
        const nlohmann::json r = post_json("/completion", b);
        const auto* first = find_path(r, {"completion_probabilities", "0"});
        if (!first || !first->is_object()) bad_body("/completion", "completion_probabilities[0]");
        const bool as_probs = first->contains("top_probs");
        const auto* top = find_path(*first, {as_probs ? "top_probs" : "top_logprobs"});
        if (!top || !top->is_array() || top->empty()) bad_body("/completion", "completion_probabilities[0].top_logprobs (or top_probs)");
        std::vector<std::pair<std::int64_t, double>> entries;
        for (const auto& e : *top) {
          const char* key = as_probs ? "prob" : "logprob";
          if (!e.is_object() || !e.contains("id") || !e["id"].is_number_integer())
            bad_body("/completion", "token ids in the distribution (matching by token text is not done)");
          if (!e.contains(key) || !e[key].is_number()) bad_body("/completion", detail::concat("a numeric \"", key, "\" per entry"));
          const double v = e[key].get<double>();
          entries.emplace_back(e["id"].get<std::int64_t>(), as_probs ? std::log(v) : v);
        }
        return lookup_top_k(entries, id);
      }
      default: break;
    }
    throw error("cai::openai_client: no scoring mode");
  }

  /// The id of the one token `option` adds after `prompt` (cai::error when it adds another number of tokens).
  std::int64_t single_token(const std::string& prompt, const std::string& option, std::string_view mode_name) {
    const auto pid = tokenize(prompt), fid = tokenize(prompt + option);
    if (fid.size() != pid.size() + 1 || !std::equal(pid.begin(), pid.end(), fid.begin()))
      throw error(detail::concat("cai::openai_client: ", mode_name, " scoring needs an option that is one token after the prompt; '",
                                 option, "' is ", static_cast<std::int64_t>(fid.size()) - static_cast<std::int64_t>(pid.size()),
                                 " tokens"));
    return fid.back();
  }

  /// The log-prob of token `id` among (id, log-prob) entries; outside them, the remaining mass capped at the
  /// smallest entry (an upper bound on the token's probability).
  static double lookup_top_k(const std::vector<std::pair<std::int64_t, double>>& entries, std::int64_t id) {
    double mass = 0.0, smallest = std::numeric_limits<double>::infinity();
    for (const auto& [tok, lp] : entries) {
      if (tok == id) return lp;
      mass += std::exp(lp);
      smallest = std::min(smallest, lp);
    }
    return std::min(std::log(std::max(1.0 - mass, 1e-30)), smallest);
  }

  /// Tries the scoring modes in order on one real option and keeps the first that answers.
  void detect(const std::string& prompt, const std::string& option) {
    std::lock_guard lock(detect_mu_);
    if (mode()) return;
    std::string why;
    for (scoring m : {scoring::prompt_logprobs, scoring::echo, scoring::top_logprobs, scoring::distribution}) {
      try {
        (void)score_one(m, prompt, option);
        std::lock_guard l2(mu_);
        detected_ = m;
        return;
      } catch (const std::exception& e) {
        why += detail::concat(why.empty() ? "" : "; ", e.what());
      }
    }
    throw error(detail::concat("cai::openai_client: the server supports none of the scoring modes (", why, ")"));
  }

  /// Runs f(i) for i in [0, n) on up to `concurrency` threads; rethrows the first exception.
  template <class F>
  void parallel(std::size_t n, F&& f) {
    std::atomic<std::size_t> next{0};
    std::exception_ptr first;
    std::mutex emu;
    const auto worker = [&] {
      for (std::size_t i; (i = next.fetch_add(1)) < n;) {
        try {
          f(i);
        } catch (...) {
          std::lock_guard l(emu);
          if (!first) first = std::current_exception();
        }
      }
    };
    const std::size_t k = std::min(opt_.concurrency, n);
    std::vector<std::thread> ts;
    for (std::size_t t = 1; t < k; ++t) ts.emplace_back(worker);
    worker();
    for (auto& t : ts) t.join();
    if (first) std::rethrow_exception(first);
  }

  http_options opt_;
  std::string host_, prefix_;
  mutable std::mutex mu_;
  std::mutex detect_mu_;
  std::optional<scoring> detected_;
  std::atomic<std::size_t> sent_{0};
};

}  // namespace cai
