// benchmarks/logprobs.cpp — cai_bench_logprobs: the fused per-token log-prob + entropy kernel
// (cai::token_logprobs and cai::token_logprobs_backward) on the host, against PyTorch, with two rooflines.
//
// What is measured, for logits (N, V) (fp32, and bf16), int32 targets (N), no mask, temperature 1:
//   logprobs_fwd          cai: token_logprobs(.logp)               peer: torch.log_softmax(x, -1).gather(-1, idx)
//   logprobs_fwd_entropy  cai: token_logprobs(.logp, .entropy)     peer: log_softmax, gather, -(p * logp).sum(-1)
//                         with p = logp.exp()
//   logprobs_bwd          cai: token_logprobs(.logp, .entropy, .saved) + token_logprobs_backward(dlogp = 1,
//                         dentropy = 1, saved) into a separate dlogits buffer of the logits' dtype;
//                         peer: autograd of logp.gather(..).sum() + entropy.sum().
//                         cai_ms / peer_ms are forward + backward on both sides ("mode": "fwd+bwd");
//                         cai_bwd_only_ms / peer_bwd_only_ms are token_logprobs_backward / loss.backward() alone.
// Every time is the median of several repetitions (--reps, at least --min-reps, fewer only once --budget-s is
// spent) after --warmup untimed runs, for cai and for the peer alike (the peer warms up on its first chunk of
// rows, see peer_torch.py).
//
// How: for each shape and dtype the program first launches the PyTorch peer (benchmarks/peer_torch.py, run by
// CAI_BENCH_PYTHON = /usr/bin/python3) through popen, which generates its own torch.randn tensor of the same
// shape and prints its timings as JSON lines; only then does it allocate and fill its own logits (so the two
// processes never hold their (N, V) buffers at the same time: < 12 GB at the largest shape), and times cai with
// cai::host{} (1 thread) and cai::threaded_host(2) (the peer runs with torch.set_num_threads of the same count).
// Each output line joins both numbers. Without torch the peer fields are null. The peer's times include
// PyTorch's allocation (and page faulting) of its (N, V) temporaries on every call, as in real use; cai's
// buffers (logits, and dlogits for the backward) are allocated and faulted in once, before anything is timed.
//
// Rooflines, probes over the same logits with the same flags and the same backend (so threads = 2 lines use
// 2-thread probes), chunked by rows like the kernel:
//   read_ms  a vectorised read: the sum of every element with cai::simd::f32v loads (4 accumulators)
//   exp_ms   a vectorised exp-and-sum: sum of cai::simd::exp_nonpos(x) over every element (the exp the kernel
//            evaluates; its cost does not depend on the values) — the compute floor of a kernel that must evaluate
//            one exp per logit
//   rw_ms    (bwd only) a streaming read-logits / write-dlogits pass: dx = 0.5 * x
//   read_fraction          = read_ms / cai_ms            (bwd: (read_ms + rw_ms) / cai_ms: its fwd reads the
//                            logits once and its bwd reads them again and writes dlogits)
//   exp_roofline_fraction  = exp_ms / cai_ms             (bwd: 2 exp_ms / cai_ms: one exp per logit per pass)
// A fraction near 1 means the kernel runs at that floor. ratio = peer_ms / cai_ms (> 1: cai is faster).
// speedup_vs_1thread (threads > 1 lines) = cai_ms at 1 thread / cai_ms at this thread count.
//
// Shared machines: the *_ms above are medians of wall time, as asked. On a VM whose vCPUs the hypervisor steals
// (cai_steal / peer_steal: the machine-wide steal fraction during the timed repetitions), wall time is noisy, so
// each line also carries the fastest repetition (cai_min_ms, peer_min_ms, ratio_min) and the median process CPU
// time (cai_cpu_ms, peer_cpu_ms, ratio_cpu, *_fraction_cpu), which the kernel accounts without steal time. CPU
// time sums all threads: at threads = 1 it is the steal-free single-thread measure; at threads > 1 it measures
// total work (and includes any spin-waiting of torch's OpenMP threads), and cpu_ms / ms shows how many threads
// really ran at once: a threads = 2 line with cai_cpu_ms ~ cai_ms (or peer_cpu_ms ~ peer_ms) had only one core,
// the other being busy with another process, and its speed-up and ratio do not measure parallel scaling.
//
// Output: a first line {"flags": ...} with the compiler flags the program was built with (CAI_BENCH_FLAGS, set by
// benchmarks/CMakeLists.txt), then one JSON line per (bench, shape, dtype, threads) on stdout. Progress goes to
// stderr. Options: --quick (N = 2048 only), --reps, --min-reps, --warmup, --budget-s, --threads 1,2,
// --dtypes fp32,bf16, --N 2048,8192, --V 32000,128256,151936, --benches ..., --no-peer, --python, --peer-script.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <sys/wait.h>

