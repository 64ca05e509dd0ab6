// cai/io/datasets.hpp — the dataset record formats the field uses, written and read as JSON.
//
// A conversation is a list of {role, content} turns (cai::conversation). Records:
//   sft_record         prompt conversation + the response to it
//   preference_record  prompt conversation + chosen and rejected responses (+ an optional soft label P(chosen))
// Formats:
//   hh            Anthropic hh-rlhf transcripts: "\n\nHuman: ...\n\nAssistant: ..." — preference as
//                 {"chosen": transcript + chosen, "rejected": transcript + rejected}; SFT as {"text": ...}
//   text          TRL's standard form: preference {"prompt": transcript ending "\n\nAssistant:", "chosen": " ...",
//                 "rejected": " ..."}; SFT {"prompt": ..., "completion": " ..."} (prompt + completion = hh text)
//   messages      TRL's conversational form: preference {"prompt": [turns], "chosen": [{"role": "assistant", ...}],
//                 "rejected": [...]}; SFT {"messages": [turns..., assistant]} — roles kept per turn, so training can
//                 mask everything but the assistant spans of a multi-turn conversation
// A soft label, when present, is written as "label" (P(chosen is preferred), in [0, 1]); cai::bradley_terry_loss
// reads it as reward_pair_batch::labels. The hh form has only Human and Assistant turns and no escaping: a system
// turn, or a turn whose text contains a turn marker, is an error there (use messages). Parsing names what is wrong (cai::parse_error).
//
//   nlohmann::json j = cai::to_json(pair, cai::dataset_format::messages);
//   cai::preference_record back = cai::preference_from_json(j);   // any of the three forms
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "../concepts/types.hpp"
#include "../core/error.hpp"

