// Reader for the golden files under tests/golden/ (written by the gen_*.py scripts there with PyTorch): one record
// per line, "<name> <count> <v_1> ... <v_count>", '#' starting a comment line. Plain text so that the test
// executable needs no JSON library.
#pragma once

#include <cstddef>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#ifndef CAI_GOLDEN_DIR
#error "CAI_GOLDEN_DIR must name the tests/golden directory (tests/CMakeLists.txt defines it)"
#endif

namespace cai_test {

class golden {
 public:
  explicit golden(const std::string& file) {
    const std::string path = std::string(CAI_GOLDEN_DIR) + "/" + file;
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open golden file " + path);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream ls(line);
      std::string name;
      std::size_t n = 0;
      if (!(ls >> name >> n)) throw std::runtime_error("malformed record in " + path + ": " + line.substr(0, 60));
      std::vector<double> v(n);
      for (auto& x : v)
        if (!(ls >> x)) throw std::runtime_error("short record '" + name + "' in " + path);
      records_[name] = std::move(v);
    }
  }
  const std::vector<double>& operator[](const std::string& name) const {
    const auto it = records_.find(name);
    if (it == records_.end()) throw std::runtime_error("golden record '" + name + "' missing");
    return it->second;
  }
  /// The record converted to T (fp32 values are exact in the file, so this round-trips them).
  template <class T>
  std::vector<T> as(const std::string& name) const {
    const auto& v = (*this)[name];
    std::vector<T> out(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<T>(v[i]);
    return out;
  }

 private:
  std::map<std::string, std::vector<double>> records_;
};

}  // namespace cai_test
