#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "thread_pool.h"
#include "visual_cache.h"

namespace vlfront::impl {
namespace {

ImageKey key(uint8_t i) {
  ImageKey k{};
  k[0] = i;
  k[31] = static_cast<uint8_t>(i * 7);
  return k;
}

std::shared_ptr<const CacheEntry> entry(size_t floats, uint8_t fill) {
  auto e = std::make_shared<CacheEntry>();
  e->visual_tokens.assign(floats, fill);
  e->pixel_values.assign(16, fill);
  return e;
}

TEST(Cache, LruBoundedInBytes) {
  const size_t one = entry(10, 0)->nbytes();  // 56 bytes
  VisualTokenCache cache(one * 2);
  cache.put(key(1), entry(10, 1));
  cache.put(key(2), entry(10, 2));
  ASSERT_TRUE(cache.get(key(1)));  // 1 is now the most recent
  cache.put(key(3), entry(10, 3));  // evicts 2
  EXPECT_TRUE(cache.get(key(1)));
  EXPECT_FALSE(cache.get(key(2)));
  EXPECT_TRUE(cache.get(key(3)));
  const CacheStats s = cache.stats();
  EXPECT_EQ(s.entries, 2);
  EXPECT_EQ(s.bytes, static_cast<int64_t>(2 * one));
  EXPECT_EQ(s.evictions, 1);
  EXPECT_EQ(s.hits, 3);
  EXPECT_EQ(s.misses, 1);
}

TEST(Cache, ZeroDisablesAndOversizedIsSkipped) {
  VisualTokenCache off(0);
  off.put(key(1), entry(10, 1));
  EXPECT_FALSE(off.get(key(1)));
  VisualTokenCache small(10);
  small.put(key(1), entry(10, 1));
  EXPECT_EQ(small.stats().entries, 0);
}

TEST(Cache, ReplacingAKeyKeepsTheByteCount) {
  VisualTokenCache cache(1 << 20);
  cache.put(key(1), entry(10, 1));
  cache.put(key(1), entry(20, 2));
  EXPECT_EQ(cache.stats().entries, 1);
  EXPECT_EQ(cache.stats().bytes, static_cast<int64_t>(entry(20, 0)->nbytes()));
  EXPECT_EQ(cache.get(key(1))->visual_tokens[0], 2.0f);
}

TEST(Cache, ConcurrentUse) {
  VisualTokenCache cache(entry(10, 0)->nbytes() * 8);
  std::vector<std::thread> threads;
  std::atomic<int> found{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        const uint8_t k = static_cast<uint8_t>((i * 31 + t) % 16);
        if (auto e = cache.get(key(k))) {
          found += e->pixel_values[0] == k;
        } else {
          cache.put(key(k), entry(10, k));
        }
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_LE(cache.stats().entries, 8);
  EXPECT_GT(found.load(), 0);
}

TEST(ThreadPool, RunsEveryIndexOnce) {
  ThreadPool pool(3);
  for (size_t n : {0u, 1u, 2u, 7u, 100u}) {
    std::vector<std::atomic<int>> hits(n);
    pool.parallel_for(n, [&](size_t i) { hits[i]++; });
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1);
  }
  ThreadPool none(0);
  int count = 0;
  none.parallel_for(5, [&](size_t) { ++count; });
  EXPECT_EQ(count, 5);
}

}  // namespace
}  // namespace vlfront::impl