#include <cai/algorithms/logprobs.hpp>
#include <cai/core/half.hpp>
#include <cai/core/host.hpp>
#include <cai/core/simd.hpp>
#include <cai/core/tensor_view.hpp>

#ifdef __FAST_MATH__
#error "cai_bench_logprobs must not be built with -ffast-math (DESIGN.md: hot loops are vectorised by cai's own code)"
#endif
#if !CAI_HAS_VECTOR_EXT
#error "cai_bench_logprobs needs GNU vector extensions (cai::simd)"
#endif
#ifndef CAI_BENCH_FLAGS
#define CAI_BENCH_FLAGS "unknown (CAI_BENCH_FLAGS not defined)"
#endif
#ifndef CAI_BENCH_GIT
#define CAI_BENCH_GIT "unknown"
#endif
#ifndef CAI_BENCH_PYTHON
#define CAI_BENCH_PYTHON "/usr/bin/python3"
#endif
#ifndef CAI_BENCH_PEER_SCRIPT
#define CAI_BENCH_PEER_SCRIPT "benchmarks/peer_torch.py"
#endif

namespace {

using clock_type = std::chrono::steady_clock;

// ----- options -------------------------------------------------------------------------------------------------

struct options {
  std::vector<std::int64_t> ns{2048, 8192};
  std::vector<std::int64_t> vs{32000, 128256, 151936};
  std::vector<std::string> dtypes{"fp32", "bf16"};
  std::vector<unsigned> threads{1, 2};
  std::vector<std::string> benches{"logprobs_fwd", "logprobs_fwd_entropy", "logprobs_bwd"};
  int reps = 5;
  int min_reps = 3;
  int warmup = 1;
  double budget_s = 8.0;
  bool peer = true;
  std::string python = CAI_BENCH_PYTHON;
  std::string peer_script = CAI_BENCH_PEER_SCRIPT;
};

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    const std::size_t end = std::min(s.find(sep, start), s.size());
    if (end > start) out.emplace_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

template <class I>
std::vector<I> split_ints(std::string_view s) {
  std::vector<I> out;
  for (const auto& t : split(s, ',')) out.push_back(static_cast<I>(std::stoll(t)));
  return out;
}

[[noreturn]] void usage(const char* argv0, int status) {
  std::fprintf(status ? stderr : stdout,
               "usage: %s [--quick] [--reps N] [--min-reps N] [--warmup N] [--budget-s S] [--threads 1,2]\n"
               "          [--dtypes fp32,bf16] [--N 2048,8192] [--V 32000,128256,151936]\n"
               "          [--benches logprobs_fwd,logprobs_fwd_entropy,logprobs_bwd] [--no-peer]\n"
               "          [--python PATH] [--peer-script PATH]\n",
               argv0);
  std::exit(status);
}

options parse_options(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(argv[0], 2);
      return argv[++i];
    };
    if (a == "--quick") o.ns = {2048};
    else if (a == "--reps") o.reps = std::stoi(value());
    else if (a == "--min-reps") o.min_reps = std::stoi(value());
    else if (a == "--warmup") o.warmup = std::stoi(value());
    else if (a == "--budget-s") o.budget_s = std::stod(value());
    else if (a == "--threads") o.threads = split_ints<unsigned>(value());
    else if (a == "--dtypes") o.dtypes = split(value(), ',');
    else if (a == "--N") o.ns = split_ints<std::int64_t>(value());
    else if (a == "--V") o.vs = split_ints<std::int64_t>(value());
    else if (a == "--benches") o.benches = split(value(), ',');
    else if (a == "--no-peer") o.peer = false;
    else if (a == "--python") o.python = value();
    else if (a == "--peer-script") o.peer_script = value();
    else if (a == "--help" || a == "-h") usage(argv[0], 0);
    else usage(argv[0], 2);
  }
  o.reps = std::max(o.reps, 1);
  o.min_reps = std::clamp(o.min_reps, 1, o.reps);
  for (const auto& d : o.dtypes)
    if (d != "fp32" && d != "bf16") usage(argv[0], 2);
  for (const auto& b : o.benches)
    if (b != "logprobs_fwd" && b != "logprobs_fwd_entropy" && b != "logprobs_bwd") usage(argv[0], 2);
  return o;
}