namespace cai {

enum class dataset_format { hh, text, messages };

struct sft_record {
  conversation prompt;
  std::string response;
  friend bool operator==(const sft_record&, const sft_record&) = default;
};

struct preference_record {
  conversation prompt;
  std::string chosen, rejected;
  std::optional<double> label{};  ///< soft label P(chosen preferred); none = a hard label (1)
  friend bool operator==(const preference_record&, const preference_record&) = default;
};

namespace detail::ds {
inline constexpr std::string_view human = "\n\nHuman: ", assistant = "\n\nAssistant: ";
}  // namespace detail::ds

/// The hh-rlhf transcript of a conversation: "\n\nHuman: u1\n\nAssistant: a1..." (user/assistant turns only).
inline std::string hh_transcript(const conversation& c) {
  std::string out;
  for (std::size_t i = 0; i < c.size(); ++i) {
    if (c[i].role == "user") out += detail::ds::human;
    else if (c[i].role == "assistant") out += detail::ds::assistant;
    else
      detail::fail_argument("cai::hh_transcript", detail::concat("conversation[", i, "].role"),
                            "\"user\" or \"assistant\" (the hh form has no other roles; use the messages form)",
                            detail::concat("\"", c[i].role, "\""));
    if (c[i].content.find("\n\nHuman:") != std::string::npos || c[i].content.find("\n\nAssistant:") != std::string::npos)
      detail::fail_argument("cai::hh_transcript", detail::concat("conversation[", i, "].content"),
                            "text without the hh turn markers (\\n\\nHuman: / \\n\\nAssistant:; the form has no escaping — use the "
                            "messages form)",
                            "a turn marker inside the text");
    out += c[i].content;
  }
  return out;
}

/// Parses an hh-rlhf transcript into turns (cai::parse_error when it does not start with "\n\nHuman: ").
inline conversation parse_hh(std::string_view text) {
  using namespace detail::ds;
  // Tolerate the "\n\nAssistant:" ending of a prompt (no space, nothing after it): an empty assistant turn.
  conversation out;
  if (text.substr(0, human.size()) != human)
    throw parse_error(detail::concat("cai::parse_hh: expected the transcript to start with \"\\n\\nHuman: \", got \"",
                                     text.substr(0, 20), "\""));
  std::size_t pos = 0;
  while (pos < text.size()) {
    const bool is_h = text.compare(pos, human.size(), human) == 0;
    const bool is_a = !is_h && text.compare(pos, assistant.size(), assistant) == 0;
    const bool bare_a = !is_h && !is_a && text.substr(pos) == "\n\nAssistant:";
    if (bare_a) {
      out.push_back({"assistant", ""});
      break;
    }
    const std::size_t start = pos + (is_h ? human.size() : assistant.size());
    std::size_t next = text.size();
    for (std::size_t k = start; k < text.size(); ++k)
      if (text.compare(k, human.size(), human) == 0 || text.compare(k, assistant.size(), assistant) == 0 ||
          text.substr(k) == "\n\nAssistant:") {
        next = k;
        break;
      }
    out.push_back({is_h ? "user" : "assistant", std::string(text.substr(start, next - start))});
    pos = next;
  }
  return out;
}

namespace detail::ds {

/// A response written into an hh transcript must not contain a turn marker (the form has no escaping).
inline const std::string& plain(const std::string& text, std::string_view name) {
  if (text.find("\n\nHuman:") != std::string::npos || text.find("\n\nAssistant:") != std::string::npos)
    fail_argument("cai::to_json", name, "text without the hh turn markers (use the messages form)", "a turn marker inside the text");
  return text;
}

inline nlohmann::json turns(const conversation& c) {
  nlohmann::json a = nlohmann::json::array();
  for (const auto& m : c) a.push_back({{"role", m.role}, {"content", m.content}});
  return a;
}

inline conversation turns_from(const nlohmann::json& j, std::string_view what) {
  if (!j.is_array()) throw parse_error(concat("cai::dataset: '", what, "' must be a list of {role, content} turns"));
  conversation c;
  for (std::size_t i = 0; i < j.size(); ++i) {
    const auto& m = j[i];
    if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() || !m["content"].is_string())
      throw parse_error(concat("cai::dataset: '", what, "'[", i, "] must be {\"role\": string, \"content\": string}"));
    c.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return c;
}

inline std::string str(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_string()) throw parse_error(concat("cai::dataset: expected a string field '", key, "'"));
  return it->get<std::string>();
}

/// Splits an hh transcript into (prompt turns, final assistant response).
inline std::pair<conversation, std::string> split_last(const std::string& text, std::string_view field) {
  conversation c = parse_hh(text);
  if (c.empty() || c.back().role != "assistant")
    throw parse_error(concat("cai::dataset: '", field, "' must end with an Assistant turn"));
  std::string last = std::move(c.back().content);
  c.pop_back();
  return {std::move(c), std::move(last)};
}

inline void put_label(nlohmann::json& j, const std::optional<double>& label) {
  if (label) j["label"] = *label;
}
inline std::optional<double> get_label(const nlohmann::json& j) {
  const auto it = j.find("label");
  if (it == j.end()) return std::nullopt;
  if (!it->is_number()) throw parse_error("cai::dataset: 'label' must be a number in [0, 1]");
  const double v = it->get<double>();
  if (!(v >= 0.0 && v <= 1.0)) throw parse_error(concat("cai::dataset: 'label' must lie in [0, 1], got ", v));
  return v;
}

}  // namespace detail::ds

/// A preference record in one of the three forms.
inline nlohmann::json to_json(const preference_record& r, dataset_format f) {
  using namespace detail::ds;
  nlohmann::json j;
  switch (f) {
    case dataset_format::hh: {
      const std::string p = hh_transcript(r.prompt);
      j = {{"chosen", p + std::string(assistant) + plain(r.chosen, "chosen")}, {"rejected", p + std::string(assistant) + plain(r.rejected, "rejected")}};
      break;
    }
    case dataset_format::text:
      j = {{"prompt", hh_transcript(r.prompt) + "\n\nAssistant:"}, {"chosen", " " + plain(r.chosen, "chosen")}, {"rejected", " " + plain(r.rejected, "rejected")}};
      break;
    case dataset_format::messages:
      j = {{"prompt", turns(r.prompt)},
           {"chosen", nlohmann::json::array({{{"role", "assistant"}, {"content", r.chosen}}})},
           {"rejected", nlohmann::json::array({{{"role", "assistant"}, {"content", r.rejected}}})}};
      break;
  }
  put_label(j, r.label);
  return j;
}

