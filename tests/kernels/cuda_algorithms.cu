// Device side of tests/kernels/cuda_algorithms.cpp: runs the public cai calls with the cai::cuda backend.
#include <cai/algorithms/gae.hpp>
#include <cai/algorithms/logprobs.hpp>
#include <cai/kernels/batched.hpp>
#include <cai/kernels/cuda_backend.cuh>

#include <cstring>
#include <vector>

#include "cuda_algorithms.hpp"

namespace {

/// A device buffer with copies in and out (synchronous: test code only).
template <class T>
struct dbuf {
  T* p = nullptr;
  std::size_t n = 0;
  explicit dbuf(std::size_t count) : n(count) {
    cai::detail::cuda_check(cudaMalloc(&p, (n ? n : 1) * sizeof(T)), "cuda_algorithms", "cudaMalloc");
  }
  template <class U>
  explicit dbuf(const std::vector<U>& v) : dbuf(v.size()) {
    static_assert(sizeof(U) == sizeof(T));
    cai::detail::cuda_check(cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice), "cuda_algorithms", "cudaMemcpy");
  }
  dbuf(const dbuf&) = delete;
  dbuf& operator=(const dbuf&) = delete;
  ~dbuf() { cudaFree(p); }
  template <class U = T>
  std::vector<U> host() const {
    std::vector<U> v(n);
    cai::detail::cuda_check(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "cuda_algorithms", "cudaMemcpy");
    return v;
  }
};

template <class T, std::size_t R>
cai::tensor_view<T, R, cai::device_space> dview(T* p, std::array<std::int64_t, R> e) {
  return cai::tensor_view<T, R, cai::device_space>(p, e);
}

/// Calls f(logits device view (N, V) or (B, T, V), targets, mask view or no_mask) for the case's element type.
template <class F>
void with_inputs(const cai_test::logprob_case& c, F&& f) {
  auto run = [&](auto tag, const auto& host_bits) {
    using T = decltype(tag);
    dbuf<T> logits(host_bits.size() + static_cast<std::size_t>(c.offset));
    cai::detail::cuda_check(cudaMemcpy(logits.p + c.offset, host_bits.data(), host_bits.size() * sizeof(T),
                                       cudaMemcpyHostToDevice),
                            "cuda_algorithms", "cudaMemcpy");
    dbuf<std::int64_t> targets(c.targets);
    dbuf<std::uint8_t> mask(c.mask);
    const T* lp = logits.p + c.offset;
    if (c.B == 0) {
      auto L = dview<const T, 2>(lp, {c.N, c.V});
      auto Y = dview<const std::int64_t, 1>(targets.p, {c.N});
      if (c.mask.empty()) f(L, Y, cai::no_mask);
      else f(L, Y, dview<const std::uint8_t, 1>(mask.p, {c.N}));
    } else {
      const std::int64_t T_ = c.N / c.B;
      auto L = dview<const T, 3>(lp, {c.B, T_, c.V});
      auto Y = dview<const std::int64_t, 2>(targets.p, {c.B, T_});
      if (c.mask.empty()) f(L, Y, cai::no_mask);
      else f(L, Y, dview<const std::uint8_t, 2>(mask.p, {c.B, T_}));
    }
  };
  switch (c.type) {
    case cai_test::logit_type::f32: run(float{}, c.f32); break;
    case cai_test::logit_type::bf16: run(cai::bfloat16{}, c.h16); break;
    case cai_test::logit_type::f16: run(cai::float16{}, c.h16); break;
  }
}

/// Output views shaped like the targets: (N) or (B, T), and (.., 3) for the saved statistics.
template <std::size_t R>
auto out_views(const cai_test::logprob_case& c, float* logp, float* ent, float* saved) {
  if constexpr (R == 1) {
    return cai::logprob_outputs<1, cai::device_space>{dview<float, 1>(logp, {c.N}), dview<float, 1>(ent, {c.N}),
                                                      dview<float, 2>(saved, {c.N, 3})};
  } else {
    const std::int64_t T_ = c.N / c.B;
    return cai::logprob_outputs<2, cai::device_space>{dview<float, 2>(logp, {c.B, T_}), dview<float, 2>(ent, {c.B, T_}),
                                                      dview<float, 3>(saved, {c.B, T_, 3})};
  }
}

