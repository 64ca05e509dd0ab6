// cai/trainers/checkpoint.hpp — checkpoint / resume and per-epoch shuffling for the offline trainers (train_sft,
// train_reward_model, train_dpo), and the atomic JSON files the trainers keep their own state in.
//
// Shuffling (options.shuffle, options.shuffle_seed): epoch e visits the records in the permutation drawn by
// Fisher-Yates (i = n-1 .. 1: swap(order[i], order[j]), j = r.below(i + 1)) from
// r = cai::rng_stream(cai::derive_seed(shuffle_seed, e)). The order of an epoch depends on (seed, e, n) only — not
// on the steps taken before — so an interrupted run that resumes in the middle of an epoch sees the same order.
// Without shuffle, every epoch takes the records in index order. Batches are consecutive slices of the epoch's order;
// a final partial batch is a (smaller) step.
//
// Checkpoints (options.checkpoint = {path, every}): with every > 0 the trainer writes, after every `every`
// optimiser steps and after the last one,
//   path / "model-<step>.ckpt"   model.save_checkpoint(): the model's full training state (parameters, optimiser)
//   path / "trainer.json"        the trainer's position: {"format": "cai.trainer_checkpoint", "version": 1,
//                                "trainer", "step" (optimiser steps done), "epoch" (that of the next step), "records",
//                                "batch_size", "total_steps", "shuffle", "shuffle_seed", "first_loss", "last_loss",
//                                "model" (the model file's name)}
// each atomically (written to <file>.tmp, then renamed), the model file first: the sidecar is the commit point and
// always names a complete model file. The model file is named by its step, so that a run killed between the two
// writes leaves the previous pair intact; the previous model file is removed once the new sidecar is in place.
// At start, when path / "trainer.json" exists, the trainer loads the model file it names, restores the summary
// (steps, first_loss, last_loss) and continues with the next step: steps already done are skipped without being
// recomputed, and on_metrics is called for the remaining steps only (steps between the last checkpoint and an
// interruption are redone, so a metrics log written by the callback sees them twice). A resumed run therefore ends
// with the parameters and the train_summary of the uninterrupted run, bit for bit (the models' training is
// deterministic). A finished run (step == total) resumes to its end at once: the model is loaded, nothing is trained.
// The sidecar must come from the same kind of run: the same trainer, number of records, batch_size, shuffle and
// shuffle_seed (otherwise the position would mean different batches), and a step within this run's total
// (epochs x ceil(records / batch_size)); epochs and the schedule may change. The dataset itself is not fingerprinted.
//
// Errors: every < 0, an empty path with every > 0, and a model that is not cai::checkpointable with every > 0 are
// cai::invalid_argument naming "checkpoint.every" / "checkpoint.path" / "checkpoint"; a sidecar that is not valid
// JSON or lacks a field is cai::parse_error naming the file; a sidecar of another run (above) is
// cai::invalid_argument naming "checkpoint.path" and the mismatch; a damaged model file is the model's parse_error.
//
//   opts.checkpoint = {.path = "run1", .every = 100};
//   cai::train_sft(lm, tok, data, opts);   // killed at step 250: the same call again resumes from step 200
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/atomic_file.hpp"
#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "../io/progress.hpp"

namespace cai {

/// What a trainer reports at its end: the optimiser steps taken and the first and last step's loss.
struct train_summary {
  std::int64_t steps = 0;
  double first_loss = 0.0, last_loss = 0.0;
};

/// Where and how often the offline trainers write checkpoints (see the header comment); every = 0 disables.
struct checkpoint_options {
  std::filesystem::path path{};  ///< a directory (created when missing)
  std::int64_t every = 0;        ///< optimiser steps between checkpoints; >= 0
};

/// A model whose full training state can be written and restored: what checkpoint_options needs.
template <class M>
concept checkpointable = requires(M& m, const M& cm, const std::filesystem::path& p) {
  cm.save_checkpoint(p);
  m.load_checkpoint(p);
};

namespace detail {

/// Writes `j` to `path` through path + ".tmp" and a rename, so readers never see a half-written file.
inline void write_json_atomic(const std::filesystem::path& path, const nlohmann::json& j, std::string_view call) {
  write_file_atomic(path, call, [&](std::ostream& f) { f << j.dump(2) << '\n'; });
}

/// The JSON object in `path`; cai::parse_error naming the file when it is not one.
inline nlohmann::json read_json_object(const std::filesystem::path& path, std::string_view call) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(call, concat("cannot open '", path.string(), "'"));
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) fail<parse_error>(call, concat("'", path.string(), "': not valid JSON"));
  if (!j.is_object()) fail<parse_error>(call, concat("'", path.string(), "': expected a JSON object"));
  return j;
}

