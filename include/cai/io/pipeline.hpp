// cai/io/pipeline.hpp — the resumable batch driver behind cai's data pipelines (critique-revise, AI feedback).
//
// Items are processed in batches fixed by their position (batch b = items [b * size, (b + 1) * size)), each result
// written as one flushed JSONL line keyed by the item's id. On start the output file is scanned: a truncated last
// line (a killed run) is cut off, ids already present are skipped, and a batch that was partly written is run again
// whole — writing only its missing records — so that every record sees exactly the calls an uninterrupted run made.
// Ids must be unique; an output line without a string "id" is an error (cai::parse_error naming file:line).
#pragma once

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <set>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "jsonl.hpp"
#include "progress.hpp"

namespace cai {

/// What a resumable pipeline run did.
struct pipeline_report {
  std::size_t written = 0;  ///< records written by this run
  std::size_t skipped = 0;  ///< items already in the output file
  std::size_t failed = 0;   ///< records written with an error
};

/// Runs run_batch(batch_items, batch_index) -> range of records for every batch with unwritten items; writes each
/// new record as to_json(record) (which must carry the item's "id"); failed(record) counts failures.
template <class Item, class RunBatch, class ToJson, class Failed>
pipeline_report run_resumable(std::string_view label, std::span<const Item> items, std::size_t batch_size,
                              const std::filesystem::path& out_path, bool progress, RunBatch&& run_batch, ToJson&& to_json_fn,
                              Failed&& failed) {
  std::set<std::string> done;
  jsonl_writer w = jsonl_writer::open_for_resume(out_path);
  read_jsonl(out_path, [&](const nlohmann::json& j, std::size_t line) {
    if (!j.is_object() || !j.contains("id") || !j["id"].is_string())
      throw parse_error(detail::concat("cai::", label, ": ", out_path.string(), ":", line, ": a record without an \"id\""));
    done.insert(j["id"].get<std::string>());
  });
  pipeline_report rep;
  for (const auto& it : items) rep.skipped += done.count(it.id);
  progress_line bar(std::string(label), items.size(), rep.skipped, progress && ::isatty(2) != 0);
  for (std::size_t b = 0; b * batch_size < items.size(); ++b) {
    const auto batch = items.subspan(b * batch_size, std::min(batch_size, items.size() - b * batch_size));
    if (std::all_of(batch.begin(), batch.end(), [&](const Item& it) { return done.count(it.id) > 0; })) continue;
    for (auto& r : run_batch(batch, b)) {
      if (done.count(r.id)) continue;
      w.write(to_json_fn(r));
      done.insert(r.id);
      ++rep.written;
      rep.failed += failed(r) ? 1 : 0;
      bar.advance();
    }
  }
  bar.finish();
  return rep;
}

}  // namespace cai
