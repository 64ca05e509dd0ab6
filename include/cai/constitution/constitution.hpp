// cai/constitution/constitution.hpp — constitutions: principles and few-shot examples for critique-revise (SL-CAI)
// and AI feedback (RLAIF), their JSON file format, a validating loader, and an importer for open CAI recipes.
//
// Bai et al. 2022, "Constitutional AI: Harmlessness from AI Feedback" (arXiv 2212.08073): a constitution is a list
// of principles, each used (sampled at random) to ask for a critique of a response, a revision of it, or — for
// feedback — a choice between two responses; few-shot examples prime the model for each task.
//
// File format (component cai::io; nlohmann-json), "format": "cai.constitution/1":
//   {
//     "format": "cai.constitution/1", "name": "...", "description": "..." (optional),
//     "principles": [ {"id", "critique_request", "revision_request", "comparison_question"}, ... ]   (>= 1)
//     "critique_examples": [ {"principle" (an id) or "critique_request" + "revision_request",
//                             "conversation": [{"role", "content"}, ...], "response", "critique", "revision"} ],
//     "feedback_examples": [ {"principle" (an id) or "comparison_question",
//                             "conversation": [...], "options": [">= 2 strings"], "answer": index,
//                             "reasoning" (optional)} ]
//   }
// Every string is non-empty; ids are unique; unknown fields are errors (a misspelt key must not pass silently).
// Errors are cai::parse_error naming the source, the JSON pointer of the field ("/principles/3/revision_request")
// and what was expected; malformed JSON names the byte offset. An example that names a principle gets that
// principle's request texts filled in, so consumers always read the texts from the example itself.
//
// import_constitution_recipe() reads the layout of open CAI recipes (Hugging Face llm-swarm
// examples/constitutional-ai): {"constitutions": [{"critic", "revision"}], "system_chat": [[messages]]}, each
// system_chat conversation ending user(critique request), assistant(critique), user(revision request),
// assistant(revision) after the dialogue it critiques.
//
//   const cai::constitution& c = cai::default_constitution();     // <cai/constitution/default_constitution.hpp>
//   cai::constitution mine = cai::load_constitution("my_constitution.json");
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "../concepts/types.hpp"
#include "../core/error.hpp"

namespace cai {

struct principle {
  std::string id;
  std::string critique_request;
  std::string revision_request;
  std::string comparison_question;
  friend bool operator==(const principle&, const principle&) = default;
};

struct critique_example {
  std::string principle;  ///< the principle's id, or empty when the requests are given inline
  std::string critique_request, revision_request;
  conversation dialogue;  ///< the conversation up to the response (ends with a user turn)
  std::string response, critique, revision;
  friend bool operator==(const critique_example&, const critique_example&) = default;
};

struct feedback_example {
  std::string principle;  ///< id, or empty with an inline comparison_question
  std::string comparison_question;
  conversation dialogue;
  std::vector<std::string> options;
  std::size_t answer = 0;  ///< index into options
  std::string reasoning;   ///< optional chain-of-thought for the example
  friend bool operator==(const feedback_example&, const feedback_example&) = default;
};

struct constitution {
  std::string name;
  std::string description;
  std::vector<principle> principles;
  std::vector<critique_example> critique_examples;
  std::vector<feedback_example> feedback_examples;

  /// The principle with this id (cai::invalid_argument naming 'id' if there is none).
  const principle& find(std::string_view id) const {
    for (const auto& p : principles)
      if (p.id == id) return p;
    detail::fail_argument("cai::constitution::find", "id", "the id of a principle", detail::concat("'", id, "'"));
  }
  friend bool operator==(const constitution&, const constitution&) = default;
};

inline constexpr std::string_view constitution_format = "cai.constitution/1";

namespace detail::cjson {

using json = nlohmann::json;

[[noreturn]] inline void fail(std::string_view source, const std::string& ptr, std::string_view what) {
  throw parse_error(concat("cai::load_constitution: ", source, ": ", ptr.empty() ? "/" : ptr, ": ", what));
}

inline const char* type_name(const json& j) { return j.type_name(); }

inline const json& object_at(std::string_view src, const json& j, const std::string& ptr) {
  if (!j.is_object()) fail(src, ptr, concat("expected an object, got ", type_name(j)));
  return j;
}

inline void only_keys(std::string_view src, const json& j, const std::string& ptr, std::initializer_list<std::string_view> keys) {
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool known = false;
    for (auto k : keys) known = known || it.key() == k;
    if (!known) {
      std::string list;
      for (auto k : keys) list += concat(list.empty() ? "" : ", ", k);
      fail(src, ptr + "/" + it.key(), concat("unknown field (known: ", list, ")"));
    }
  }
}

inline std::string text(std::string_view src, const json& obj, const std::string& ptr, const char* key, bool required = true) {
  const auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) fail(src, ptr + "/" + key, "missing (a non-empty string)");
    return {};
  }
  if (!it->is_string()) fail(src, ptr + "/" + key, concat("expected a string, got ", type_name(*it)));
  std::string s = it->get<std::string>();
  if (s.empty()) fail(src, ptr + "/" + key, "expected a non-empty string");
  return s;
}

