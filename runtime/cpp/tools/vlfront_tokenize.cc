// vlfront-tokenize: the C++ tokenizer on the command line.
//
//   vlfront-tokenize TOKENIZER < lines.jsonl          one JSON string per line in,
//                                                      one JSON array of ids per line out
//   vlfront-tokenize TOKENIZER --prefix LIMIT [FULL_CHARS MAX_GAP] < lines.jsonl
//                                                      Tokenizer::encode_prefix: {"ids": [...], "complete": b}
//   vlfront-tokenize TOKENIZER --bench lines.jsonl [--repeat N]
//                                                      one thread; prints {"tokens_per_s": ...}
// TOKENIZER is a tokenizer.json or a .tiktoken ranks file.
#include <chrono>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "error.h"
#include "tokenizer.h"

using vlfront::impl::Tokenizer;

namespace {

std::vector<std::string> read_jsonl(std::istream& in) {
  std::vector<std::string> texts;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) texts.push_back(nlohmann::json::parse(line).get<std::string>());
  return texts;
}

int bench(const Tokenizer& tok, const std::vector<std::string>& texts, int repeat) {
  std::vector<int32_t> ids;
  size_t bytes = 0;
  for (const auto& t : texts) bytes += t.size();
  size_t tokens = 0;
  for (const auto& t : texts) tok.encode(t, ids);  // warm-up (page faults, JIT stack)
  ids.clear();
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < repeat; ++r) {
    Tokenizer::clear_thread_cache();  // each pass starts cold: no text seen before helps
    for (const auto& t : texts) {
      ids.clear();
      tok.encode(t, ids);
      tokens += ids.size();
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  nlohmann::json out = {{"texts", texts.size()}, {"repeat", repeat}, {"bytes", bytes * repeat},
                        {"tokens", tokens}, {"seconds", s}, {"tokens_per_s", tokens / s},
                        {"mb_per_s", bytes * repeat / s / 1e6}};
  std::cout << out.dump() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: vlfront-tokenize TOKENIZER [--bench FILE.jsonl [--repeat N]] < lines.jsonl\n";
    return 2;
  }
  try {
    auto tok = Tokenizer::from_file(argv[1]);
    if (argc >= 4 && std::string(argv[2]) == "--bench") {
      std::ifstream f(argv[3]);
      if (!f) throw std::runtime_error(std::string("cannot open ") + argv[3]);
      int repeat = (argc >= 6 && std::string(argv[4]) == "--repeat") ? std::stoi(argv[5]) : 1;
      return bench(*tok, read_jsonl(f), repeat);
    }
    const bool prefix = argc >= 4 && std::string(argv[2]) == "--prefix";
    const size_t limit = prefix ? std::stoul(argv[3]) : 0;
    const size_t full_chars = prefix && argc >= 6 ? std::stoul(argv[4]) : Tokenizer::kFullChars;
    const size_t max_gap = prefix && argc >= 6 ? std::stoul(argv[5]) : Tokenizer::kMaxGap;
    std::string line;
    std::vector<int32_t> ids;
    while (std::getline(std::cin, line)) {
      if (line.empty()) continue;
      ids.clear();
      try {
        if (prefix) {
          const bool complete =
              tok->encode_prefix(nlohmann::json::parse(line).get<std::string>(), limit, ids, full_chars, max_gap);
          std::cout << nlohmann::json({{"ids", ids}, {"complete", complete}}).dump() << "\n";
          continue;
        }
        tok->encode(nlohmann::json::parse(line).get<std::string>(), ids);
        std::cout << nlohmann::json(ids).dump() << "\n";
      } catch (const vlfront::impl::Error& e) {
        std::cout << nlohmann::json({{"error", e.what()}}).dump() << "\n";
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "vlfront-tokenize: " << e.what() << "\n";
    return 1;
  }
}
