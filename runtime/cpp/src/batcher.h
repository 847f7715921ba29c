// Dynamic batching for servers (as Python's vlfront.runtime.batcher.Batcher):
// many threads submit single requests; one worker groups them into batches of
// at most max_batch, waiting at most max_wait for a batch to fill, and runs
// Runtime::embed_each, so one bad request fails alone. A request with more than
// kHeavyTextBytes of text (validating and normalizing 30 MiB takes ~20 ms) runs
// alone on a second worker, so it never holds up a batch of small ones.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

#include "runtime.h"

namespace vlfront::impl {

class Batcher {
 public:
  static constexpr size_t kHeavyTextBytes = size_t{1} << 20;
  static bool heavy(const Request& request);  // more text than kHeavyTextBytes

  // Raises Error(VLF_ERR_INVALID_ARGUMENT) for max_batch or max_queue < 1 or max_wait < 0.
  Batcher(Runtime& runtime, size_t max_batch, std::chrono::microseconds max_wait, size_t max_queue);
  ~Batcher();  // close(): finishes the queued requests first
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues one request (borrowed until the future is ready). Raises
  // Error(VLF_ERR_QUEUE_FULL) when max_queue requests wait, or when closed.
  std::future<EmbedResult> submit(const Request& request);
  void close();
  int64_t batches() const { return batches_; }
  int64_t requests() const { return requests_; }

 private:
  struct Item {
    const Request* request;
    std::promise<EmbedResult> promise;
  };
  void loop();
  void heavy_loop();
  void run(std::vector<Item>& batch);
  Runtime& runtime_;
  const size_t max_batch_, max_queue_;
  const std::chrono::microseconds max_wait_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Item> queue_, heavy_;  // max_queue bounds both together
  bool closed_ = false;
  std::atomic<int64_t> batches_{0}, requests_{0};
  std::thread worker_, heavy_worker_;
};

}  // namespace vlfront::impl
