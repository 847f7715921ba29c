// The event-driven HTTP/1.1 front of the example server; see http_front.h.
#include "http_front.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace vlfront_server {

// ---- requests -------------------------------------------------------------------------------

std::string HttpRequest::header(const std::string& lower_name) const {
  std::string value;
  for (const auto& [k, v] : headers)
    if (k == lower_name) value = v;
  return value;
}

bool HttpRequest::has_header(const std::string& lower_name) const {
  for (const auto& kv : headers)
    if (kv.first == lower_name) return true;
  return false;
}

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_token_char(unsigned char c) {
  return std::isalnum(c) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t") - a + 1);
}

}  // namespace

void RequestParser::fail(int status, std::string message) {
  state_ = State::kError;
  error_status_ = status;
  error_message_ = std::move(message);
}

void RequestParser::reset() {
  state_ = State::kHead;
  started_ = false;
  head_.clear();
  scanned_ = 0;
  content_length_ = 0;
  chunked_ = false;
  chunk_left_ = 0;
  request_ = HttpRequest();
  error_status_ = 0;
  error_message_.clear();
}

bool RequestParser::parse_head() {
  std::vector<std::string> lines;
  size_t start = 0;
  while (true) {
    const size_t end = head_.find("\r\n", start);
    if (end == std::string::npos || end == start) break;
    lines.push_back(head_.substr(start, end - start));
    start = end + 2;
  }
  if (lines.empty()) return fail(400, "the request line is missing"), false;
  const std::string& line = lines[0];
  const size_t sp1 = line.find(' '), sp2 = sp1 == std::string::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string::npos || line.find(' ', sp2 + 1) != std::string::npos)
    return fail(400, "the request line is not 'METHOD /path HTTP/1.1'"), false;
  HttpRequest& r = request_;
  r.method = line.substr(0, sp1);
  r.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  r.version = line.substr(sp2 + 1);
  if (r.method.empty() || !std::all_of(r.method.begin(), r.method.end(), [](unsigned char c) { return is_token_char(c); }))
    return fail(400, "the request method is not an HTTP token"), false;
  if (r.target.empty() || r.target[0] != '/' ||
      !std::all_of(r.target.begin(), r.target.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f; }))
    return fail(400, "the request target must be a path starting with '/'"), false;
  if (r.version != "HTTP/1.1" && r.version != "HTTP/1.0") return fail(505, "only HTTP/1.0 and HTTP/1.1 are served"), false;
  if (lines.size() - 1 > limits_.max_headers)
    return fail(431, "more than " + std::to_string(limits_.max_headers) + " header fields"), false;
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string& h = lines[i];
    const size_t colon = h.find(':');
    if (colon == std::string::npos || colon == 0 ||
        !std::all_of(h.begin(), h.begin() + static_cast<long>(colon), [](unsigned char c) { return is_token_char(c); }))
      return fail(400, "header line " + std::to_string(i) + " is not 'Name: value'"), false;
    std::string value = trim(h.substr(colon + 1));
    if (std::any_of(value.begin(), value.end(), [](unsigned char c) { return (c < 0x20 && c != '\t') || c == 0x7f; }))
      return fail(400, "header line " + std::to_string(i) + " has a control character"), false;
    r.headers.emplace_back(lower(h.substr(0, colon)), std::move(value));
  }
  const bool has_length = r.has_header("content-length"), has_te = r.has_header("transfer-encoding");
  if (has_length && has_te) return fail(400, "a request cannot have both Content-Length and Transfer-Encoding"), false;
  if (has_te) {
    if (lower(r.header("transfer-encoding")) != "chunked")
      return fail(501, "Transfer-Encoding other than 'chunked' is not supported"), false;
    chunked_ = true;
  }
  if (has_length) {
    size_t n = 0;
    int count = 0;
    for (const auto& [k, v] : r.headers) {
      if (k != "content-length") continue;
      if (v.empty() || v.size() > 18 || !std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); }))
        return fail(400, "Content-Length is not a decimal number"), false;
      const size_t this_n = std::stoull(v);
      if (count++ && this_n != n) return fail(400, "Content-Length is given twice with different values"), false;
      n = this_n;
    }
    content_length_ = n;
  }
  const std::string connection = lower(r.header("connection"));
  r.keep_alive = r.version == "HTTP/1.1" ? connection.find("close") == std::string::npos
                                          : connection.find("keep-alive") != std::string::npos;
  state_ = State::kHeadDone;
  return true;
}

