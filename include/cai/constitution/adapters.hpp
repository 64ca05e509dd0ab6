// cai/constitution/adapters.hpp — a text_generator and a judge from any policy plus tokenizer (and its chat
// template), so the Constitutional-AI pipelines drive an in-process model exactly as they drive a server.
//
// policy_generator<P, T> (P: cai::sampling_policy, T: cai::tokenizer)
//   generate(conversations, sampling): each conversation is rendered with apply_chat_template(c, true), encoded,
//   right-padded into one token batch, and sampled in one call; each row's sampled tokens are decoded up to (not
//   including) the first EOS, then cut at the first of sampling.stop's strings. If the policy's sample() takes an
//   EOS id as a third argument (as cai::models::bigram_lm does), the tokenizer's is passed so rows stop there.
// policy_judge<P, T> (P: cai::policy, T: cai::tokenizer)
//   score(requests): for each request and option, the log-probability of the option's tokens after the prompt:
//   the prompt is rendered with the generation prompt (the option starts the assistant's reply) or, when it ends
//   with an assistant turn, as the earlier turns with the generation prompt followed by that turn's text (the option
//   continues it); prompt and option are encoded separately and concatenated, so an option is always the same token
//   ids whatever precedes it (ids, not text, are what is scored). All (request, option) rows go to log_probs() in
//   one batch; the option's log-probs are summed in double.
//
//   cai::models::byte_tokenizer tok;  cai::models::bigram_lm<> lm(tok.vocab_size(), {}, 1);
//   cai::policy_generator gen(lm, tok);  cai::policy_judge jdg(lm, tok);
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "../concepts/judge.hpp"
#include "../concepts/policy.hpp"
#include "../concepts/text_generator.hpp"
#include "../concepts/tokenizer.hpp"
#include "../concepts/types.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace cai {

namespace detail::adapt {

/// Right-pads rows of ids into tokens (B, T) and mask (B, T).
struct padded {
  tensor<std::int32_t, 2> tokens;
  tensor<std::uint8_t, 2> mask;
  token_batch batch() const { return {tokens.view(), mask.view(), {}}; }
};

inline padded pad(const std::vector<std::vector<std::int32_t>>& rows) {
  std::int64_t T = 1;
  for (const auto& r : rows) T = std::max<std::int64_t>(T, static_cast<std::int64_t>(r.size()));
  const auto B = static_cast<std::int64_t>(rows.size());
  padded p{tensor<std::int32_t, 2>({B, T}), tensor<std::uint8_t, 2>({B, T})};
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < T; ++t) {
      const bool real = t < static_cast<std::int64_t>(rows[static_cast<std::size_t>(b)].size());
      p.tokens(b, t) = real ? rows[static_cast<std::size_t>(b)][static_cast<std::size_t>(t)] : 0;
      p.mask(b, t) = real ? 1 : 0;
    }
  return p;
}

}  // namespace detail::adapt

template <sampling_policy P, tokenizer T>
class policy_generator {
 public:
  policy_generator(P& policy, const T& tok) : policy_(&policy), tok_(&tok) {}

  std::vector<std::string> generate(std::span<const conversation> convs, const sampling_params& sp) {
    if (convs.empty()) return {};
    std::vector<std::vector<std::int32_t>> rows;
    for (std::size_t i = 0; i < convs.size(); ++i) {
      auto ids = tok_->encode(tok_->apply_chat_template(convs[i], true));
      if (ids.empty()) detail::fail_argument("cai::policy_generator::generate", detail::concat("conversations[", i, "]"), "a prompt with at least one token", "none");
      rows.emplace_back(ids.begin(), ids.end());
    }
    const auto pb = detail::adapt::pad(rows);
    sample_batch s;
    if constexpr (requires { policy_->sample(pb.batch(), sp, tok_->eos_id()); })
      s = policy_->sample(pb.batch(), sp, static_cast<std::int32_t>(tok_->eos_id()));
    else
      s = policy_->sample(pb.batch(), sp);
    if (s.batch != static_cast<std::int64_t>(convs.size()))
      throw error(detail::concat("cai::policy_generator: the policy sampled ", s.batch, " rows for ", convs.size(), " prompts"));
    std::vector<std::string> out;
    const auto eos = static_cast<std::int32_t>(tok_->eos_id());
    for (std::int64_t b = 0; b < s.batch; ++b) {
      std::vector<std::int32_t> resp;
      for (std::int64_t t = 0; t < s.length; ++t) {
        const auto k = static_cast<std::size_t>(b * s.length + t);
        if (!s.response[k]) continue;
        if (s.tokens[k] == eos) break;
        resp.push_back(s.tokens[k]);
      }
      std::string text = tok_->decode(std::span<const std::int32_t>(resp));
      std::size_t cut = text.size();
      for (const auto& stop : sp.stop)
        if (!stop.empty()) cut = std::min(cut, text.find(stop));
      text.resize(cut);
      out.push_back(std::move(text));
    }
    return out;
  }

 private:
  P* policy_;
  const T* tok_;
};

template <policy P, tokenizer T>
class policy_judge {
 public:
  policy_judge(P& policy, const T& tok) : policy_(&policy), tok_(&tok) {}

  std::vector<std::vector<double>> score(std::span<const judge_request> reqs) {
    std::vector<std::vector<std::int32_t>> rows;
    struct span_of {
      std::size_t req, opt;
      std::int64_t begin, end;
    };
    std::vector<span_of> spans;
    for (std::size_t r = 0; r < reqs.size(); ++r) {
      const conversation& c = reqs[r].prompt;
      std::string text;
      if (!c.empty() && c.back().role == "assistant") {
        text = tok_->apply_chat_template(conversation(c.begin(), c.end() - 1), true) + c.back().content;
      } else {
        text = tok_->apply_chat_template(c, true);
      }
      const auto pid = tok_->encode(text);
      for (std::size_t o = 0; o < reqs[r].options.size(); ++o) {
        const auto oid = tok_->encode(reqs[r].options[o]);
        if (oid.empty())
          detail::fail_argument("cai::policy_judge::score", detail::concat("requests[", r, "].options[", o, "]"), "an option with at least one token", "\"\"");
        if (pid.empty())
          detail::fail_argument("cai::policy_judge::score", detail::concat("requests[", r, "].prompt"), "a prompt with at least one token", "none");
        std::vector<std::int32_t> row(pid.begin(), pid.end());
        row.insert(row.end(), oid.begin(), oid.end());
        spans.push_back({r, o, static_cast<std::int64_t>(pid.size()), static_cast<std::int64_t>(row.size())});
        rows.push_back(std::move(row));
      }
    }
    std::vector<std::vector<double>> out(reqs.size());
    for (std::size_t r = 0; r < reqs.size(); ++r) out[r].assign(reqs[r].options.size(), 0.0);
    if (rows.empty()) return out;
    const auto pb = detail::adapt::pad(rows);
    tensor<float, 2> lp({pb.tokens.extent(0), pb.tokens.extent(1)});
    policy_->log_probs(pb.batch(), lp.view());
    for (std::size_t k = 0; k < spans.size(); ++k) {
      double s = 0.0;
      for (std::int64_t t = spans[k].begin; t < spans[k].end; ++t) s += static_cast<double>(lp(static_cast<std::int64_t>(k), t));
      out[spans[k].req][spans[k].opt] = s;
    }
    return out;
  }

 private:
  P* policy_;
  const T* tok_;
};

}  // namespace cai
