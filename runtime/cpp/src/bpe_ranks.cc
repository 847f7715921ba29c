#include "bpe_ranks.h"

#include <cstring>
#include <functional>
#include <queue>

namespace vlfront::impl {

bool BpeRanks::insert(std::string_view bytes, uint32_t rank) {
  if (find(bytes) != kNone) return false;
  if ((count_ + 1) * 2 > slots_.size()) grow();
  Slot slot{hash_impl(bytes), rank, static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(bytes.size())};
  arena_.append(bytes.data(), bytes.size());
  const size_t mask = slots_.size() - 1;
  size_t i = slot.hash & mask;
  while (slots_[i].rank != kNone) i = (i + 1) & mask;
  slots_[i] = slot;
  if (by_rank_.size() <= rank) by_rank_.resize(static_cast<size_t>(rank) + 1, {0, 0});
  by_rank_[rank] = {slot.offset, slot.length};
  ++count_;
  return true;
}

std::string_view BpeRanks::bytes_of(uint32_t rank) const noexcept {
  if (rank >= by_rank_.size()) return {};
  return std::string_view(arena_.data() + by_rank_[rank].first, by_rank_[rank].second);
}

void BpeRanks::grow() {
  std::vector<Slot> old(slots_.size() * 2);
  old.swap(slots_);
  const size_t mask = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.rank == kNone) continue;
    size_t i = s.hash & mask;
    while (slots_[i].rank != kNone) i = (i + 1) & mask;
    slots_[i] = s;
  }
}

void bpe_merge_scan(const BpeRanks& ranks, std::string_view piece, std::vector<int32_t>& out) {
  const size_t n = piece.size();
  if (n < 2) {
    if (n == 1) out.push_back(static_cast<int32_t>(ranks.find(piece)));
    return;
  }
  struct Part {
    uint32_t start;
    uint32_t rank;  // rank of this part merged with the next one
  };
  thread_local std::vector<Part> parts;
  parts.clear();
  auto rank_of = [&](size_t a, size_t b) { return ranks.find(piece.substr(a, b - a)); };
  for (size_t i = 0; i + 1 < n; ++i) parts.push_back({static_cast<uint32_t>(i), rank_of(i, i + 2)});
  parts.push_back({static_cast<uint32_t>(n - 1), BpeRanks::kNone});
  parts.push_back({static_cast<uint32_t>(n), BpeRanks::kNone});
  // rank of parts[i] merged with parts[i+1] and parts[i+2] (before i+1 is removed)
  auto rank3 = [&](size_t i) {
    return i + 3 < parts.size() ? rank_of(parts[i].start, parts[i + 3].start) : BpeRanks::kNone;
  };
  for (;;) {
    uint32_t best = BpeRanks::kNone;
    size_t at = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i)
      if (parts[i].rank < best) best = parts[i].rank, at = i;
    if (best == BpeRanks::kNone) break;
    if (at > 0) parts[at - 1].rank = rank3(at - 1);
    parts[at].rank = rank3(at);
    parts.erase(parts.begin() + static_cast<long>(at) + 1);
  }
  for (size_t i = 0; i + 1 < parts.size(); ++i)
    out.push_back(static_cast<int32_t>(rank_of(parts[i].start, parts[i + 1].start)));
}

void bpe_merge_heap(const BpeRanks& ranks, std::string_view piece, std::vector<int32_t>& out) {
  const size_t n = piece.size();
  if (n < 2) {
    if (n == 1) out.push_back(static_cast<int32_t>(ranks.find(piece)));
    return;
  }
  auto rank_of = [&](size_t a, size_t b) { return ranks.find(piece.substr(a, b - a)); };
  // Parts form a linked list by start offset; rank[i] is part i merged with its successor.
  std::vector<uint32_t> next(n + 1), prev(n + 1), rank(n + 1, BpeRanks::kNone);
  std::vector<char> alive(n + 1, 1);
  using Entry = std::pair<uint32_t, uint32_t>;  // (rank, start): leftmost first on ties
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  for (size_t i = 0; i <= n; ++i) {
    next[i] = static_cast<uint32_t>(i + 1);
    prev[i] = static_cast<uint32_t>(i ? i - 1 : 0);
  }
  for (size_t i = 0; i + 1 < n; ++i) {
    rank[i] = rank_of(i, i + 2);
    if (rank[i] != BpeRanks::kNone) heap.push({rank[i], static_cast<uint32_t>(i)});
  }
  auto merged_rank = [&](uint32_t i) {
    const uint32_t j = next[i];
    return j >= n ? BpeRanks::kNone : rank_of(i, next[j]);
  };
  while (!heap.empty()) {
    const auto [r, i] = heap.top();
    heap.pop();
    if (!alive[i] || rank[i] != r) continue;  // stale entry
    const uint32_t j = next[i];               // absorbed into i
    alive[j] = 0;
    next[i] = next[j];
    prev[next[j]] = i;
    rank[i] = merged_rank(i);
    if (rank[i] != BpeRanks::kNone) heap.push({rank[i], i});
    if (i > 0) {
      const uint32_t p = prev[i];
      rank[p] = merged_rank(p);
      if (rank[p] != BpeRanks::kNone) heap.push({rank[p], p});
    }
  }
  for (uint32_t i = 0; i < n; i = next[i]) out.push_back(static_cast<int32_t>(rank_of(i, next[i])));
}

}  // namespace vlfront::impl