void RequestParser::begin_body() {
  if (state_ != State::kHeadDone) return;
  head_.clear();
  scanned_ = 0;
  if (chunked_) {
    state_ = State::kChunkSize;
  } else if (content_length_ > limits_.max_body) {
    fail(413, "the body has " + std::to_string(content_length_) + " bytes, over the limit of " +
                  std::to_string(limits_.max_body) + " (--max-body-mb)");
  } else {
    request_.body.reserve(content_length_);  // untouched pages cost no memory until bytes arrive
    state_ = content_length_ ? State::kBody : State::kDone;
  }
}

// One line of a chunked body (size line, CRLF after data, trailer) collected in head_.
size_t RequestParser::feed_chunk_size(const char* data, size_t n) {
  const void* nl = std::memchr(data, '\n', n);
  const size_t take = nl ? static_cast<size_t>(static_cast<const char*>(nl) - data) + 1 : n;
  head_.append(data, take);
  if (head_.size() > 1024 && state_ != State::kTrailers) return fail(400, "a chunk-size line is over 1024 bytes"), take;
  if (state_ == State::kTrailers && (scanned_ += take) > limits_.max_head)
    return fail(431, "the chunked trailers are over " + std::to_string(limits_.max_head) + " bytes"), take;
  if (!nl) return take;
  if (head_.size() < 2 || head_[head_.size() - 2] != '\r') return fail(400, "a chunked body line does not end in CRLF"), take;
  const std::string line = head_.substr(0, head_.size() - 2);
  head_.clear();
  if (state_ == State::kChunkEnd) {
    if (!line.empty()) return fail(400, "chunk data is longer than its size"), take;
    state_ = State::kChunkSize;
  } else if (state_ == State::kTrailers) {
    if (line.empty()) state_ = State::kDone;
  } else {
    const std::string size = trim(line.substr(0, line.find(';')));
    if (size.empty() || size.size() > 15 || !std::all_of(size.begin(), size.end(), [](unsigned char c) { return std::isxdigit(c); }))
      return fail(400, "a chunk size is not a hexadecimal number"), take;
    chunk_left_ = std::stoull(size, nullptr, 16);
    if (chunk_left_ > limits_.max_body - request_.body.size())
      return fail(413, "the body is over the limit of " + std::to_string(limits_.max_body) + " bytes (--max-body-mb)"), take;
    state_ = chunk_left_ ? State::kChunkData : State::kTrailers;
    scanned_ = 0;
  }
  return take;
}

size_t RequestParser::feed(const char* data, size_t n) {
  size_t used = 0;
  while (used < n) {
    const char* p = data + used;
    const size_t left = n - used;
    switch (state_) {
      case State::kHead: {
        if (head_.empty() && (*p == '\r' || *p == '\n')) {  // empty lines before a request (RFC 9112 2.2)
          ++used;
          continue;
        }
        started_ = true;
        const size_t take = std::min(left, limits_.max_head + 1 - head_.size());
        head_.append(p, take);
        const size_t from = scanned_ >= 3 ? scanned_ - 3 : 0;
        const size_t end = head_.find("\r\n\r\n", from);
        if (end == std::string::npos) {
          used += take;
          scanned_ = head_.size();
          if (head_.size() > limits_.max_head)
            fail(431, "the request line and headers are over " + std::to_string(limits_.max_head) + " bytes");
          break;
        }
        const size_t extra = head_.size() - (end + 4);
        head_.resize(end + 4);
        used += take - extra;
        parse_head();
        break;
      }
      case State::kBody: {
        const size_t take = std::min(left, content_length_ - request_.body.size());
        request_.body.append(p, take);
        used += take;
        if (request_.body.size() == content_length_) state_ = State::kDone;
        break;
      }
      case State::kChunkData: {
        const size_t take = std::min(left, chunk_left_);
        request_.body.append(p, take);
        used += take;
        chunk_left_ -= take;
        if (!chunk_left_) state_ = State::kChunkEnd;
        break;
      }
      case State::kChunkSize:
      case State::kChunkEnd:
      case State::kTrailers:
        used += feed_chunk_size(p, left);
        break;
      default:
        return used;
    }
    if (state_ == State::kHeadDone || state_ == State::kDone || state_ == State::kError) break;
  }
  return used;
}

