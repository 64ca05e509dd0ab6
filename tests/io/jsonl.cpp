// Tests for cai/io/jsonl.hpp (and the progress line of cai/io/progress.hpp): append-only JSON Lines that survive a
// killed writer. Round trips with unicode and embedded newlines, a flush per record (seen by a second reader before
// the writer closes), a truncated last line reported and never passed on, open_for_resume cutting it (at every
// possible truncation point), a final record without its newline accepted and completed on resume, malformed
// complete lines naming file:line, missing files and blank lines.
#include <cai/io/jsonl.hpp>
#include <cai/io/progress.hpp>

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "../file_support.hpp"
#include "../support.hpp"

namespace {

namespace fs = std::filesystem;
using cai_test::slurp;

/// This file's temporary JSONL files.
struct temp_file : cai_test::temp_file {
  explicit temp_file(const std::string& stem) : cai_test::temp_file("jsonl", stem) {}
};
using json = nlohmann::json;



void put(const fs::path& p, const std::string& bytes, bool append = false) {
  std::ofstream out(p, std::ios::binary | (append ? std::ios::app : std::ios::trunc));
  out << bytes;
}

struct read_result {
  std::vector<json> records;
  std::vector<std::size_t> lines;
  cai::jsonl_scan scan;
};

read_result read_all(const fs::path& p) {
  read_result r;
  r.scan = cai::read_jsonl(p, [&](const json& j, std::size_t line) {
    r.records.push_back(j);
    r.lines.push_back(line);
  });
  return r;
}

std::size_t count_newlines(const std::string& s) {
  std::size_t n = 0;
  for (char ch : s) n += ch == '\n' ? 1 : 0;
  return n;
}

std::vector<json> sample_records() {
  return {
      {{"id", "p-1"}, {"text", "plain ascii"}},
      {{"id", "p-2"}, {"text", "h\xc3\xa9llo \xe2\x80\x94 \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x8e\x89"}},  // héllo — 世界 🎉
      {{"id", "p-3"}, {"text", "line one\nline two\r\n\n\nHuman: not a new record\n"}, {"tab", "a\tb"}},
      {{"id", "p-4"}, {"quotes", "say \"hi\" \\ back\\slash"}, {"nested", {{"list", {1, 2.5, "x", nullptr, true}}, {"empty", json::object()}}}},
      {{"id", "p-5"}, {"text", ""}, {"control", std::string("nul\x01" "bell\x07")}},
  };
}

}  // namespace

TEST_CASE("jsonl records round trip with unicode, embedded newlines and nested values, one line each", "[io]") {
  temp_file f("roundtrip");
  const auto recs = sample_records();
  {
    cai::jsonl_writer w(f.path);
    CHECK(w.path() == f.path);
    for (const auto& r : recs) w.write(r);
  }
  const std::string bytes = slurp(f.path);
  CHECK(count_newlines(bytes) == recs.size());  // newlines inside strings are escaped
  CHECK(bytes.back() == '\n');
  CHECK(bytes.find("\xe4\xb8\x96\xe7\x95\x8c") != std::string::npos);  // UTF-8 written as is, not \u-escaped
  const read_result r = read_all(f.path);
  CHECK(r.records == recs);
  CHECK(r.lines == std::vector<std::size_t>{1, 2, 3, 4, 5});
  CHECK(r.scan.records == recs.size());
  CHECK_FALSE(r.scan.truncated_tail);
  CHECK(r.scan.valid_bytes == bytes.size());
  // A second writer appends after the first one's records.
  {
    cai::jsonl_writer w(f.path);
    w.write({{"id", "p-6"}});
  }
  const read_result r2 = read_all(f.path);
  REQUIRE(r2.records.size() == recs.size() + 1);
  CHECK(r2.records.back() == json{{"id", "p-6"}});
}

TEST_CASE("every jsonl record is flushed when write returns, before the writer is closed", "[io]") {
  temp_file f("flush");
  const auto recs = sample_records();
  cai::jsonl_writer w(f.path);
  for (std::size_t i = 0; i < recs.size(); ++i) {
    w.write(recs[i]);
    // A second reader (another file description) sees the record right away.
    const read_result r = read_all(f.path);
    REQUIRE(r.records.size() == i + 1);
    CHECK(r.records.back() == recs[i]);
    CHECK_FALSE(r.scan.truncated_tail);
    const std::string bytes = slurp(f.path);
    CHECK(count_newlines(bytes) == i + 1);
    CHECK(r.scan.valid_bytes == bytes.size());
  }
  w.close();
  w.close();  // idempotent
  CHECK_THROWS_AS(w.write({{"id", "late"}}), cai::error);
}