// ----- small utilities -----------------------------------------------------------------------------------------

std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out + "\"";
}

std::string json_number(std::optional<double> v) {
  if (!v || !std::isfinite(*v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", *v);
  return buf;
}

/// Builds one flat JSON object, keys in insertion order.
class json_line {
 public:
  json_line& str(std::string_view k, std::string_view v) { return raw(k, json_string(v)); }
  json_line& num(std::string_view k, std::optional<double> v) { return raw(k, json_number(v)); }
  json_line& raw(std::string_view k, std::string_view v) {
    body_ += body_.empty() ? "{" : ", ";
    body_ += json_string(k) + ": " + std::string(v);
    return *this;
  }
  std::string done() const { return body_ + "}"; }

 private:
  std::string body_;
};

/// The number after "key": in a flat JSON line (what peer_torch.py prints); nullopt if absent or null.
std::optional<double> json_get_number(const std::string& line, std::string_view key) {
  const std::string pat = "\"" + std::string(key) + "\":";
  const std::size_t at = line.find(pat);
  if (at == std::string::npos) return std::nullopt;
  const char* p = line.c_str() + at + pat.size();
  char* end = nullptr;
  const double v = std::strtod(p, &end);
  if (end == p) return std::nullopt;
  return v;
}
std::optional<std::string> json_get_string(const std::string& line, std::string_view key) {
  const std::string pat = "\"" + std::string(key) + "\": \"";
  const std::size_t at = line.find(pat);
  if (at == std::string::npos) return std::nullopt;
  const std::size_t begin = at + pat.size();
  std::size_t end = begin;
  while (end < line.size() && line[end] != '"') end += line[end] == '\\' ? 2 : 1;
  return line.substr(begin, end - begin);
}

std::string shell_quote(std::string_view s) {
  std::string out = "'";
  for (const char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

double load_average() {
  std::ifstream f("/proc/loadavg");
  double v = -1.0;
  f >> v;
  return v;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      return colon == std::string::npos ? line : line.substr(std::min(colon + 2, line.size()));
    }
  return "unknown";
}

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// Process CPU time (all threads). The kernel excludes the hypervisor's steal time from it, so on a shared VM it
/// is the steadier measure of single-threaded work.
double process_cpu_ms() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return 1e3 * static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_nsec);
}

/// Machine-wide jiffies from the first line of /proc/stat: all of them, and those stolen by the hypervisor.
struct cpu_jiffies {
  double total = 0.0, steal = 0.0;
};
cpu_jiffies read_cpu_jiffies() {
  std::ifstream f("/proc/stat");
  std::string cpu;
  f >> cpu;
  cpu_jiffies j;
  for (int k = 0; k < 8; ++k) {  // user nice system idle iowait irq softirq steal
    double v = 0.0;
    if (!(f >> v)) break;
    j.total += v;
    if (k == 7) j.steal = v;
  }
  return j;
}
double steal_fraction(const cpu_jiffies& a, const cpu_jiffies& b) {
  const double total = b.total - a.total;
  return total > 0.0 ? (b.steal - a.steal) / total : 0.0;
}

struct timing {
  double ms = 0.0;       ///< median wall time of one call of f
  double min_ms = 0.0;   ///< fastest wall time
  double cpu_ms = 0.0;   ///< median process CPU time (all threads) of one call
  double part_ms = 0.0;  ///< median of what f returned (a sub-interval it timed itself, in ms)
  double steal = 0.0;    ///< fraction of the machine's CPU time stolen by the hypervisor during the timed calls
  int reps = 0;
};

/// Runs f `warmup` times untimed, then between min_reps and reps timed times (stopping early only once
/// budget_s is spent); f returns the length of a sub-interval it timed itself (or 0).
template <class F>
timing measure(const options& o, F&& f) {
  for (int i = 0; i < o.warmup; ++i) (void)f();
  std::vector<double> totals, cpus, parts;
  const auto start = clock_type::now();
  const cpu_jiffies j0 = read_cpu_jiffies();
  while (static_cast<int>(totals.size()) < o.reps) {
    const double c0 = process_cpu_ms();
    const auto t0 = clock_type::now();
    const double part = f();
    totals.push_back(ms_since(t0));
    cpus.push_back(process_cpu_ms() - c0);
    parts.push_back(part);
    if (static_cast<int>(totals.size()) >= o.min_reps && ms_since(start) > 1e3 * o.budget_s) break;
  }
  const cpu_jiffies j1 = read_cpu_jiffies();
  return {median(totals), *std::min_element(totals.begin(), totals.end()), median(cpus), median(parts),
          steal_fraction(j0, j1), static_cast<int>(totals.size())};
}

/// 64-byte aligned, uninitialised storage for n elements of a trivial type (freed with std::free); none for n = 0.
template <class T>
struct buffer {
  struct free_deleter {
    void operator()(T* p) const noexcept { std::free(p); }
  };
  std::unique_ptr<T[], free_deleter> ptr;
  std::int64_t n = 0;

  explicit buffer(std::int64_t count) : n(count) {
    if (count <= 0) return;
    std::size_t bytes = static_cast<std::size_t>(count) * sizeof(T);
    bytes = (bytes + 63) / 64 * 64;
    ptr.reset(static_cast<T*>(std::aligned_alloc(64, std::max<std::size_t>(bytes, 64))));
    if (!ptr) {
      std::fprintf(stderr, "cai_bench_logprobs: cannot allocate %zu bytes\n", bytes);
      std::exit(1);
    }
  }
  T* get() const noexcept { return ptr.get(); }
};

volatile float g_sink = 0.0f;  // keeps the probes' sums alive

// ----- data ----------------------------------------------------------------------------------------------------

std::uint64_t splitmix64(std::uint64_t& s) noexcept {
  std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// Approximately standard normal values (Irwin-Hall of four 16-bit uniforms; like torch.randn, the values only
/// need to be realistic logits, not exactly Gaussian), rows filled in parallel.
template <class T>
void fill_logits(const cai::threaded_host& pool, T* x, std::int64_t N, std::int64_t V) {
  pool.bulk(N, [&](std::int64_t r) {
    std::uint64_t s = 0x1234567ull + static_cast<std::uint64_t>(r) * 0x9E3779B97F4A7C15ull;
    T* row = x + r * V;
    constexpr float scale = 1.7320508f / 65536.0f;  // sqrt(12 / 4) per unit of the sum
    for (std::int64_t j = 0; j < V; ++j) {
      const std::uint64_t u = splitmix64(s);
      const auto sum = static_cast<float>((u & 0xffff) + ((u >> 16) & 0xffff) + ((u >> 32) & 0xffff) + (u >> 48));
      row[j] = cai::from_float<T>((sum - 2.0f * 65535.0f) * scale);
    }
  });
}

// ----- probes --------------------------------------------------------------------------------------------------

/// Rows per probe chunk, as the kernel cuts its work (about 64k logits per chunk).
std::int64_t probe_grain(std::int64_t V) { return V >= 65536 ? 1 : 65536 / V; }

template <class B, class F>
float probe_rows(const B& b, std::int64_t N, std::int64_t V, F&& body) {
  const std::int64_t grain = probe_grain(V);
  const std::int64_t chunks = (N + grain - 1) / grain;
  std::vector<float> partial(static_cast<std::size_t>(chunks));
  b.bulk(chunks, [&](std::int64_t c) {
    const std::int64_t r0 = c * grain, r1 = std::min(N, r0 + grain);
    partial[static_cast<std::size_t>(c)] = body(r0 * V, (r1 - r0) * V);
  });
  float total = 0.0f;
  for (const float p : partial) total += p;
  return total;
}

template <class T>
float read_sum(const T* p, std::int64_t n) noexcept {
  using namespace cai::simd;
  f32v a0 = splat(0.0f), a1 = a0, a2 = a0, a3 = a0;
  std::int64_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    a0 += load(p + i);
    a1 += load(p + i + lanes);
    a2 += load(p + i + 2 * lanes);
    a3 += load(p + i + 3 * lanes);
  }
  for (; i + lanes <= n; i += lanes) a0 += load(p + i);
  float s = reduce_add((a0 + a1) + (a2 + a3));
  for (; i < n; ++i) s += cai::to_float(p[i]);
  return s;
}

template <class T>
float exp_sum(const T* p, std::int64_t n) noexcept {
  using namespace cai::simd;
  f32v a0 = splat(0.0f), a1 = a0, a2 = a0, a3 = a0;
  std::int64_t i = 0;
  for (; i + 4 * lanes <= n; i += 4 * lanes) {
    a0 += cai::simd::exp_nonpos(load(p + i));
    a1 += cai::simd::exp_nonpos(load(p + i + lanes));
    a2 += cai::simd::exp_nonpos(load(p + i + 2 * lanes));
    a3 += cai::simd::exp_nonpos(load(p + i + 3 * lanes));
  }
  for (; i + lanes <= n; i += lanes) a0 += cai::simd::exp_nonpos(load(p + i));
  float s = reduce_add((a0 + a1) + (a2 + a3));
  for (; i < n; ++i) s += cai::simd::exp_nonpos(cai::to_float(p[i]));
  return s;
}

template <class T>
float scale_copy(const T* x, T* dx, std::int64_t n) noexcept {
  using namespace cai::simd;
  const f32v half = splat(0.5f);
  std::int64_t i = 0;
  for (; i + lanes <= n; i += lanes) store(dx + i, load(x + i) * half);
  for (; i < n; ++i) dx[i] = cai::from_float<T>(0.5f * cai::to_float(x[i]));
  return cai::to_float(dx[0]);
}

// ----- the PyTorch peer ----------------------------------------------------------------------------------------

struct peer_result {
  std::optional<double> ms, min_ms, cpu_ms, bwd_only_ms, steal;
  int reps = 0;
};

struct peer_report {
  std::map<std::pair<std::string, unsigned>, peer_result> by_case;  // (bench, threads)
  std::string name;   // "torch 1.13.0" or empty
  std::string error;  // why there are no numbers, if there are none
  std::optional<double> max_rss_gb;
  std::optional<double> chunk_rows;
};

peer_report run_peer(const options& o, std::int64_t N, std::int64_t V, const std::string& dtype) {
  peer_report rep;
  if (!o.peer) {
    rep.error = "disabled (--no-peer)";
    return rep;
  }
  std::string threads, benches;
  for (const unsigned t : o.threads) threads += (threads.empty() ? "" : ",") + std::to_string(t);
  for (const auto& b : o.benches) benches += (benches.empty() ? "" : ",") + b;
  char budget[32];
  std::snprintf(budget, sizeof budget, "%g", o.budget_s);
  const std::string cmd = shell_quote(o.python) + " " + shell_quote(o.peer_script) + " --V " + std::to_string(V) +
                          " --N " + std::to_string(N) + " --threads " + threads + " --dtype " + dtype +
                          " --benches " + benches + " --reps " + std::to_string(o.reps) + " --min-reps " +
                          std::to_string(o.min_reps) + " --warmup " + std::to_string(o.warmup) + " --budget-s " +
                          budget;
  std::fprintf(stderr, "[cai_bench_logprobs] peer: %s\n", cmd.c_str());
  std::fflush(stderr);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) {
    rep.error = "popen failed";
    return rep;
  }
  std::string line;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, pipe)) {
    line += buf;
    if (line.empty() || line.back() != '\n') continue;
    line.pop_back();
    if (const auto err = json_get_string(line, "error")) rep.error = *err;
    if (const auto name = json_get_string(line, "peer")) {
      rep.name = *name;
      rep.max_rss_gb = json_get_number(line, "peer_max_rss_gb");
      rep.chunk_rows = json_get_number(line, "chunk_rows");
    }
    const auto bench = json_get_string(line, "bench");
    const auto th = json_get_number(line, "threads");
    if (bench && th) {
      peer_result r;
      r.ms = json_get_number(line, "peer_ms");
      r.min_ms = json_get_number(line, "peer_min_ms");
      r.cpu_ms = json_get_number(line, "peer_cpu_ms");
      r.bwd_only_ms = json_get_number(line, "peer_bwd_only_ms");
      r.steal = json_get_number(line, "peer_steal");
      r.reps = static_cast<int>(json_get_number(line, "peer_reps").value_or(0.0));
      rep.by_case[{*bench, static_cast<unsigned>(*th)}] = r;
    }
    line.clear();
  }
  const int status = pclose(pipe);
  if (rep.by_case.empty() && rep.error.empty())
    rep.error = "peer produced no timings (exit status " +
                std::to_string(status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : status) + ")";
  return rep;
}