// ---- responses ------------------------------------------------------------------------------

namespace {

const char* reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
  }
}

}  // namespace

std::string format_response(const HttpResponse& res, bool close, bool head_only) {
  std::string out = "HTTP/1.1 " + std::to_string(res.status) + " " + reason_phrase(res.status) + "\r\n";
  out += "Content-Type: " + res.content_type + "\r\nContent-Length: " + std::to_string(res.body.size()) + "\r\n";
  for (const auto& [k, v] : res.headers) out += k + ": " + v + "\r\n";
  out += close ? "Connection: close\r\n\r\n" : "Connection: keep-alive\r\n\r\n";
  return head_only ? out : out + res.body;
}

// ---- the poll loop --------------------------------------------------------------------------

namespace {

using Clock = std::chrono::steady_clock;
constexpr size_t kMaxDrain = 16u << 20;  // a client that sends a whole refused body still reads its answer

struct Conn {
  int fd = -1;
  enum class Phase { kReading, kBusy, kWriting, kDraining } phase = Phase::kReading;
  RequestParser parser;
  std::string pending;  // bytes after a complete request (pipelining), parsed after its answer
  std::string out;
  size_t out_off = 0;
  bool close_after = false;
  bool head_only = false;  // the request in flight is a HEAD
  size_t drained = 0;  // bytes read and discarded after a closing answer
  Clock::time_point deadline;
  explicit Conn(ParseLimits limits) : parser(limits) {}
};

struct Job {
  uint64_t id;
  HttpRequest request;
};

struct Done {
  uint64_t id;
  HttpResponse response;
};

}  // namespace

struct HttpFront::Impl {
  FrontOptions opt;
  FrontHandlers handlers;
  int listen_fd = -1, wake_fd = -1;
  std::atomic<bool> stopping{false};
  std::map<uint64_t, Conn> conns;
  uint64_t next_id = 1;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<Job> jobs;
  std::deque<Done> done;
  bool workers_stop = false;
  std::vector<std::thread> workers;

  void wake() {
    const uint64_t one = 1;
    (void)!::write(wake_fd, &one, sizeof one);
  }