TEST_CASE("a truncated last jsonl line is reported, not passed on, and open_for_resume cuts it before appending", "[io]") {
  temp_file f("truncated");
  {
    cai::jsonl_writer w(f.path);
    for (int i = 1; i <= 3; ++i) w.write({{"id", "p-" + std::to_string(i)}, {"text", "record\n" + std::to_string(i)}});
  }
  const auto good_size = fs::file_size(f.path);
  put(f.path, R"({"id": "p-4", "text": "half a reco)", true);  // a writer killed mid-record
  const read_result r = read_all(f.path);
  CHECK(r.records.size() == 3);
  CHECK(r.scan.records == 3);
  CHECK(r.scan.truncated_tail);
  CHECK(r.scan.valid_bytes == good_size);
  for (const auto& j : r.records) CHECK(j["id"] != "p-4");

  {
    cai::jsonl_writer w = cai::jsonl_writer::open_for_resume(f.path);
    CHECK(fs::file_size(f.path) == good_size);  // cut before anything is appended
    w.write({{"id", "p-4"}, {"text", "whole"}});
  }
  const read_result r2 = read_all(f.path);
  REQUIRE(r2.records.size() == 4);
  CHECK(r2.records[3] == json{{"id", "p-4"}, {"text", "whole"}});
  CHECK_FALSE(r2.scan.truncated_tail);
  CHECK(r2.scan.valid_bytes == fs::file_size(f.path));

  // Resuming a clean file changes nothing.
  const std::string before = slurp(f.path);
  { cai::jsonl_writer w = cai::jsonl_writer::open_for_resume(f.path); }
  CHECK(slurp(f.path) == before);
}

TEST_CASE("a jsonl file cut at any byte reads as its complete records and resumes cleanly", "[io]") {
  temp_file f("every_cut");
  std::string full;
  {
    cai::jsonl_writer w(f.path);
    w.write({{"id", "a"}, {"v", 12345}});
    w.write({{"id", "b"}, {"text", "two\nlines \xc3\xa9"}});
    w.write({{"id", "c"}, {"x", {1, 2, 3}}});
  }
  full = slurp(f.path);
  std::vector<std::size_t> ends;  // offset of each '\n'
  for (std::size_t k = 0; k < full.size(); ++k)
    if (full[k] == '\n') ends.push_back(k);
  REQUIRE(ends.size() == 3);
  for (std::size_t n = 0; n <= full.size(); ++n) {
    INFO("cut at byte " << n);
    put(f.path, full.substr(0, n));
    std::size_t complete = 0;
    std::size_t prefix = 0;
    for (std::size_t e : ends)
      if (e < n) complete += 1, prefix = e + 1;
    // A cut exactly before a '\n' leaves a complete record without its newline: accepted.
    const bool whole_tail = n > prefix && (n == full.size() || full[n] == '\n');
    const read_result r = read_all(f.path);
    CHECK(r.records.size() == complete + (whole_tail ? 1 : 0));
    CHECK(r.scan.truncated_tail == (n > prefix && !whole_tail));
    CHECK(r.scan.valid_bytes == (whole_tail ? n : prefix));
    {
      cai::jsonl_writer w = cai::jsonl_writer::open_for_resume(f.path);
      w.write({{"id", "z"}});
    }
    const read_result r2 = read_all(f.path);
    REQUIRE(r2.records.size() == r.records.size() + 1);
    CHECK(r2.records.back() == json{{"id", "z"}});
    CHECK_FALSE(r2.scan.truncated_tail);
    CHECK(slurp(f.path) == full.substr(0, whole_tail ? n : prefix) + (whole_tail ? "\n" : "") + "{\"id\":\"z\"}\n");
  }
}

TEST_CASE("a final complete jsonl record without its newline is accepted and resume adds the newline", "[io]") {
  temp_file f("no_newline");
  put(f.path, "{\"a\":1}\n{\"a\":2,\"s\":\"x\\ny\"}");  // as another tool may write it
  const read_result r = read_all(f.path);
  REQUIRE(r.records.size() == 2);
  CHECK(r.records[1] == json{{"a", 2}, {"s", "x\ny"}});
  CHECK(r.lines == std::vector<std::size_t>{1, 2});
  CHECK_FALSE(r.scan.truncated_tail);
  CHECK(r.scan.valid_bytes == fs::file_size(f.path));
  {
    cai::jsonl_writer w = cai::jsonl_writer::open_for_resume(f.path);
    w.write({{"a", 3}});
  }
  CHECK(slurp(f.path) == "{\"a\":1}\n{\"a\":2,\"s\":\"x\\ny\"}\n{\"a\":3}\n");
  CHECK(read_all(f.path).records.size() == 3);
}