// ----- one shape and dtype -------------------------------------------------------------------------------------

template <class T>
struct problem_data {
  std::int64_t N, V;
  buffer<T> x;
  buffer<std::int32_t> y;
  buffer<float> logp, entropy, saved, ones;
  buffer<T> dx;  // empty unless the backward is measured

  problem_data(std::int64_t n, std::int64_t v, bool with_backward)
      : N(n), V(v), x(n * v), y(n), logp(n), entropy(n), saved(3 * n), ones(n), dx(with_backward ? n * v : 0) {
    if (with_backward)  // fault the pages in before anything is timed
      std::memset(static_cast<void*>(dx.get()), 0, static_cast<std::size_t>(n * v) * sizeof(T));
    std::uint64_t s = 99;
    for (std::int64_t i = 0; i < n; ++i) {
      y.get()[i] = static_cast<std::int32_t>(splitmix64(s) % static_cast<std::uint64_t>(v));
      ones.get()[i] = 1.0f;
    }
  }
};

struct probe_times {
  timing read, exp, rw;
};

template <class T, class B>
probe_times run_probes(const options& o, const B& b, const problem_data<T>& d, bool with_rw) {
  probe_times p;
  const T* x = d.x.get();
  p.read = measure(o, [&] {
    g_sink = probe_rows(b, d.N, d.V, [&](std::int64_t off, std::int64_t n) { return read_sum(x + off, n); });
    return 0.0;
  });
  p.exp = measure(o, [&] {
    g_sink = probe_rows(b, d.N, d.V, [&](std::int64_t off, std::int64_t n) { return exp_sum(x + off, n); });
    return 0.0;
  });
  if (with_rw) {
    T* dx = d.dx.get();
    p.rw = measure(o, [&] {
      g_sink = probe_rows(b, d.N, d.V, [&](std::int64_t off, std::int64_t n) { return scale_copy(x + off, dx + off, n); });
      return 0.0;
    });
  }
  return p;
}

