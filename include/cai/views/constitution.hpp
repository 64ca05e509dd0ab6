// cai/views/constitution.hpp — the Constitutional-AI stages as lazy range-v3 views (component cai::views; host
// only: range-v3 does not compile under nvcc).
//
//   auto pairs = prompts | cai::views::critique_revise(gen, constitution, {.revisions = 2})
//                        | cai::views::to_preference_pairs;          // nothing runs until iterated
//   for (const cai::preference_record& p : pairs) ...
//
// critique_revise(gen, c, opt)   prompt_record range -> critique_transcript range; the input is cut into batches of
//                                opt.batch_size and each batch runs (cai::critique_revise_batch) when the first of
//                                its records is reached, with the batch index of its position, so the records equal
//                                cai::critique_revise's on the same prompts.
// label_feedback(jdg, c, opt)    comparison range -> feedback_label range, batched the same way (no chain of
//                                thought: use label_feedback_with(jdg, gen, c, opt) for that)
// to_comparisons                 critique_transcript -> comparison (a = final revision, b = initial), ok records only
// to_preference_pairs            critique_transcript or feedback_label -> preference_record, ok records only
// to_sft                         critique_transcript -> sft_record, ok records only
// Each batch is copied into a contiguous buffer before it runs. The output of a stage is an input range (each batch
// runs once, when reached): iterate it, or chain another stage after it; ranges::to works on a stage whose input
// is a forward range (a container of prompts). The generator, judge and constitution are held by reference and must
// outlive the view.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include <range/v3/range/conversion.hpp>
#include <range/v3/view/cache1.hpp>
#include <range/v3/view/chunk.hpp>
#include <range/v3/view/enumerate.hpp>
#include <range/v3/view/filter.hpp>
#include <range/v3/view/join.hpp>
#include <range/v3/view/transform.hpp>

#include "../constitution/critique_revise.hpp"
#include "../constitution/feedback.hpp"

namespace cai::views {

namespace detail {

/// chunk -> run(batch span, batch index) -> join: a lazily evaluated, batched stage.
template <class Item, class Run>
auto batched(std::size_t batch_size, Run run) {
  return ranges::views::chunk(static_cast<std::ptrdiff_t>(batch_size)) | ranges::views::enumerate |
         ranges::views::transform([run](const auto& indexed) {
           const auto& [index, chunk] = indexed;
           const std::vector<Item> items = chunk | ranges::to<std::vector<Item>>();
           return run(std::span<const Item>(items), static_cast<std::uint64_t>(index));
         }) |
         ranges::views::cache1 | ranges::views::join;
}

}  // namespace detail

template <text_generator G>
auto critique_revise(G& gen, const constitution& c, critique_revise_options o = {}) {
  if (o.batch_size < 1) cai::detail::fail_argument("cai::views::critique_revise", "batch_size", "at least 1", o.batch_size);
  return detail::batched<prompt_record>(o.batch_size, [&gen, &c, o](std::span<const prompt_record> batch, std::uint64_t b) {
    cai::detail::cr::check_options("cai::views::critique_revise", c, batch, o);
    return critique_revise_batch(gen, c, batch, b, o);
  });
}

template <judge J>
auto label_feedback(J& jdg, const constitution& c, feedback_options o = {}) {
  if (o.batch_size < 1) cai::detail::fail_argument("cai::views::label_feedback", "batch_size", "at least 1", o.batch_size);
  return detail::batched<comparison>(o.batch_size, [&jdg, &c, o](std::span<const comparison> batch, std::uint64_t b) {
    cai::detail::fb::check("cai::views::label_feedback", c, batch, o, false);
    return label_feedback_batch(jdg, static_cast<cai::detail::fb::no_generator*>(nullptr), c, batch, b, o);
  });
}

template <judge J, text_generator G>
auto label_feedback_with(J& jdg, G& gen, const constitution& c, feedback_options o = {}) {
  if (o.batch_size < 1) cai::detail::fail_argument("cai::views::label_feedback_with", "batch_size", "at least 1", o.batch_size);
  return detail::batched<comparison>(o.batch_size, [&jdg, &gen, &c, o](std::span<const comparison> batch, std::uint64_t b) {
    cai::detail::fb::check("cai::views::label_feedback_with", c, batch, o, true);
    return label_feedback_batch(jdg, &gen, c, batch, b, o);
  });
}

inline constexpr auto ok_only = ranges::views::filter([](const auto& r) { return r.ok(); });

inline const auto to_preference_pairs = ok_only | ranges::views::transform([](const auto& r) { return r.to_preference(); });
inline const auto to_sft = ok_only | ranges::views::transform([](const critique_transcript& t) { return t.to_sft(); });
inline const auto to_comparisons = ok_only | ranges::views::transform([](const critique_transcript& t) {
                                     return comparison{t.id, t.prompt, t.final_response(), t.initial};
                                   });

}  // namespace cai::views