  void worker() {
    while (true) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return workers_stop || !jobs.empty(); });
        if (jobs.empty()) return;
        job = std::move(jobs.front());
        jobs.pop_front();
      }
      HttpResponse res;
      try {
        res = handlers.handle(job.request);
      } catch (const std::exception& e) {
        res = handlers.error(500, std::string("internal error: ") + e.what());
      } catch (...) {
        res = handlers.error(500, "internal error");
      }
      {
        std::lock_guard<std::mutex> lock(mu);
        done.push_back({job.id, std::move(res)});
      }
      wake();
    }
  }

  void respond(uint64_t id, Conn& c, const HttpResponse& res) {
    c.close_after = res.close || !c.parser.request().keep_alive || c.parser.state() == RequestParser::State::kError;
    c.out = format_response(res, c.close_after, c.head_only);
    c.head_only = false;
    c.out_off = 0;
    c.phase = Conn::Phase::kWriting;
    c.deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(opt.write_timeout_s * 1000));
    write_some(id, c);
  }

  void close_conn(uint64_t id) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    ::close(it->second.fd);
    conns.erase(it);
  }

  // Returns false when the connection is gone.
  bool write_some(uint64_t id, Conn& c) {
    while (c.out_off < c.out.size()) {
      const ssize_t n = ::send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
      if (n > 0) {
        c.out_off += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      if (n < 0 && errno == EINTR) continue;
      c.phase = Conn::Phase::kDraining;  // the client is gone: close at the next sweep
      c.deadline = Clock::now();
      return true;
    }
    c.out.clear();
    c.out_off = 0;
    if (c.close_after) {
      // Lingering close: FIN after the answer, then read and discard for a moment (2 s, 16 MiB)
      // so that a client still sending its body gets the answer rather than a reset.
      ::shutdown(c.fd, SHUT_WR);
      c.phase = Conn::Phase::kDraining;
      c.deadline = Clock::now() + std::chrono::seconds(2);
      return true;
    }
    c.parser.reset();
    c.phase = Conn::Phase::kReading;
    c.deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(opt.idle_timeout_s * 1000));
    if (!c.pending.empty()) {
      std::string bytes = std::move(c.pending);
      c.pending.clear();
      consume(id, c, bytes.data(), bytes.size());
    }
    return true;
  }

  void consume(uint64_t id, Conn& c, const char* data, size_t n) {
    using S = RequestParser::State;
    size_t used = 0;
    while (used < n && c.phase == Conn::Phase::kReading) {
      const bool was_started = c.parser.started();
      used += c.parser.feed(data + used, n - used);
      if (!was_started && c.parser.started())
        c.deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(opt.request_timeout_s * 1000));
      const S s = c.parser.state();
      if (s == S::kError) {
        respond(id, c, handlers.error(c.parser.error_status(), c.parser.error_message()));
        return;
      }
      if (s == S::kHeadDone) {
        const HttpRequest& r = c.parser.request();
        if (auto refusal = handlers.check_head(r)) {
          refusal->close = refusal->close || r.has_header("content-length") || r.has_header("transfer-encoding");
          respond(id, c, *refusal);
          return;
        }
        if (lower(r.header("expect")) == "100-continue") {
          static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
          (void)!::send(c.fd, kContinue, sizeof kContinue - 1, MSG_NOSIGNAL);
        }
        c.parser.begin_body();
        if (c.parser.state() == S::kError) {
          respond(id, c, handlers.error(c.parser.error_status(), c.parser.error_message()));
          return;
        }
      }
      if (c.parser.state() == S::kDone) {
        c.pending.assign(data + used, n - used);
        c.phase = Conn::Phase::kBusy;
        c.head_only = c.parser.request().method == "HEAD";
        {
          std::lock_guard<std::mutex> lock(mu);
          jobs.push_back({id, std::move(c.parser.request())});
        }
        cv.notify_one();
        return;
      }
    }
  }

  void accept_all() {
    while (true) {
      const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) return;  // EAGAIN, or out of descriptors (retried at the next poll)
      if (stopping || conns.size() >= static_cast<size_t>(opt.max_connections)) {
        HttpResponse res = handlers.error(503, "the server has " + std::to_string(opt.max_connections) +
                                                   " connections open (--max-connections); retry later");
        res.headers.emplace_back("Retry-After", "1");
        const std::string out = format_response(res, true);
        (void)!::send(fd, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        ::close(fd);
        continue;
      }
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      Conn c(opt.limits);
      c.fd = fd;
      c.deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(opt.idle_timeout_s * 1000));
      conns.emplace(next_id++, std::move(c));
    }
  }

  void read_some(uint64_t id, Conn& c) {
    char buf[64 * 1024];
    for (int round = 0; round < 8; ++round) {  // at most 512 KiB per connection per turn: fairness
      const ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
      if (n > 0) {
        if (c.phase == Conn::Phase::kDraining) {
          c.drained += static_cast<size_t>(n);
          if (c.drained > kMaxDrain) return close_conn(id);
          continue;
        }
        consume(id, c, buf, static_cast<size_t>(n));
        if (c.phase != Conn::Phase::kReading) return;
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
      close_conn(id);  // EOF or error: an unfinished request has nobody to answer
      return;
    }
  }

  void sweep() {
    const auto now = Clock::now();
    std::vector<uint64_t> gone;
    for (auto& [id, c] : conns) {
      if (now < c.deadline) continue;
      if (c.phase == Conn::Phase::kReading && c.parser.started()) {
        HttpResponse res = handlers.error(408, "the request did not arrive within " +
                                                   std::to_string(static_cast<int>(opt.request_timeout_s)) +
                                                   " s (--request-timeout-s)");
        res.close = true;
        respond(id, c, res);
      } else if (c.phase != Conn::Phase::kBusy) {
        gone.push_back(id);
      }
    }
    for (uint64_t id : gone) close_conn(id);
  }

  void take_done() {
    uint64_t n;
    (void)!::read(wake_fd, &n, sizeof n);
    std::deque<Done> ready;
    {
      std::lock_guard<std::mutex> lock(mu);
      ready.swap(done);
    }
    for (auto& d : ready) {
      auto it = conns.find(d.id);
      if (it != conns.end()) respond(d.id, it->second, d.response);
    }
  }

  void loop() {
    std::vector<pollfd> fds;
    std::vector<uint64_t> ids;
    while (true) {
      if (stopping && listen_fd >= 0) {
        ::close(listen_fd);
        listen_fd = -1;
      }
      if (stopping) {
        bool busy = false;
        for (auto& [id, c] : conns) busy = busy || c.phase == Conn::Phase::kBusy || c.phase == Conn::Phase::kWriting;
        if (!busy) break;
      }
      fds.clear();
      ids.clear();
      fds.push_back({wake_fd, POLLIN, 0});
      ids.push_back(0);
      if (listen_fd >= 0) {
        fds.push_back({listen_fd, POLLIN, 0});
        ids.push_back(0);
      }
      for (auto& [id, c] : conns) {
        short ev = 0;
        if (c.phase == Conn::Phase::kReading || c.phase == Conn::Phase::kDraining) ev = POLLIN;
        if (c.phase == Conn::Phase::kWriting) ev = POLLOUT;
        if (!ev) continue;
        fds.push_back({c.fd, ev, 0});
        ids.push_back(id);
      }
      const int ready = ::poll(fds.data(), fds.size(), 100);
      if (ready < 0 && errno != EINTR) throw std::runtime_error(std::string("poll: ") + std::strerror(errno));
      for (size_t i = 0; ready > 0 && i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        if (fds[i].fd == wake_fd) {
          take_done();
          continue;
        }
        if (fds[i].fd == listen_fd) {
          accept_all();
          continue;
        }
        auto it = conns.find(ids[i]);
        if (it == conns.end()) continue;
        Conn& c = it->second;
        if (c.phase == Conn::Phase::kWriting && (fds[i].revents & (POLLOUT | POLLERR | POLLHUP))) write_some(ids[i], c);
        else if (c.phase == Conn::Phase::kReading || c.phase == Conn::Phase::kDraining) read_some(ids[i], c);
      }
      sweep();
    }
    for (auto& [id, c] : conns) ::close(c.fd);
    conns.clear();
  }
};