template <class T, class B>
timing run_cai(const options& o, const B& b, const problem_data<T>& d, const std::string& bench) {
  const std::int64_t N = d.N, V = d.V;
  const auto xv = cai::make_view(static_cast<const T*>(d.x.get()), {N, V});
  const auto yv = cai::make_view(static_cast<const std::int32_t*>(d.y.get()), {N});
  const auto logp = cai::make_view(d.logp.get(), {N});
  const auto ent = cai::make_view(d.entropy.get(), {N});
  const auto saved = cai::make_view(d.saved.get(), {N, 3});
  timing t;
  if (bench == "logprobs_fwd") {
    t = measure(o, [&] {
      (void)cai::token_logprobs(b, xv, yv, cai::no_mask, {.logp = logp});
      return 0.0;
    });
  } else if (bench == "logprobs_fwd_entropy") {
    t = measure(o, [&] {
      (void)cai::token_logprobs(b, xv, yv, cai::no_mask, {.logp = logp, .entropy = ent});
      return 0.0;
    });
  } else {
    const auto ones = cai::make_view(static_cast<const float*>(d.ones.get()), {N});
    const auto saved_in = cai::make_view(static_cast<const float*>(d.saved.get()), {N, 3});
    const auto dxv = cai::make_view(d.dx.get(), {N, V});
    t = measure(o, [&] {
      (void)cai::token_logprobs(b, xv, yv, cai::no_mask, {.logp = logp, .entropy = ent, .saved = saved});
      const auto t0 = clock_type::now();
      cai::token_logprobs_backward(b, xv, yv, cai::no_mask, {.dlogp = ones, .dentropy = ones, .saved = saved_in},
                                   dxv);
      return ms_since(t0);
    });
  }
  g_sink = d.logp.get()[0];
  return t;
}

