// The byte-level BPE vocabulary: token bytes -> rank (= id), in one flat
// open-addressing table over an arena of bytes, because this lookup is the
// tokenizer's hot loop.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace vlfront::impl {

class BpeRanks {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  // Adds `bytes` with `rank`; returns false if the bytes are already present.
  bool insert(std::string_view bytes, uint32_t rank);
  // Rank of `bytes`, or kNone. Inline: the tokenizer's hot loop.
  uint32_t find(std::string_view bytes) const noexcept {
    const uint32_t h = hash_impl(bytes);
    const size_t mask = slots_.size() - 1;
    const char* arena = arena_.data();
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.rank == kNone) return kNone;
      if (s.hash == h && s.length == bytes.size() && equal(arena + s.offset, bytes.data(), bytes.size())) return s.rank;
    }
  }
  size_t size() const noexcept { return count_; }
  // Bytes of the token with this rank (empty if unknown).
  std::string_view bytes_of(uint32_t rank) const noexcept;

  // The table's hash, shared with the tokenizer's piece cache.
  static uint32_t hash(std::string_view bytes) noexcept;

 private:
  struct Slot {
    uint32_t hash = 0;
    uint32_t rank = kNone;
    uint32_t offset = 0;
    uint32_t length = 0;
  };
  static uint64_t load(const char* p, size_t n) noexcept {  // n in 0..8
    uint64_t v = 0;
    std::memcpy(&v, p, n);
    return v;
  }
  static uint64_t mix(uint64_t a, uint64_t b) noexcept {
    const __uint128_t r = static_cast<__uint128_t>(a ^ 0x9E3779B97F4A7C15ull) * (b ^ 0xD6E8FEB86659FD93ull);
    return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
  }
  static uint32_t hash_impl(std::string_view bytes) noexcept {
    const char* p = bytes.data();
    size_t n = bytes.size();
    uint64_t h = 0xA0761D6478BD642Full ^ n;
    while (n > 16) {
      h = mix(h ^ load(p, 8), load(p + 8, 8));
      p += 16;
      n -= 16;
    }
    const uint64_t a = load(p, n < 8 ? n : 8);
    const uint64_t b = n > 8 ? load(p + 8, n - 8) : 0;
    h = mix(h ^ a, b ^ 0xE7037ED1A0B428DBull);
    return static_cast<uint32_t>(h ^ (h >> 32));
  }
  static bool equal(const char* a, const char* b, size_t n) noexcept {
    if (n <= 8) return load(a, n) == load(b, n);
    if (n <= 16) return load(a, 8) == load(b, 8) && load(a + 8, n - 8) == load(b + 8, n - 8);
    return std::memcmp(a, b, n) == 0;
  }
  void grow();

  std::string arena_;
  std::vector<Slot> slots_ = std::vector<Slot>(1024);
  std::vector<std::pair<uint32_t, uint32_t>> by_rank_;  // rank -> (offset, length)
  size_t count_ = 0;
};

}  // namespace vlfront::impl

namespace vlfront::impl {

// tiktoken's byte_pair_merge over `piece` (>= 1 byte, every single byte a
// token): repeatedly merge the adjacent pair whose concatenation has the lowest
// rank, leftmost first on ties; append the final parts' ranks to `out`.
// `scan` is tiktoken's quadratic loop (fastest for short pieces); `heap` gives
// the same merges in O(n log n) for long ones.
void bpe_merge_scan(const BpeRanks& ranks, std::string_view piece, std::vector<int32_t>& out);
void bpe_merge_heap(const BpeRanks& ranks, std::string_view piece, std::vector<int32_t>& out);

}  // namespace vlfront::impl

namespace vlfront::impl {
inline uint32_t BpeRanks::hash(std::string_view bytes) noexcept { return hash_impl(bytes); }
}  // namespace vlfront::impl
