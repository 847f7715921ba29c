// The byte-level BPE vocabulary: token bytes -> rank (= id), in one flat
// open-addressing table over an arena of bytes, because this lookup is the
// tokenizer's hot loop.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vlfront::impl {

class BpeRanks {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;

  // Adds `bytes` with `rank`; returns false if the bytes are already present.
  bool insert(std::string_view bytes, uint32_t rank);
  // Rank of `bytes`, or kNone.
  uint32_t find(std::string_view bytes) const noexcept;
  size_t size() const noexcept { return count_; }
  // Bytes of the token with this rank (empty if unknown).
  std::string_view bytes_of(uint32_t rank) const noexcept;

 private:
  struct Slot {
    uint32_t hash = 0;
    uint32_t rank = kNone;
    uint32_t offset = 0;
    uint32_t length = 0;
  };
  static uint32_t hash(std::string_view bytes) noexcept;
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
