// Visual-token cache: LRU, bounded in bytes, thread-safe (as Python's
// vlfront.runtime.cache.VisualTokenCache). Keys are ImageSource keys (SHA-256
// over exactly what the decoder consumes); a hit skips decoding and patch_embed.
#pragma once

#include <array>
#include <cstring>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace vlfront::impl {

using ImageKey = std::array<uint8_t, 32>;

struct ImageKeyHash {
  size_t operator()(const ImageKey& k) const noexcept {
    size_t h;
    std::memcpy(&h, k.data(), sizeof h);
    return h;
  }
};

struct CacheEntry {
  std::vector<float> visual_tokens;   // [tokens_per_image, D]
  std::vector<uint8_t> pixel_values;  // [S, S, 3]
  size_t nbytes() const { return visual_tokens.size() * sizeof(float) + pixel_values.size(); }
};

struct CacheStats {
  int64_t entries = 0, bytes = 0, max_bytes = 0, hits = 0, misses = 0, evictions = 0;
};

class VisualTokenCache {
 public:
  explicit VisualTokenCache(size_t max_bytes) : max_bytes_(max_bytes) {}
  // nullptr on a miss. The entry stays valid while the caller holds it.
  std::shared_ptr<const CacheEntry> get(const ImageKey& key);
  void put(const ImageKey& key, std::shared_ptr<const CacheEntry> entry);
  CacheStats stats() const;
  void clear();

 private:
  using Lru = std::list<std::pair<ImageKey, std::shared_ptr<const CacheEntry>>>;
  const size_t max_bytes_;
  mutable std::mutex mutex_;
  Lru lru_;  // most recently used first
  std::unordered_map<ImageKey, Lru::iterator, ImageKeyHash> index_;
  size_t bytes_ = 0;
  int64_t hits_ = 0, misses_ = 0, evictions_ = 0;
};

}  // namespace vlfront::impl