inline conversation dialogue(std::string_view src, const json& obj, const std::string& ptr, const char* key) {
  const std::string p = ptr + "/" + key;
  const auto it = obj.find(key);
  if (it == obj.end()) fail(src, p, "missing (a list of {role, content} messages)");
  if (!it->is_array() || it->empty()) fail(src, p, "expected a non-empty array of messages");
  conversation c;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const std::string mp = concat(p, "/", i);
    const json& m = object_at(src, (*it)[i], mp);
    only_keys(src, m, mp, {"role", "content"});
    c.push_back({text(src, m, mp, "role"), text(src, m, mp, "content")});
  }
  return c;
}

inline const json& array_at(std::string_view src, const json& obj, const std::string& ptr, const char* key, bool required) {
  static const json empty = json::array();
  const auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) fail(src, ptr + "/" + key, "missing (an array)");
    return empty;
  }
  if (!it->is_array()) fail(src, ptr + "/" + key, concat("expected an array, got ", type_name(*it)));
  return *it;
}

inline json parse_text(std::string_view text_in, std::string_view src) {
  try {
    return json::parse(text_in.begin(), text_in.end());
  } catch (const json::parse_error& e) {
    throw parse_error(concat("cai::load_constitution: ", src, ": malformed JSON at byte ", e.byte, ": ", e.what()));
  }
}

}  // namespace detail::cjson

