#include "visual_cache.h"

namespace vlfront::impl {

std::shared_ptr<const CacheEntry> VisualTokenCache::get(const ImageKey& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = index_.find(key);
  if (it == index_.end()) {
    ++misses_;
    return nullptr;
  }
  lru_.splice(lru_.begin(), lru_, it->second);
  ++hits_;
  return it->second->second;
}

void VisualTokenCache::put(const ImageKey& key, std::shared_ptr<const CacheEntry> entry) {
  if (!entry || entry->nbytes() > max_bytes_) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (auto it = index_.find(key); it != index_.end()) {
    bytes_ -= it->second->second->nbytes();
    lru_.erase(it->second);
    index_.erase(it);
  }
  bytes_ += entry->nbytes();
  lru_.emplace_front(key, std::move(entry));
  index_[key] = lru_.begin();
  while (bytes_ > max_bytes_) {
    auto& [k, e] = lru_.back();
    bytes_ -= e->nbytes();
    index_.erase(k);
    lru_.pop_back();
    ++evictions_;
  }
}

CacheStats VisualTokenCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {static_cast<int64_t>(index_.size()), static_cast<int64_t>(bytes_), static_cast<int64_t>(max_bytes_),
          hits_, misses_, evictions_};
}

void VisualTokenCache::clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  lru_.clear();
  index_.clear();
  bytes_ = 0;
}

}  // namespace vlfront::impl