/// Field `key` of `j` (read from `path`) with the JSON type `ok` accepts; cai::parse_error naming both otherwise.
template <class Ok>
const nlohmann::json& json_field(const nlohmann::json& j, std::string_view key, std::string_view expected, Ok ok,
                                 const std::filesystem::path& path, std::string_view call) {
  const auto it = j.find(std::string(key));
  if (it == j.end() || !ok(*it))
    fail<parse_error>(call, concat("'", path.string(), "': field \"", key, "\": expected ", expected,
                                   it == j.end() ? std::string(", missing") : concat(", got ", it->dump())));
  return *it;
}

/// A double saved by nlohmann (null stands for a NaN, which JSON cannot hold).
inline double json_double(const nlohmann::json& v) { return v.is_null() ? std::nan("") : v.get<double>(); }
inline nlohmann::json to_json_double(double x) { return std::isnan(x) ? nlohmann::json(nullptr) : nlohmann::json(x); }

namespace trn {

inline constexpr const char* sidecar_name = "trainer.json";

/// every >= 0; with every > 0 a path and a checkpointable model.
template <class M>
void check_checkpoint_options(std::string_view call, const checkpoint_options& ck) {
  if (ck.every < 0) fail_argument(call, "checkpoint.every", "a value >= 0 (0 = no checkpoints)", ck.every);
  if (ck.every == 0) return;
  if constexpr (!checkpointable<M>)
    fail_argument(call, "checkpoint", "a model with save_checkpoint(path) and load_checkpoint(path) (cai::checkpointable) "
                                      "when checkpoint.every > 0", "a model without them");
  if (ck.path.empty()) fail_argument(call, "checkpoint.path", "a directory for the checkpoint files", "an empty path");
}

/// The records of epoch `epoch` in visiting order (see the header comment).
inline std::vector<std::int64_t> epoch_order(std::size_t n, std::int64_t epoch, bool shuffle, std::uint64_t seed) {
  std::vector<std::int64_t> order(n);
  std::iota(order.begin(), order.end(), std::int64_t{0});
  if (!shuffle) return order;
  rng_stream r(derive_seed(seed, static_cast<std::uint64_t>(epoch)));
  for (std::size_t i = n; i-- > 1;) std::swap(order[i], order[r.below(static_cast<std::uint32_t>(i + 1))]);
  return order;
}

/// A trainer position read from a sidecar and checked against this run.
struct trainer_position {
  train_summary summary;
  std::string model_file;
};

inline trainer_position read_position(std::string_view call, std::string_view trainer, const std::filesystem::path& side,
                                      std::int64_t records, std::int64_t batch, std::int64_t per_epoch, std::int64_t total,
                                      bool shuffle, std::uint64_t seed) {
  const auto j = read_json_object(side, call);
  const auto is_int = [](const nlohmann::json& v) { return v.is_number_integer(); };
  const auto is_str = [](const nlohmann::json& v) { return v.is_string(); };
  const auto is_num = [](const nlohmann::json& v) { return v.is_number() || v.is_null(); };
  if (json_field(j, "format", "a string", is_str, side, call).get<std::string>() != "cai.trainer_checkpoint")
    fail<parse_error>(call, concat("'", side.string(), "': field \"format\": expected \"cai.trainer_checkpoint\", got ", j["format"].dump()));
  if (const auto v = json_field(j, "version", "an integer", is_int, side, call).get<std::int64_t>(); v != 1)
    fail<parse_error>(call, concat("'", side.string(), "': unsupported version ", v, " (this build reads version 1)"));
  const auto kind = json_field(j, "trainer", "a string", is_str, side, call).get<std::string>();
  const auto step = json_field(j, "step", "an integer", is_int, side, call).get<std::int64_t>();
  const auto epoch = json_field(j, "epoch", "an integer", is_int, side, call).get<std::int64_t>();
  const auto recs = json_field(j, "records", "an integer", is_int, side, call).get<std::int64_t>();
  const auto bs = json_field(j, "batch_size", "an integer", is_int, side, call).get<std::int64_t>();
  const bool shuf = json_field(j, "shuffle", "a boolean", [](const nlohmann::json& v) { return v.is_boolean(); }, side, call).get<bool>();
  const auto sseed = json_field(j, "shuffle_seed", "an unsigned integer", [](const nlohmann::json& v) { return v.is_number_unsigned(); },
                                side, call).get<std::uint64_t>();
  trainer_position p;
  p.summary.first_loss = json_double(json_field(j, "first_loss", "a number", is_num, side, call));
  p.summary.last_loss = json_double(json_field(j, "last_loss", "a number", is_num, side, call));
  p.model_file = json_field(j, "model", "a file name", is_str, side, call).get<std::string>();
  const std::filesystem::path mf(p.model_file);
  if (p.model_file.empty() || mf.filename() != mf || p.model_file == "." || p.model_file == "..")
    fail<parse_error>(call, concat("'", side.string(), "': field \"model\": expected a file name in the checkpoint directory, got \"",
                                   p.model_file, "\""));
  const auto other = [&](std::string_view what, const auto& file, const auto& here) {
    fail_argument(call, "checkpoint.path", concat("a checkpoint of this run (", what, " ", here, ")"),
                  concat(what, " ", file, " in '", side.string(), "'"));
  };
  if (kind != trainer) other("trainer", concat("\"", kind, "\""), concat("\"", trainer, "\""));
  if (recs != records) other("records", recs, records);
  if (bs != batch) other("batch_size", bs, batch);
  if (shuf != shuffle) other("shuffle", shuf ? "true" : "false", shuffle ? "true" : "false");
  if (shuffle && sseed != seed) other("shuffle_seed", sseed, seed);
  if (step < 0 || step > total)
    fail_argument(call, "checkpoint.path",
                  concat("a step within this run's total_steps = ", total, " (epochs x ceil(records / batch_size))"),
                  concat("step ", step, " in '", side.string(), "'"));
  if (epoch != step / per_epoch)
    fail<parse_error>(call, concat("'", side.string(), "': field \"epoch\": ", epoch, " does not match step ", step, " (expected ",
                                   step / per_epoch, ")"));
  p.summary.steps = step;
  return p;
}

/// The optimiser-step loop of the offline trainers: epochs x ceil(n / batch_size) steps over the records in epoch
/// order (shuffled or not), resuming from and writing checkpoints as opt.checkpoint asks (see the header comment).
/// step(records, summary, bar) takes one optimiser step on the record indices given (it ends with finish_step).
/// Opt has batch_size, epochs, shuffle, shuffle_seed, checkpoint and progress.
template <class M, class Opt, class StepFn>
train_summary run_epochs(std::string_view call, std::string_view trainer, M& model, std::size_t n, const Opt& opt, StepFn&& step) {
  const checkpoint_options& ck = opt.checkpoint;
  check_checkpoint_options<M>(call, ck);
  if (opt.shuffle && n > std::numeric_limits<std::uint32_t>::max())
    fail_argument(call, "shuffle", "at most 2^32 - 1 records to shuffle", n);
  const auto records = static_cast<std::int64_t>(n);
  const std::int64_t per_epoch = (records + opt.batch_size - 1) / opt.batch_size, total = per_epoch * opt.epochs;
  train_summary sum;
  std::string current;  // the model file the sidecar on disk names
  if (ck.every > 0) {
    const auto side = ck.path / sidecar_name;
    if (std::filesystem::exists(side)) {
      auto pos = read_position(call, trainer, side, records, opt.batch_size, per_epoch, total, opt.shuffle, opt.shuffle_seed);
      if constexpr (checkpointable<M>) model.load_checkpoint(ck.path / pos.model_file);
      sum = pos.summary;
      current = std::move(pos.model_file);
    }
  }
  const auto save = [&] {
    if constexpr (checkpointable<M>) {
      std::error_code ec;
      std::filesystem::create_directories(ck.path, ec);
      if (ec) fail(call, concat("cannot create the checkpoint directory '", ck.path.string(), "': ", ec.message()));
      const std::string file = concat("model-", sum.steps, ".ckpt");
      model.save_checkpoint(ck.path / file);
      write_json_atomic(ck.path / sidecar_name,
                        {{"format", "cai.trainer_checkpoint"}, {"version", 1}, {"trainer", trainer}, {"step", sum.steps},
                         {"epoch", sum.steps / per_epoch}, {"records", records}, {"batch_size", opt.batch_size},
                         {"total_steps", total}, {"shuffle", opt.shuffle}, {"shuffle_seed", opt.shuffle_seed},
                         {"first_loss", to_json_double(sum.first_loss)}, {"last_loss", to_json_double(sum.last_loss)},
                         {"model", file}},
                        call);
      if (!current.empty() && current != file) std::filesystem::remove(ck.path / current, ec);  // best effort
      current = file;
    }
  };
  progress_line bar(std::string(trainer), static_cast<std::size_t>(total), static_cast<std::size_t>(sum.steps), opt.progress);
  const std::int64_t start = sum.steps;
  for (std::int64_t e = start / per_epoch; e < opt.epochs; ++e) {
    const auto order = epoch_order(n, e, opt.shuffle, opt.shuffle_seed);
    for (std::int64_t k = e == start / per_epoch ? start % per_epoch : 0; k < per_epoch; ++k) {
      const std::int64_t lo = k * opt.batch_size, hi = std::min(records, lo + opt.batch_size);
      step(std::span<const std::int64_t>(order.data() + lo, static_cast<std::size_t>(hi - lo)), sum, bar);
      if (ck.every > 0 && (sum.steps % ck.every == 0 || sum.steps == total)) save();
    }
  }
  bar.finish();
  return sum;
}

}  // namespace trn
}  // namespace detail
}  // namespace cai