template <class G>
std::vector<float> widen(const dbuf<G>& d) {
  const auto v = d.host();
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    if constexpr (std::is_same_v<G, float>) out[i] = v[i];
    else out[i] = v[i].to_float();
  }
  return out;
}

}  // namespace

namespace cai_test {

logprob_device_result device_logprobs_on(const cai::cuda& gpu, const logprob_case& c) {
  logprob_device_result r;
  dbuf<float> logp(c.N), ent(c.N), saved(3 * c.N);
  with_inputs(c, [&](const auto& L, const auto& Y, const auto& M) {
    constexpr std::size_t R = std::remove_cvref_t<decltype(Y)>::rank;
    const auto s = cai::token_logprobs(gpu, L, Y, M, out_views<R>(c, logp.p, ent.p, saved.p), {.temperature = c.temperature});
    r.deferred = s.deferred;
    const cai::cuda_report rep = gpu.synchronize("device_logprobs");
    r.scored_rows = rep.scored_rows;
    r.nonfinite_rows = rep.nonfinite_rows;
  });
  r.logp = logp.host();
  r.entropy = ent.host();
  r.saved = saved.host();
  return r;
}

logprob_device_result device_logprobs(const logprob_case& c) { return device_logprobs_on(cai::cuda{}, c); }

std::int64_t device_logprobs_after_error(const logprob_case& bad, const logprob_case& good) {
  const cai::cuda gpu;
  try {
    device_logprobs_on(gpu, bad);
    return -1;
  } catch (const cai::invalid_argument&) {
  }
  return device_logprobs_on(gpu, good).scored_rows;
}

std::vector<float> device_logprobs_backward(const logprob_case& c, const std::vector<float>& dlogp,
                                            const std::vector<float>& dentropy, bool with_saved, logit_type grad_type) {
  dbuf<float> logp(c.N), ent(c.N), saved(3 * c.N), g(dlogp), h(dentropy);
  const cai::cuda gpu;
  std::vector<float> out;
  with_inputs(c, [&](const auto& L, const auto& Y, const auto& M) {
    constexpr std::size_t R = std::remove_cvref_t<decltype(Y)>::rank;
    const auto outs = out_views<R>(c, logp.p, ent.p, saved.p);
    if (with_saved) cai::token_logprobs(gpu, L, Y, M, outs, {.temperature = c.temperature});
    const cai::logprob_grads<R, cai::device_space> grads{
        cai::tensor_view<const float, R, cai::device_space>(g.p, outs.logp.extents()),
        cai::tensor_view<const float, R, cai::device_space>(h.p, outs.logp.extents()),
        with_saved ? cai::tensor_view<const float, R + 1, cai::device_space>(outs.saved)
                   : cai::tensor_view<const float, R + 1, cai::device_space>{}};
    auto run = [&](auto tag) {
      using G = decltype(tag);
      dbuf<G> dl(static_cast<std::size_t>(L.size()));
      cai::token_logprobs_backward(gpu, L, Y, M, grads, cai::tensor_view<G, R + 1, cai::device_space>(dl.p, L.extents()),
                                   {.temperature = c.temperature});
      gpu.synchronize("device_logprobs_backward");
      out = widen(dl);
    };
    switch (grad_type) {
      case logit_type::f32: run(float{}); break;
      case logit_type::bf16: run(cai::bfloat16{}); break;
      case logit_type::f16: run(cai::float16{}); break;
    }
  });
  return out;
}

ppo_epilogue_result device_logprobs_ppo(const logprob_case& c, const std::vector<float>& old_logp,
                                        const std::vector<float>& advantages, float weight) {
  dbuf<float> logp(c.N), dlogp(c.N), loss(c.N), o(old_logp), a(advantages);
  const cai::cuda gpu;
  with_inputs(c, [&](const auto& L, const auto& Y, const auto& M) {
    constexpr std::size_t R = std::remove_cvref_t<decltype(Y)>::rank;
    if constexpr (R == 1) {
      gpu.token_logprobs_ppo(L, Y, M, {.logp = dview<float, 1>(logp.p, {c.N})},
                             cai::ppo_epilogue<1>{.old_logp = dview<const float, 1>(o.p, {c.N}),
                                                  .advantages = dview<const float, 1>(a.p, {c.N}),
                                                  .dlogp = dview<float, 1>(dlogp.p, {c.N}),
                                                  .loss = dview<float, 1>(loss.p, {c.N}),
                                                  .weight = weight});
      gpu.synchronize("device_logprobs_ppo");
    }
  });
  return {logp.host(), dlogp.host(), loss.host()};
}

gae_device_result device_gae(const gae_case& c) {
  const cai::cuda gpu;
  gae_device_result r;
  auto run = [&](auto tag) {
    using R = decltype(tag);
    const std::size_t n = c.rewards.size();
    std::vector<R> rw(c.rewards.begin(), c.rewards.end()), vv(c.values.begin(), c.values.end()),
        bs(c.bootstrap.begin(), c.bootstrap.end());
    dbuf<R> drw(rw), dvv(vv), dbs(bs), adv(n), ret(n);
    dbuf<std::uint8_t> dm(c.mask);
    dbuf<std::int64_t> dcu(c.cu);
    const auto rewards = dview<const R, 2>(drw.p, {c.B, c.T});
    const auto values = dview<const R, 2>(dvv.p, {c.B, c.T});
    const auto mask = dview<const std::uint8_t, 2>(dm.p, {c.B, c.T});
    const cai::tensor_view<const R, 1, cai::device_space> boot =
        c.bootstrap.empty() ? cai::tensor_view<const R, 1, cai::device_space>{}
                            : dview<const R, 1>(dbs.p, {static_cast<std::int64_t>(c.bootstrap.size())});
    const cai::tensor_view<const std::int64_t, 1, cai::device_space> cu =
        c.cu.empty() ? cai::tensor_view<const std::int64_t, 1, cai::device_space>{}
                     : dview<const std::int64_t, 1>(dcu.p, {static_cast<std::int64_t>(c.cu.size())});
    const auto A = dview<R, 2>(adv.p, {c.B, c.T});
    const auto G = dview<R, 2>(ret.p, {c.B, c.T});
    auto call = [&](const auto& m) {
      if (c.returns_only)
        cai::discounted_returns(gpu, rewards, m, G, {.gamma = c.gamma, .bootstrap_values = boot, .cu_seqlens = cu});
      else
        cai::gae(gpu, rewards, values, m, {.advantages = A, .returns = G},
                 {.gamma = c.gamma, .lambda = c.lambda, .bootstrap_values = boot, .cu_seqlens = cu});
    };
    if (c.mask.empty()) call(cai::no_mask);
    else call(mask);
    gpu.synchronize("device_gae");
    const auto a = adv.host(), g = ret.host();
    r.advantages.assign(a.begin(), a.end());
    r.returns.assign(g.begin(), g.end());
  };
  if (c.fp32) run(float{});
  else run(double{});
  return r;
}

batched_device_result device_batched(const batched_case& c) {
  const cai::cuda gpu;
  const auto pol = gpu.policy();
  batched_device_result r;
  const cai::row_layout L{c.B, c.T, nullptr};
  dbuf<double> x(c.x), scores(c.scores), pc(c.pc), pr(c.pr), rc(c.rc), rr(c.rr), lp(c.logp), olp(c.old_logp), adv(c.adv);
  dbuf<std::uint8_t> mask(c.mask);
  dbuf<cai::moments> rows(static_cast<std::size_t>(c.B)), all(1);
  cai::batched::row_moments(pol, cai::batched::rows_of<const double>{x.p, c.T},
                            cai::batched::rows_of<const std::uint8_t>{mask.p, c.T}, L, rows.p);
  cai::batched::fold_moments(pol, rows.p, c.B, all.p);
  dbuf<double> scratch(static_cast<std::size_t>(cai::batched::group_advantages_scratch)), a(c.scores.size());
  cai::batched::group_advantages(pol, cai::adv::grpo{}, scores.p, static_cast<std::int64_t>(c.scores.size()), c.G,
                                 scratch.p, cai::batched::group_advantages_scratch, a.p);
  const auto n = static_cast<std::int64_t>(c.pc.size());
  dbuf<double> pscratch(static_cast<std::size_t>(cai::batched::pair_loss_scratch(n))), ptotal(6), pdc(c.pc.size());
  cai::batched::pair_loss(pol, cai::dpo::sigmoid{.beta = 0.1},
                          cai::batched::pair_batch<double>{pc.p, pr.p, rc.p, rr.p, nullptr, nullptr, nullptr, n},
                          cai::batched::pair_outputs<double>{pdc.p, nullptr, nullptr, nullptr, nullptr, ptotal.p},
                          pscratch.p, cai::batched::pair_loss_scratch(n));
  dbuf<double> sscratch(static_cast<std::size_t>(cai::batched::surrogate_loss_scratch(c.B))), stotal(3), sg(c.logp.size());
  const cai::batched::token_batch<double> tb{{lp.p, c.T}, {olp.p, c.T}, {adv.p, c.T}, {mask.p, c.T}, L};
  cai::batched::surrogate_loss(pol, cai::pg::ppo_clip{}, cai::agg::token_mean{}, 20.0, tb,
                               cai::batched::rows_of<double>{sg.p, c.T}, stotal.p, sscratch.p,
                               cai::batched::surrogate_loss_scratch(c.B));
  dbuf<double> btotal(6), bdc(c.pc.size()), bscratch(c.pc.size());
  cai::batched::bradley_terry(pol, cai::batched::reward_pairs<double>{pc.p, pr.p, nullptr, nullptr, n},
                              cai::bradley_terry_options{.center_coef = 0.01}, bdc.p, nullptr, nullptr, btotal.p,
                              bscratch.p, n);
  gpu.synchronize("device_batched");
  r.bt_total = btotal.host();
  r.bt_dchosen = bdc.host();
  for (const cai::moments& m : rows.host()) {
    r.row_count.push_back(m.count);
    r.row_mean.push_back(m.mean);
    r.row_m2.push_back(m.m2);
  }
  const cai::moments m = all.host()[0];
  r.count = m.count;
  r.mean = m.mean;
  r.m2 = m.m2;
  r.grpo = a.host();
  r.pair_total = ptotal.host();
  r.pair_dchosen = pdc.host();
  r.surrogate_total = stotal.host();
  r.surrogate_dlogp = sg.host();
  return r;
}

void device_logprobs_with_host_pointer() {
  std::vector<float> host_logits(8, 0.0f);
  dbuf<std::int64_t> targets(std::vector<std::int64_t>{0, 1});
  dbuf<float> logp(2);
  cai::token_logprobs(cai::cuda{}, dview<const float, 2>(host_logits.data(), {2, 4}),
                      dview<const std::int64_t, 1>(targets.p, {2}), cai::no_mask,
                      {.logp = dview<float, 1>(logp.p, {2})});
}

void device_logprobs_with_misaligned_logits() {
  dbuf<float> logits(9);
  dbuf<std::int64_t> targets(std::vector<std::int64_t>{0, 1});
  dbuf<float> logp(2);
  const auto* odd = reinterpret_cast<const float*>(reinterpret_cast<const char*>(logits.p) + 2);
  cai::token_logprobs(cai::cuda{}, dview<const float, 2>(odd, {2, 4}), dview<const std::int64_t, 1>(targets.p, {2}),
                      cai::no_mask, {.logp = dview<float, 1>(logp.p, {2})});
}

}  // namespace cai_test