/// Parses and validates a constitution from JSON text; `source` names it in errors. See the header comment.
inline constitution parse_constitution(std::string_view json_text, std::string_view source = "<string>") {
  namespace cj = detail::cjson;
  const cj::json root = cj::parse_text(json_text, source);
  cj::object_at(source, root, "");
  cj::only_keys(source, root, "", {"format", "name", "description", "principles", "critique_examples", "feedback_examples"});
  const std::string fmt = cj::text(source, root, "", "format");
  if (fmt != constitution_format) cj::fail(source, "/format", detail::concat("expected \"", constitution_format, "\", got \"", fmt, "\""));
  constitution c;
  c.name = cj::text(source, root, "", "name");
  c.description = cj::text(source, root, "", "description", false);
  const auto& ps = cj::array_at(source, root, "", "principles", true);
  if (ps.empty()) cj::fail(source, "/principles", "expected at least one principle");
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const std::string ptr = detail::concat("/principles/", i);
    const auto& p = cj::object_at(source, ps[i], ptr);
    cj::only_keys(source, p, ptr, {"id", "critique_request", "revision_request", "comparison_question"});
    principle pr{cj::text(source, p, ptr, "id"), cj::text(source, p, ptr, "critique_request"),
                 cj::text(source, p, ptr, "revision_request"), cj::text(source, p, ptr, "comparison_question")};
    for (const auto& q : c.principles)
      if (q.id == pr.id) cj::fail(source, ptr + "/id", detail::concat("duplicate id '", pr.id, "'"));
    c.principles.push_back(std::move(pr));
  }
  const auto principle_of = [&](const cj::json& e, const std::string& ptr) -> const principle* {
    const std::string id = cj::text(source, e, ptr, "principle", false);
    if (id.empty()) return nullptr;
    for (const auto& p : c.principles)
      if (p.id == id) return &p;
    cj::fail(source, ptr + "/principle", detail::concat("unknown principle id '", id, "'"));
  };
  const auto& ce = cj::array_at(source, root, "", "critique_examples", false);
  for (std::size_t i = 0; i < ce.size(); ++i) {
    const std::string ptr = detail::concat("/critique_examples/", i);
    const auto& e = cj::object_at(source, ce[i], ptr);
    cj::only_keys(source, e, ptr, {"principle", "critique_request", "revision_request", "conversation", "response", "critique", "revision"});
    critique_example x;
    if (const principle* p = principle_of(e, ptr)) {
      x.principle = p->id;
      x.critique_request = p->critique_request;
      x.revision_request = p->revision_request;
      if (e.contains("critique_request") || e.contains("revision_request"))
        cj::fail(source, ptr, "give either \"principle\" or inline \"critique_request\" + \"revision_request\", not both");
    } else {
      x.critique_request = cj::text(source, e, ptr, "critique_request");
      x.revision_request = cj::text(source, e, ptr, "revision_request");
    }
    x.dialogue = cj::dialogue(source, e, ptr, "conversation");
    x.response = cj::text(source, e, ptr, "response");
    x.critique = cj::text(source, e, ptr, "critique");
    x.revision = cj::text(source, e, ptr, "revision");
    c.critique_examples.push_back(std::move(x));
  }
  const auto& fe = cj::array_at(source, root, "", "feedback_examples", false);
  for (std::size_t i = 0; i < fe.size(); ++i) {
    const std::string ptr = detail::concat("/feedback_examples/", i);
    const auto& e = cj::object_at(source, fe[i], ptr);
    cj::only_keys(source, e, ptr, {"principle", "comparison_question", "conversation", "options", "answer", "reasoning"});
    feedback_example x;
    if (const principle* p = principle_of(e, ptr)) {
      x.principle = p->id;
      x.comparison_question = p->comparison_question;
      if (e.contains("comparison_question")) cj::fail(source, ptr, "give either \"principle\" or an inline \"comparison_question\", not both");
    } else {
      x.comparison_question = cj::text(source, e, ptr, "comparison_question");
    }
    x.dialogue = cj::dialogue(source, e, ptr, "conversation");
    const auto& opts = cj::array_at(source, e, ptr, "options", true);
    if (opts.size() < 2) cj::fail(source, ptr + "/options", detail::concat("expected at least 2 options, got ", opts.size()));
    for (std::size_t k = 0; k < opts.size(); ++k) {
      const std::string op = detail::concat(ptr, "/options/", k);
      if (!opts[k].is_string() || opts[k].get<std::string>().empty()) cj::fail(source, op, "expected a non-empty string");
      x.options.push_back(opts[k].get<std::string>());
    }
    const auto a = e.find("answer");
    if (a == e.end()) cj::fail(source, ptr + "/answer", "missing (the index of the better option)");
    if (!a->is_number_unsigned() || a->get<std::uint64_t>() >= x.options.size())
      cj::fail(source, ptr + "/answer", detail::concat("expected an index in [0, ", x.options.size(), "), got ", a->dump()));
    x.answer = static_cast<std::size_t>(a->get<std::uint64_t>());
    x.reasoning = cj::text(source, e, ptr, "reasoning", false);
    c.feedback_examples.push_back(std::move(x));
  }
  return c;
}

