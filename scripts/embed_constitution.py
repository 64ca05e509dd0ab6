#!/usr/bin/env python3
"""Writes include/cai/constitution/default_constitution.hpp from data/constitution.json (run after editing the JSON;
tests/constitution/constitution.cpp fails while the two differ)."""
import pathlib

root = pathlib.Path(__file__).resolve().parent.parent
text = (root / "data" / "constitution.json").read_text(encoding="utf-8")
assert ')cai_json"' not in text
out = root / "include" / "cai" / "constitution" / "default_constitution.hpp"
out.write_text(
    "// cai/constitution/default_constitution.hpp — the default constitution, compiled in (generated from\n"
    "// data/constitution.json by scripts/embed_constitution.py; a test checks that the two are identical), so an\n"
    "// installed cai has it without a data folder. Sixteen principles: physical harm, dangerous capabilities,\n"
    "// legality, privacy, honesty, calibration, non-evasiveness, helpfulness, autonomy, manipulation, fairness,\n"
    "// wellbeing, age-appropriate language, expert advice, respectful tone, ethics; three critique-revise and two\n"
    "// feedback examples.\n"
    "//\n"
    "//   const cai::constitution& c = cai::default_constitution();\n"
    "#pragma once\n\n"
    "#include <string_view>\n\n"
    "#include \"constitution.hpp\"\n\n"
    "namespace cai {\n\n"
    "/// The JSON text of the default constitution (cai.constitution/1).\n"
    "inline constexpr std::string_view default_constitution_json = R\"cai_json(" + text + ")cai_json\";\n\n"
    "/// The default constitution, parsed once.\n"
    "inline const constitution& default_constitution() {\n"
    "  static const constitution c = parse_constitution(default_constitution_json, \"<default constitution>\");\n"
    "  return c;\n"
    "}\n\n"
    "}  // namespace cai\n",
    encoding="utf-8")