HttpFront::HttpFront(FrontOptions options, FrontHandlers handlers) : impl_(new Impl) {
  impl_->opt = std::move(options);
  impl_->handlers = std::move(handlers);
  impl_->wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl_->wake_fd < 0) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
}

HttpFront::~HttpFront() {
  if (impl_->listen_fd >= 0) ::close(impl_->listen_fd);
  ::close(impl_->wake_fd);
  delete impl_;
}

int HttpFront::bind() {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  const std::string port = std::to_string(impl_->opt.port);
  if (::getaddrinfo(impl_->opt.host.c_str(), port.c_str(), &hints, &res) != 0 || !res)
    throw std::runtime_error("cannot resolve " + impl_->opt.host);
  const int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const bool ok = fd >= 0 && ::bind(fd, res->ai_addr, res->ai_addrlen) == 0 && ::listen(fd, 1024) == 0;
  ::freeaddrinfo(res);
  if (!ok) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("cannot listen on " + impl_->opt.host + ":" + port + ": " + std::strerror(errno));
  }
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  impl_->listen_fd = fd;
  return ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
}

void HttpFront::run() {
  for (int i = 0; i < impl_->opt.workers; ++i) impl_->workers.emplace_back([this] { impl_->worker(); });
  try {
    impl_->loop();
  } catch (...) {
    stop();
  }
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->workers_stop = true;
  }
  impl_->cv.notify_all();
  for (auto& t : impl_->workers) t.join();
  impl_->workers.clear();
}

void HttpFront::stop() {
  impl_->stopping = true;
  impl_->wake();
}

}  // namespace vlfront_server
