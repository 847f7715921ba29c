// A fixed pool for image decoding: parallel_for runs fn(0..n-1) on the pool
// and the calling thread, and returns when all are done.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>

namespace vlfront::impl {

class ThreadPool {
 public:
  explicit ThreadPool(size_t threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  // fn must not throw (capture errors per index).
  void parallel_for(size_t n, const std::function<void(size_t)>& fn);

 private:
  void worker();
  std::vector<std::thread> threads_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::queue<std::function<void()>> tasks_;
  bool stop_ = false;
};

}  // namespace vlfront::impl