/// An SFT record in one of the three forms.
inline nlohmann::json to_json(const sft_record& r, dataset_format f) {
  using namespace detail::ds;
  switch (f) {
    case dataset_format::hh: return {{"text", hh_transcript(r.prompt) + std::string(assistant) + plain(r.response, "response")}};
    case dataset_format::text: return {{"prompt", hh_transcript(r.prompt) + "\n\nAssistant:"}, {"completion", " " + plain(r.response, "response")}};
    case dataset_format::messages: {
      conversation c = r.prompt;
      c.push_back({"assistant", r.response});
      return {{"messages", turns(c)}};
    }
  }
  return {};
}

/// Reads a preference record in any of the three forms (detected from the fields present).
inline preference_record preference_from_json(const nlohmann::json& j) {
  using namespace detail::ds;
  if (!j.is_object()) throw parse_error("cai::preference_from_json: expected an object");
  preference_record r;
  r.label = get_label(j);
  const auto pit = j.find("prompt");
  if (pit == j.end()) {  // hh: two full transcripts sharing the prompt
    auto [pc, c] = split_last(str(j, "chosen"), "chosen");
    auto [pr, rj] = split_last(str(j, "rejected"), "rejected");
    if (pc != pr) throw parse_error("cai::preference_from_json: 'chosen' and 'rejected' transcripts have different prompts");
    r.prompt = std::move(pc);
    r.chosen = std::move(c);
    r.rejected = std::move(rj);
  } else if (pit->is_string()) {  // text
    conversation p = parse_hh(pit->get<std::string>());
    if (p.empty() || p.back().role != "assistant" || !p.back().content.empty())
      throw parse_error("cai::preference_from_json: a text 'prompt' must end with \"\\n\\nAssistant:\"");
    p.pop_back();
    r.prompt = std::move(p);
    const auto strip = [](std::string s) { return !s.empty() && s.front() == ' ' ? s.substr(1) : s; };
    r.chosen = strip(str(j, "chosen"));
    r.rejected = strip(str(j, "rejected"));
  } else {  // messages
    r.prompt = turns_from(*pit, "prompt");
    const auto one = [&](const char* key) {
      const conversation c = turns_from(j.contains(key) ? j[key] : nlohmann::json(), key);
      if (c.size() != 1 || c[0].role != "assistant")
        throw parse_error(detail::concat("cai::preference_from_json: '", key, "' must hold one assistant turn"));
      return c[0].content;
    };
    r.chosen = one("chosen");
    r.rejected = one("rejected");
  }
  return r;
}

/// Reads an SFT record in any of the three forms.
inline sft_record sft_from_json(const nlohmann::json& j) {
  using namespace detail::ds;
  if (!j.is_object()) throw parse_error("cai::sft_from_json: expected an object");
  sft_record r;
  if (j.contains("messages")) {
    conversation c = turns_from(j["messages"], "messages");
    if (c.empty() || c.back().role != "assistant") throw parse_error("cai::sft_from_json: 'messages' must end with an assistant turn");
    r.response = c.back().content;
    c.pop_back();
    r.prompt = std::move(c);
  } else if (j.contains("text")) {
    auto [p, last] = split_last(str(j, "text"), "text");
    r.prompt = std::move(p);
    r.response = std::move(last);
  } else {
    conversation p = parse_hh(str(j, "prompt"));
    if (p.empty() || p.back().role != "assistant" || !p.back().content.empty())
      throw parse_error("cai::sft_from_json: a text 'prompt' must end with \"\\n\\nAssistant:\"");
    p.pop_back();
    r.prompt = std::move(p);
    std::string c = str(j, "completion");
    r.response = !c.empty() && c.front() == ' ' ? c.substr(1) : c;
  }
  return r;
}

}  // namespace cai
