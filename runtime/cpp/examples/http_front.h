// A small event-driven HTTP/1.1 front for the example server (http_server.cc).
//
// Why not a thread per connection (cpp-httplib, which this replaced): a client
// that sends 1 byte/s holds its thread for as long as it likes, a request line
// or header without a newline is buffered without bound, and chunked bodies are
// read past the body limit. Here one thread polls every connection; a request
// is parsed incrementally under hard limits (head <= 16 KiB and 100 headers,
// body <= max_body, whole request within request_timeout, idle keep-alive
// within idle_timeout, at most max_connections) and only a complete request
// reaches a worker thread. A stalled upload costs one descriptor and its
// buffer, never a worker. docs/runtime.md ("Server") lists the limits.
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace vlfront_server {

struct HttpRequest {
  std::string method, target, version;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  bool keep_alive = true;
  // The value of a header (last one wins), or "".
  std::string header(const std::string& lower_name) const;
  bool has_header(const std::string& lower_name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  bool close = false;  // close the connection after this answer
};

struct ParseLimits {
  size_t max_head = 16 * 1024;  // request line + headers (+ chunked trailers)
  size_t max_headers = 100;
  size_t max_body = 32u << 20;
};

// Incremental request parser (no I/O): feed() bytes as they arrive. After the
// head, state() is kHeadDone: the caller may refuse the request before its body
// is read (check_head), then calls begin_body(). Errors carry a status and a
// message that never quotes client bytes.
class RequestParser {
 public:
  enum class State { kHead, kHeadDone, kBody, kChunkSize, kChunkData, kChunkEnd, kTrailers, kDone, kError };
  explicit RequestParser(ParseLimits limits) : limits_(limits) {}
  // Consumes a prefix of data; returns how many bytes were used. Stops at
  // kHeadDone, kDone and kError.
  size_t feed(const char* data, size_t n);
  void begin_body();
  void reset();
  State state() const { return state_; }
  bool started() const { return started_; }
  int error_status() const { return error_status_; }
  const std::string& error_message() const { return error_message_; }
  HttpRequest& request() { return request_; }

 private:
  bool parse_head();
  void fail(int status, std::string message);
  size_t feed_chunk_size(const char* data, size_t n);

  ParseLimits limits_;
  State state_ = State::kHead;
  bool started_ = false;
  std::string head_;   // bytes of the head (and of chunk-size / trailer lines)
  size_t scanned_ = 0; // where to resume looking for the end of the head
  size_t content_length_ = 0;
  bool chunked_ = false;
  size_t chunk_left_ = 0;
  HttpRequest request_;
  int error_status_ = 0;
  std::string error_message_;
};

struct FrontOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  ParseLimits limits;
  int workers = 16;              // threads running handlers (a handler may wait for its batch)
  int max_connections = 256;     // beyond: 503 with Retry-After, then close
  double request_timeout_s = 30; // first byte of a request to its last byte
  double idle_timeout_s = 10;    // keep-alive connection with no request in progress
  double write_timeout_s = 30;   // a client that does not read its answer
};

// check_head: called on the poll thread once a request's head is parsed; an
// answer refuses the request before its body is read (the connection closes).
// handle: called on a worker for a complete request. error: formats the
// front's own refusals (bad syntax, 408, 413, 431, 503).
struct FrontHandlers {
  std::function<std::optional<HttpResponse>(const HttpRequest&)> check_head;
  std::function<HttpResponse(HttpRequest&)> handle;  // may take the body (std::move) to free it early
  std::function<HttpResponse(int status, const std::string& message)> error;
};

class HttpFront {
 public:
  HttpFront(FrontOptions options, FrontHandlers handlers);
  ~HttpFront();
  HttpFront(const HttpFront&) = delete;
  HttpFront& operator=(const HttpFront&) = delete;
  // Binds and listens; returns the port (the chosen one for port 0) or throws.
  int bind();
  // Serves until stop(); answers in flight are finished first.
  void run();
  void stop();  // safe from any thread

 private:
  struct Impl;
  Impl* impl_;
};

// The bytes of an answer; head_only: the headers of it (an answer to HEAD).
std::string format_response(const HttpResponse& res, bool close, bool head_only = false);

}  // namespace vlfront_server
