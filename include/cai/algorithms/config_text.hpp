// cai/algorithms/config_text.hpp — the small parser behind the run-time "by name" constructors
// (objective.hpp for policy objectives, dpo.hpp for preference losses): NAME[:KEY=VALUE,...] with '-' and '_'
// interchangeable and case ignored in names and keys. Errors name the axis and the offending text.
#pragma once

#include <charconv>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "../core/error.hpp"

namespace cai {

namespace detail::config {

inline std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n')) s.remove_suffix(1);
  return s;
}

inline std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  while (true) {
    const std::size_t k = s.find(sep);
    out.push_back(trim(s.substr(0, k)));
    if (k == std::string_view::npos) break;
    s.remove_prefix(k + 1);
  }
  return out;
}

inline std::string normalise(std::string_view s) {
  std::string o(s);
  for (char& c : o) c = c == '-' ? '_' : static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return o;
}

/// NAME and its KEY=VALUE arguments (bare arguments are kept with an empty value).
struct spec {
  std::string name;
  std::vector<std::pair<std::string, std::string_view>> args;
  std::string_view axis, text;
  std::vector<bool> used;

  double number(std::string_view key, double fallback) {
    for (std::size_t i = 0; i < args.size(); ++i)
      if (args[i].first == key) {
        used[i] = true;
        const std::string_view v = args[i].second;
        double x = 0.0;
        const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
        if (ec != std::errc{} || end != v.data() + v.size() || v.empty())
          fail_argument(concat("cai::", axis, "_from_name"), concat(axis, ".", key), "a number", concat("'", v, "'"));
        return x;
      }
    return fallback;
  }
  std::string_view word(std::string_view key, std::string_view fallback) {
    for (std::size_t i = 0; i < args.size(); ++i)
      if (args[i].first == key) {
        used[i] = true;
        return args[i].second;
      }
    return fallback;
  }
  void finish() const {
    for (std::size_t i = 0; i < args.size(); ++i)
      if (!used[i])
        fail_argument(concat("cai::", axis, "_from_name"), axis, concat("only known keys for '", name, "'"),
                      concat("'", args[i].first, "' in '", text, "'"));
  }
};

inline spec parse(std::string_view axis, std::string_view text) {
  spec s;
  s.axis = axis;
  s.text = text;
  text = trim(text);
  const std::size_t colon = text.find(':');
  s.name = normalise(trim(text.substr(0, colon)));
  if (colon != std::string_view::npos)
    for (std::string_view a : split(text.substr(colon + 1), ',')) {
      if (a.empty()) continue;
      const std::size_t eq = a.find('=');
      if (eq == std::string_view::npos) s.args.emplace_back(normalise(a), std::string_view{});
      else s.args.emplace_back(normalise(trim(a.substr(0, eq))), trim(a.substr(eq + 1)));
    }
  s.used.assign(s.args.size(), false);
  return s;
}

[[noreturn]] inline void unknown(std::string_view axis, std::string_view name, std::string_view valid) {
  fail_argument(concat("cai::", axis, "_from_name"), axis, concat("one of ", valid), concat("'", name, "'"));
}

}  // namespace detail::config

}  // namespace cai