/// Reads a constitution file (cai::parse_error naming the path when it cannot be read or is invalid).
inline constitution load_constitution(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw parse_error(detail::concat("cai::load_constitution: cannot open '", path.string(), "'"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_constitution(ss.str(), path.string());
}

/// The constitution as JSON in the cai.constitution/1 format (examples that name a principle omit its texts).
inline std::string to_json(const constitution& c, int indent = 2) {
  using json = nlohmann::ordered_json;
  const auto conv = [](const conversation& d) {
    json a = json::array();
    for (const auto& m : d) a.push_back({{"role", m.role}, {"content", m.content}});
    return a;
  };
  json root = {{"format", constitution_format}, {"name", c.name}};
  if (!c.description.empty()) root["description"] = c.description;
  json ps = json::array();
  for (const auto& p : c.principles)
    ps.push_back({{"id", p.id}, {"critique_request", p.critique_request}, {"revision_request", p.revision_request},
                  {"comparison_question", p.comparison_question}});
  root["principles"] = ps;
  json ce = json::array();
  for (const auto& e : c.critique_examples) {
    json x = json::object();
    if (!e.principle.empty()) x["principle"] = e.principle;
    else x["critique_request"] = e.critique_request, x["revision_request"] = e.revision_request;
    x["conversation"] = conv(e.dialogue);
    x["response"] = e.response;
    x["critique"] = e.critique;
    x["revision"] = e.revision;
    ce.push_back(x);
  }
  root["critique_examples"] = ce;
  json fe = json::array();
  for (const auto& e : c.feedback_examples) {
    json x = json::object();
    if (!e.principle.empty()) x["principle"] = e.principle;
    else x["comparison_question"] = e.comparison_question;
    x["conversation"] = conv(e.dialogue);
    x["options"] = e.options;
    x["answer"] = e.answer;
    if (!e.reasoning.empty()) x["reasoning"] = e.reasoning;
    fe.push_back(x);
  }
  root["feedback_examples"] = fe;
  return root.dump(indent);
}

/// Imports the {"constitutions": [{"critic", "revision"}], "system_chat": [[...]]} layout of open CAI recipes.
/// Principles get ids "principle-1", ... and a comparison question built from the critique request; each
/// system_chat conversation becomes a critique example (linked to the principle whose critique request it uses,
/// else with its requests inline).
inline constitution import_constitution_recipe(std::string_view json_text, std::string_view source = "<string>",
                                               std::string_view name = "imported constitution") {
  namespace cj = detail::cjson;
  const cj::json root = cj::parse_text(json_text, source);
  cj::object_at(source, root, "");
  cj::only_keys(source, root, "", {"constitutions", "system_chat"});
  constitution c;
  c.name = std::string(name);
  const auto& ps = cj::array_at(source, root, "", "constitutions", true);
  if (ps.empty()) cj::fail(source, "/constitutions", "expected at least one principle");
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const std::string ptr = detail::concat("/constitutions/", i);
    const auto& p = cj::object_at(source, ps[i], ptr);
    cj::only_keys(source, p, ptr, {"critic", "revision"});
    principle pr;
    pr.id = detail::concat("principle-", i + 1);
    pr.critique_request = cj::text(source, p, ptr, "critic");
    pr.revision_request = cj::text(source, p, ptr, "revision");
    pr.comparison_question = detail::concat("Which response does better on the following? ", pr.critique_request);
    c.principles.push_back(std::move(pr));
  }
  const auto& chats = cj::array_at(source, root, "", "system_chat", false);
  for (std::size_t i = 0; i < chats.size(); ++i) {
    const std::string ptr = detail::concat("/system_chat/", i);
    if (!chats[i].is_array()) cj::fail(source, ptr, "expected an array of messages");
    cj::json wrapper = {{"conversation", chats[i]}};
    const conversation d = cj::dialogue(source, wrapper, ptr, "conversation");
    const std::size_t n = d.size();
    static constexpr const char* roles[] = {"assistant", "user", "assistant", "user", "assistant"};
    if (n < 6) cj::fail(source, ptr, detail::concat("expected a dialogue then response, critique request, critique, revision request, revision (>= 6 messages), got ", n));
    for (std::size_t k = 0; k < 5; ++k)
      if (d[n - 5 + k].role != roles[k])
        cj::fail(source, detail::concat(ptr, "/", n - 5 + k, "/role"), detail::concat("expected \"", roles[k], "\", got \"", d[n - 5 + k].role, "\""));
    if (d[n - 6].role != "user") cj::fail(source, detail::concat(ptr, "/", n - 6, "/role"), "expected \"user\" (the turn the response answers)");
    critique_example x;
    x.dialogue.assign(d.begin(), d.begin() + static_cast<std::ptrdiff_t>(n - 5));
    x.response = d[n - 5].content;
    x.critique_request = d[n - 4].content;
    x.critique = d[n - 3].content;
    x.revision_request = d[n - 2].content;
    x.revision = d[n - 1].content;
    for (const auto& p : c.principles)
      if (p.critique_request == x.critique_request && p.revision_request == x.revision_request) x.principle = p.id;
    c.critique_examples.push_back(std::move(x));
  }
  return c;
}

}  // namespace cai