TEST_CASE("a malformed complete jsonl line is a parse_error naming the file and the line", "[io]") {
  temp_file f("malformed");
  const std::string name = f.path.string();
  const std::string line1 = name + ":1:", line2 = name + ":2:", line3 = name + ":3:";  // named: the macro keeps char pointers
  put(f.path, "{\"a\":1}\n\n{\"a\": oops}\n{\"a\":3}\n");
  std::size_t seen = 0;
  CAI_REQUIRE_THROWS_NAMING((cai::read_jsonl(f.path, [&](const json&, std::size_t) { ++seen; })), cai::parse_error,
                            "cai::read_jsonl", line3.c_str(), "malformed JSON");
  CHECK(seen == 1);  // the records before it were passed on
  // A malformed last line that does end in '\n' is an error too, not a truncation.
  put(f.path, "{\"a\":1}\n{\"a\":\n");
  CAI_REQUIRE_THROWS_NAMING((read_all(f.path)), cai::parse_error, line2.c_str());
  // Resume refuses it rather than cutting data away.
  CAI_REQUIRE_THROWS_NAMING((cai::jsonl_writer::open_for_resume(f.path)), cai::parse_error, line2.c_str());
  CHECK(slurp(f.path) == "{\"a\":1}\n{\"a\":\n");
  // Two values on one line are malformed as well.
  put(f.path, "{\"a\":1} {\"a\":2}\n");
  CAI_REQUIRE_THROWS_NAMING((read_all(f.path)), cai::parse_error, line1.c_str());
}

TEST_CASE("a missing jsonl file reads as empty and open_for_resume creates it", "[io]") {
  temp_file f("missing");
  REQUIRE_FALSE(fs::exists(f.path));
  const read_result r = read_all(f.path);
  CHECK(r.records.empty());
  CHECK(r.scan.records == 0);
  CHECK(r.scan.valid_bytes == 0);
  CHECK_FALSE(r.scan.truncated_tail);
  {
    cai::jsonl_writer w = cai::jsonl_writer::open_for_resume(f.path);
    CHECK(fs::exists(f.path));
    CHECK(fs::file_size(f.path) == 0);
    w.write({{"id", 1}});
  }
  CHECK(slurp(f.path) == "{\"id\":1}\n");
  // An empty file is empty too.
  put(f.path, "");
  CHECK(read_all(f.path).records.empty());
  CAI_REQUIRE_THROWS_NAMING((cai::jsonl_writer(fs::temp_directory_path() / "cai_no_such_dir_x" / "out.jsonl")), cai::error,
                            "cai::jsonl_writer", "cai_no_such_dir_x");
}

TEST_CASE("blank and whitespace-only jsonl lines are skipped but counted in line numbers", "[io]") {
  temp_file f("blank");
  put(f.path, "\n   \n{\"a\":1}\n\t\r\n{\"a\":2}\r\n\n");
  const read_result r = read_all(f.path);
  REQUIRE(r.records.size() == 2);
  CHECK(r.records[0] == json{{"a", 1}});
  CHECK(r.records[1] == json{{"a", 2}});
  CHECK(r.lines == std::vector<std::size_t>{3, 5});
  CHECK_FALSE(r.scan.truncated_tail);
  CHECK(r.scan.valid_bytes == fs::file_size(f.path));
  {
    cai::jsonl_writer w = cai::jsonl_writer::open_for_resume(f.path);
    w.write({{"a", 3}});
  }
  CHECK(read_all(f.path).records.size() == 3);
}

TEST_CASE("a jsonl writer can be moved and writes nothing once moved from", "[io]") {
  temp_file f("move");
  cai::jsonl_writer a(f.path);
  cai::jsonl_writer b(std::move(a));
  CHECK_THROWS_AS(a.write({{"x", 0}}), cai::error);  // NOLINT(bugprone-use-after-move): the moved-from state is specified
  b.write({{"x", 1}});
  cai::jsonl_writer c;
  CHECK_THROWS_AS(c.write({{"x", 0}}), cai::error);
  c = std::move(b);
  c.write({{"x", 2}});
  c.close();
  CHECK(slurp(f.path) == "{\"x\":1}\n{\"x\":2}\n");
}

TEST_CASE("the progress line counts records and stays silent when disabled", "[io]") {
  cai::progress_line bar("critique-revise", 10, 3, false);
  CHECK(bar.done() == 3);
  bar.advance();
  bar.advance(2);
  CHECK(bar.done() == 6);
  const std::string t = bar.text();
  CHECK(cai_test::contains(t, "critique-revise: 6/10 records"));
  CHECK(cai_test::contains(t, "rec/s"));
  CHECK(cai_test::contains(t, "ETA "));
  bar.finish();
}
