#include "batcher.h"

#include "error.h"

namespace vlfront::impl {

Batcher::Batcher(Runtime& runtime, size_t max_batch, std::chrono::microseconds max_wait, size_t max_queue)
    : runtime_(runtime), max_batch_(max_batch), max_queue_(max_queue), max_wait_(max_wait) {
  if (max_batch < 1 || max_queue < 1 || max_wait.count() < 0)
    throw Error(VLF_ERR_INVALID_ARGUMENT, "Batcher: max_batch=" + std::to_string(max_batch) + ", max_queue=" +
                                              std::to_string(max_queue) + " must be >= 1 and max_wait_us=" +
                                              std::to_string(max_wait.count()) + " >= 0");
  worker_ = std::thread([this] { loop(); });
  heavy_worker_ = std::thread([this] { heavy_loop(); });
}

bool Batcher::heavy(const Request& request) {
  size_t bytes = 0;
  for (const Message& m : request.messages)
    for (const vlfront::impl::Item& it : m.items)
      if (!it.is_image && (bytes += it.text.size()) > kHeavyTextBytes) return true;
  return false;
}

Batcher::~Batcher() { close(); }

std::future<EmbedResult> Batcher::submit(const Request& request) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (closed_) throw Error(VLF_ERR_INVALID_ARGUMENT, "Batcher is closed; create a new one");
  if (queue_.size() + heavy_.size() >= max_queue_)
    throw Error(VLF_ERR_QUEUE_FULL, "batcher queue is full (" + std::to_string(max_queue_) +
                                        " requests waiting); retry later or raise max_queue");
  std::deque<Item>& lane = heavy(request) ? heavy_ : queue_;
  lane.push_back(Item{&request, {}});
  std::future<EmbedResult> f = lane.back().promise.get_future();
  lock.unlock();
  cv_.notify_all();  // both workers wait on cv_, each for its own lane
  return f;
}

void Batcher::close() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (closed_) return;
    closed_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  if (heavy_worker_.joinable()) heavy_worker_.join();
}

void Batcher::loop() {
  for (;;) {
    std::vector<Item> batch;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return closed_ || !queue_.empty(); });
      if (queue_.empty()) return;  // closed and drained
      const auto deadline = std::chrono::steady_clock::now() + max_wait_;
      // Wait for the batch to fill, at most max_wait after its first request.
      cv_.wait_until(lock, deadline, [this] { return closed_ || queue_.size() >= max_batch_; });
      while (!queue_.empty() && batch.size() < max_batch_) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    run(batch);
  }
}

void Batcher::heavy_loop() {
  for (;;) {
    std::vector<Item> one;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return closed_ || !heavy_.empty(); });
      if (heavy_.empty()) return;  // closed and drained
      one.push_back(std::move(heavy_.front()));
      heavy_.pop_front();
    }
    run(one);
  }
}

void Batcher::run(std::vector<Item>& batch) {
  std::vector<const Request*> requests;
  for (const Item& it : batch) requests.push_back(it.request);
  std::vector<EmbedResult> results;
  try {
    results = runtime_.embed_each(requests);
  } catch (const Error& e) {  // a failure of the whole batch (backend error) reaches every caller
    results.assign(batch.size(), EmbedResult{std::nullopt, e});
  } catch (const std::exception& e) {
    results.assign(batch.size(), EmbedResult{std::nullopt, Error(VLF_ERR_INTERNAL, e.what())});
  }
  ++batches_;
  requests_ += static_cast<int64_t>(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) batch[i].promise.set_value(std::move(results[i]));
}

}  // namespace vlfront::impl