std::optional<double> ratio_of(std::optional<double> num, double den) {
  if (!num || !(den > 0.0)) return std::nullopt;
  return *num / den;
}

template <class T>
void run_shape(const options& o, const cai::threaded_host& filler, std::int64_t N, std::int64_t V,
               const std::string& dtype) {
  const std::string shape = std::to_string(N) + " x " + std::to_string(V);
  std::fprintf(stderr, "[cai_bench_logprobs] %s %s\n", shape.c_str(), dtype.c_str());
  // The peer runs first, while this process holds no (N, V) buffer.
  const peer_report peer = run_peer(o, N, V, dtype);
  if (!peer.error.empty()) std::fprintf(stderr, "[cai_bench_logprobs] peer: %s\n", peer.error.c_str());

  const bool with_backward = std::find(o.benches.begin(), o.benches.end(), "logprobs_bwd") != o.benches.end();
  problem_data<T> d(N, V, with_backward);
  fill_logits(filler, d.x.get(), N, V);
  const double elems = static_cast<double>(N) * static_cast<double>(V);
  const double gbytes = elems * static_cast<double>(sizeof(T)) / 1e9;

  std::map<std::string, timing> one_thread;
  for (const unsigned threads : o.threads) {
    auto run_all = [&](const auto& backend) {
      std::fprintf(stderr, "[cai_bench_logprobs] cai, %u thread(s)\n", threads);
      const probe_times pt = run_probes(o, backend, d, with_backward);
      for (const auto& bench : o.benches) {
        const timing c = run_cai(o, backend, d, bench);
        const bool bwd = bench == "logprobs_bwd";
        if (threads == 1) one_thread[bench] = c;
        const auto it = peer.by_case.find({bench, threads});
        const peer_result pr = it == peer.by_case.end() ? peer_result{} : it->second;
        // The floors this bench is measured against: fwd reads the logits once and evaluates one exp per logit;
        // fwd+bwd reads them, then reads them again while writing dlogits, with one exp per logit per pass.
        const double read_floor = bwd ? pt.read.ms + pt.rw.ms : pt.read.ms;
        const double read_floor_cpu = bwd ? pt.read.cpu_ms + pt.rw.cpu_ms : pt.read.cpu_ms;
        const double passes = bwd ? 2.0 : 1.0;
        json_line j;
        j.str("bench", bench).str("shape", shape).str("dtype", dtype).num("threads", threads);
        j.num("cai_ms", c.ms).num("peer_ms", pr.ms).num("ratio", ratio_of(pr.ms, c.ms));
        j.num("read_fraction", read_floor / c.ms).num("exp_roofline_fraction", passes * pt.exp.ms / c.ms);
        if (threads != 1 && one_thread.count(bench)) {
          j.num("speedup_vs_1thread", one_thread[bench].ms / c.ms);
          j.num("speedup_vs_1thread_min", one_thread[bench].min_ms / c.min_ms);
        }
        if (bwd) {
          j.str("mode", "fwd+bwd");
          j.num("cai_bwd_only_ms", c.part_ms).num("peer_bwd_only_ms", pr.bwd_only_ms);
          j.num("ratio_bwd_only", ratio_of(pr.bwd_only_ms, c.part_ms));
          j.num("bwd_only_read_fraction", pt.rw.ms / c.part_ms);
          j.num("bwd_only_exp_roofline_fraction", pt.exp.ms / c.part_ms);
        }
        // The same comparisons on the fastest repetition and on CPU time (steal-free; all threads summed).
        j.num("cai_min_ms", c.min_ms).num("peer_min_ms", pr.min_ms).num("ratio_min", ratio_of(pr.min_ms, c.min_ms));
        j.num("cai_cpu_ms", c.cpu_ms).num("peer_cpu_ms", pr.cpu_ms).num("ratio_cpu", ratio_of(pr.cpu_ms, c.cpu_ms));
        j.num("read_fraction_cpu", read_floor_cpu / c.cpu_ms);
        j.num("exp_roofline_fraction_cpu", passes * pt.exp.cpu_ms / c.cpu_ms);
        j.num("read_ms", pt.read.ms).num("exp_ms", pt.exp.ms);
        if (bwd) j.num("rw_ms", pt.rw.ms);
        j.num("read_cpu_ms", pt.read.cpu_ms).num("exp_cpu_ms", pt.exp.cpu_ms);
        if (bwd) j.num("rw_cpu_ms", pt.rw.cpu_ms);
        j.num("read_gbps", gbytes / (pt.read.ms / 1e3)).num("cai_gelem_per_s", elems / (c.ms / 1e3) / 1e9);
        j.num("cai_reps", c.reps).num("peer_reps", pr.reps ? std::optional<double>(pr.reps) : std::nullopt);
        j.num("cai_steal", c.steal).num("peer_steal", pr.steal);
        j.str("peer", peer.name.empty() ? "none" : peer.name);
        if (!peer.error.empty()) j.str("peer_error", peer.error);
        j.num("peer_max_rss_gb", peer.max_rss_gb).num("peer_chunk_rows", peer.chunk_rows);
        j.num("loadavg1", load_average());
        std::printf("%s\n", j.done().c_str());
        std::fflush(stdout);
      }
    };
    if (threads <= 1) run_all(cai::host{});
    else run_all(cai::threaded_host(threads));
  }
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse_options(argc, argv);
  json_line flags;
  flags.str("flags", CAI_BENCH_FLAGS).str("compiler", __VERSION__).str("git", CAI_BENCH_GIT);
  flags.num("simd_lanes", cai::simd::lanes);
  flags.raw("fast_math", "false").str("cpu", cpu_model());
  flags.num("hardware_threads", std::thread::hardware_concurrency()).num("reps", o.reps);
  flags.num("min_reps", o.min_reps).num("warmup", o.warmup).num("budget_s", o.budget_s);
  flags.str("python", o.python).str("peer_script", o.peer_script);
  std::printf("%s\n", flags.done().c_str());
  std::fflush(stdout);

  const cai::threaded_host filler(0);
  for (const std::int64_t V : o.vs)
    for (const std::int64_t N : o.ns)
      for (const auto& dtype : o.dtypes) {
        if (dtype == "fp32") run_shape<float>(o, filler, N, V, dtype);
        else run_shape<cai::bfloat16>(o, filler, N, V, dtype);
      }
  return 0;
}
