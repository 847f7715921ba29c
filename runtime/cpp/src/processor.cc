#include "processor.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "error.h"
#include "unicode.h"

namespace vlfront::impl {

namespace {

const char* const kRoles[3] = {"system", "user", "assistant"};
constexpr char kTagEncoded[] = "vlfront.image.v1/encoded\n";
constexpr char kTagRgb[] = "vlfront.image.v1/rgb\n";
// Each decode mode's keys have their own tags (Python's images._TAGS): modes never share a key.
constexpr char kTagEncodedFast[] = "vlfront.image.v1/encoded+fast\n";
constexpr char kTagRgbFast[] = "vlfront.image.v1/rgb+fast\n";
constexpr char kTagEncodedFastest[] = "vlfront.image.v1/encoded+fastest\n";
constexpr char kTagRgbFastest[] = "vlfront.image.v1/rgb+fastest\n";

template <size_t N>
constexpr std::string_view tag_of(const char (&s)[N]) { return std::string_view(s, N - 1); }

std::string_view image_tag(const ImageLimits& limits, bool rgb) {
  switch (limits.draft_halves) {
    case 0: return rgb ? tag_of(kTagRgb) : tag_of(kTagEncoded);
    case 4: return rgb ? tag_of(kTagRgbFast) : tag_of(kTagEncodedFast);
    default: return rgb ? tag_of(kTagRgbFastest) : tag_of(kTagEncodedFastest);
  }
}

std::string num(int64_t v) { return std::to_string(v); }

// Python's repr() of a str, enough for messages: single quotes, escapes for ' \ and controls.
std::string py_repr(const std::string& s) {
  std::string out = "'";
  for (unsigned char c : s) {
    if (c == '\'' || c == '\\') out += '\\', out += static_cast<char>(c);
    else if (c == '\n') out += "\\n";
    else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else out += static_cast<char>(c);
  }
  return out + "'";
}

std::string shorten(const std::string& text, size_t limit = 120) {
  return text.size() <= limit ? text : text.substr(0, limit - 3) + "...";
}

std::array<uint8_t, 32> sha256_of(std::initializer_list<std::pair<const void*, size_t>> parts) {
  std::array<uint8_t, 32> out{};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  if (!ctx) throw Error(VLF_ERR_OUT_OF_MEMORY, "EVP_MD_CTX_new failed");
  unsigned int len = 0;
  bool ok = EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) == 1;
  for (const auto& [p, n] : parts) ok = ok && EVP_DigestUpdate(ctx, p, n) == 1;
  ok = ok && EVP_DigestFinal_ex(ctx, out.data(), &len) == 1;
  EVP_MD_CTX_free(ctx);
  if (!ok) throw Error(VLF_ERR_INTERNAL, "SHA-256 failed");
  return out;
}

// Characters (code points) before byte `pos` of valid UTF-8.
size_t char_index(const std::string& s, size_t pos) {
  size_t n = 0;
  for (size_t i = 0; i < pos; ++i) n += (static_cast<unsigned char>(s[i]) & 0xC0) != 0x80;
  return n;
}

}  // namespace

void ModelConfig::validate() const {
  auto bad = [](const std::string& m) { return Error(VLF_ERR_CONFIG, m); };
  if (hidden_size <= 0 || hidden_size % 4)
    throw bad("hidden_size=" + num(hidden_size) + ": must be a positive multiple of 4 (sincos2d uses D/4)");
  if (patch_size <= 0 || image_size <= 0 || image_size % patch_size)
    throw bad("image_size=" + num(image_size) + " is not a multiple of patch_size=" + num(patch_size));
  if (vocab_rows < kTokenizerSize || vocab_rows % 128)
    throw bad("vocab_rows=" + num(vocab_rows) + ": must be >= " + num(kTokenizerSize) + " and a multiple of 128");
  if (!(0 < max_text_tokens && max_text_tokens <= max_seq_len))
    throw bad("max_text_tokens=" + num(max_text_tokens) + " must be in 1..max_seq_len=" + num(max_seq_len));
  if (vision_pos != "sincos2d" && vision_pos != "learned")
    throw bad("vision_pos=" + py_repr(vision_pos) + ": must be 'sincos2d' or 'learned'");
  for (double s : image_std)
    if (!(s > 0)) throw bad("image_mean and image_std need 3 values each, std > 0");
}

std::vector<uint8_t> ImageSource::decode(int64_t size, const ImageLimits& limits) const {
  try {
    std::vector<uint8_t> out(static_cast<size_t>(size * size * 3));
    if (input->kind == ImageInput::Kind::kRgb) {
      resize_bicubic(input->bytes.data(), input->width, input->height, input->width * 3, static_cast<int>(size),
                     static_cast<int>(size), out.data());
    } else {
      const RgbImage im = decode_image(data(), this->size(), limits, limits.draft_halves * size / 2);
      resize_bicubic(im.pixels.data(), im.width, im.height, im.width * 3, static_cast<int>(size),
                     static_cast<int>(size), out.data());
    }
    return out;
  } catch (const Error& e) {
    throw request_error(VLF_ERR_IMAGE, index, where + ": " + e.what());
  } catch (const std::bad_alloc&) {
    throw request_error(VLF_ERR_IMAGE, index, where + ": cannot decode: out of memory");
  }
}

Processor::Processor(const Tokenizer& tokenizer, ModelConfig config, Truncation truncation, ImageLimits limits)
    : tokenizer_(tokenizer), config_(std::move(config)), truncation_(truncation), limits_(limits) {
  config_.validate();
  for (int r = 0; r < 3; ++r) role_ids_[r] = encode(std::string(kRoles[r]) + "\n");
  newline_ids_ = encode("\n");
}

std::vector<int32_t> Processor::encode(const std::string& text) const {
  std::vector<int32_t> ids = tokenizer_.encode(text);
  for (int32_t id : ids)
    if (id < 0 || id >= kNumOrdinaryTokens)
      throw Error(VLF_ERR_TOKENIZER, "the tokenizer returned id " + num(id) + " for ordinary text; ids must be in 0.." +
                                         num(kNumOrdinaryTokens - 1) + " (special tokens are never encoded from text)");
  return ids;
}

namespace {

enum class Seg { kIds, kText, kImage };
struct Segment {
  Seg kind;
  std::vector<int32_t> ids;          // kIds, kText
  const ImageInput* image = nullptr;  // kImage
  std::string where;
  bool more = false;                  // kText: the run has more tokens than `ids` (not all encoded)
  std::string text;                   // kText: the run, until it is encoded
  size_t message = 0;                 // kText: its message, for errors
};

void read_image_file(ImageSource& src, const ImageLimits& limits) {
  const std::string& path = src.input->path;
  const std::string shown = shorten(py_repr(path));
  auto fail = [&](const std::string& reason) { return request_error(VLF_ERR_IMAGE, src.index, src.where + ": " + reason); };
  if (!limits.allow_paths)
    throw fail("file paths are not accepted here (allow_paths is off); send the encoded image as bytes");
  if (path.empty() || path.find('\0') != std::string::npos)
    throw fail(shown + " is not a usable file path (a str image value is a path; pass bytes for encoded data)");
  // O_NONBLOCK: opening a FIFO must not hang; non-regular files are refused below.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    throw fail("cannot read " + shown + ": " + std::strerror(errno) +
               " (a str image value is a path; pass bytes for encoded data)");
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw fail("cannot read " + shown + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw fail(shown + " is not a regular file");
  auto check_size = [&](size_t n) {
    if (n == 0) throw fail(shown + " is empty (0 bytes)");
    if (n > limits.max_bytes)
      throw fail(shown + " has " + num(static_cast<int64_t>(n)) + " bytes, over the limit of " +
                 num(static_cast<int64_t>(limits.max_bytes)) + " (max_image_bytes); downscale or recompress it");
  };
  check_size(static_cast<size_t>(st.st_size));
  // Read to EOF (the file may have grown since fstat), never past max_bytes + 1.
  std::vector<uint8_t>& buf = src.file_bytes;
  buf.resize(static_cast<size_t>(st.st_size) + 1);
  size_t got = 0;
  for (;;) {
    if (got == buf.size()) {
      if (buf.size() > limits.max_bytes) break;
      buf.resize(std::min(buf.size() * 2, limits.max_bytes + 1));
    }
    const ssize_t r = ::read(fd, buf.data() + got, buf.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) throw fail("cannot read " + shown + ": " + std::strerror(errno));
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  buf.resize(got);
  check_size(got);
}

ImageSource make_source(const Segment& seg, long index, const ImageLimits& limits) {
  ImageSource src;
  src.input = seg.image;
  src.where = seg.where;
  src.index = index;
  const ImageInput& in = *seg.image;
  auto fail = [&](const std::string& reason) { return request_error(VLF_ERR_IMAGE, index, src.where + ": " + reason); };
  switch (in.kind) {
    case ImageInput::Kind::kFile:
      read_image_file(src, limits);
      break;
    case ImageInput::Kind::kEncoded:
      if (in.bytes.empty()) throw fail("the bytes value is empty (0 bytes)");
      if (in.bytes.size() > limits.max_bytes)
        throw fail("the bytes value has " + num(static_cast<int64_t>(in.bytes.size())) + " bytes, over the limit of " +
                   num(static_cast<int64_t>(limits.max_bytes)) + " (max_image_bytes); downscale or recompress it");
      break;
    case ImageInput::Kind::kRgb:
      try {
        check_image_dims(in.width, in.height, limits);
      } catch (const Error& e) {
        throw fail(e.what());
      }
      break;
  }
  if (in.kind == ImageInput::Kind::kRgb) {
    uint8_t dims[16];
    for (int i = 0; i < 8; ++i) {
      dims[i] = static_cast<uint8_t>(static_cast<uint64_t>(in.width) >> (8 * i));
      dims[8 + i] = static_cast<uint8_t>(static_cast<uint64_t>(in.height) >> (8 * i));
    }
    const std::string_view tag = image_tag(limits, true);
    src.key = sha256_of({{tag.data(), tag.size()}, {dims, 16}, {in.bytes.data(), in.bytes.size()}});
  } else {
    const std::string_view tag = image_tag(limits, false);
    src.key = sha256_of({{tag.data(), tag.size()}, {src.data(), src.size()}});
  }
  return src;
}

}  // namespace

// Python's Processor._encode_runs: the first Tokenizer::kFullChars characters of a request's text
// are encoded in full (exact counts); a later run from an exact prefix while kept tokens are still
// missing, and not at all once they are all there (it then counts as one token, `more`).
template <typename Fail>
void encode_runs_impl(std::vector<Segment>& segs, int64_t image_tokens, const Tokenizer& tok, const ModelConfig& cfg,
                      const Fail& fail) {
  int64_t fixed = image_tokens;
  for (const Segment& s : segs)
    if (s.kind == Seg::kIds) fixed += static_cast<int64_t>(s.ids.size());
  int64_t left = std::max<int64_t>(0, std::min(cfg.max_text_tokens, cfg.max_seq_len - fixed));
  size_t full_left = Tokenizer::kFullChars;
  for (Segment& s : segs) {
    if (s.kind != Seg::kText) continue;
    size_t n = 0;
    for (unsigned char c : s.text) n += (c & 0xC0) != 0x80;
    if (n <= full_left) {
      tok.encode(s.text, s.ids);
      full_left -= n;
    } else if (left == 0) {
      s.more = true;  // non-empty, so at least one token; all of it is dropped
    } else {
      try {
        s.more = !tok.encode_prefix(s.text, static_cast<size_t>(left), s.ids, 0);
      } catch (const Error& e) {
        if (e.code() != VLF_ERR_REQUEST) throw;
        throw fail("message " + num(static_cast<int64_t>(s.message)) + ": " + e.what());
      }
    }
    for (int32_t id : s.ids)
      if (id < 0 || id >= kNumOrdinaryTokens)
        throw Error(VLF_ERR_TOKENIZER, "the tokenizer returned id " + num(id) + " for ordinary text; ids must be in 0.." +
                                           num(kNumOrdinaryTokens - 1) + " (special tokens are never encoded from text)");
    left = std::max<int64_t>(0, left - static_cast<int64_t>(s.ids.size()));
    std::string().swap(s.text);
  }
}

Layout Processor::layout(const Request& request, long index) const {
  auto fail = [&](const std::string& m) { return request_error(VLF_ERR_REQUEST, index, m); };
  if (request.messages.empty()) throw fail("the request has no messages");
  const int64_t per_image = config_.tokens_per_image() + 2;
  std::vector<Segment> segs;
  int64_t n_images = 0;
  size_t m_now = 0;
  auto flush = [&](std::string& run, bool& have_run) {  // encoded below, once the budget is known
    if (!have_run) return;
    Segment seg{Seg::kText, {}, nullptr, {}};
    seg.text = std::move(run);
    seg.message = m_now;
    segs.push_back(std::move(seg));
    run.clear();
    have_run = false;
  };
  for (size_t m = 0; m < request.messages.size(); ++m) {
    const Message& msg = request.messages[m];
    m_now = m;
    const std::string where = "message " + num(static_cast<int64_t>(m));
    int role = -1;
    for (int r = 0; r < 3; ++r)
      if (msg.role == kRoles[r]) role = r;
    if (role < 0) throw fail(where + ": role " + py_repr(msg.role) + " is not one of ['system', 'user', 'assistant']");
    Segment start{Seg::kIds, {kImStartId}, nullptr, {}};
    start.ids.insert(start.ids.end(), role_ids_[role].begin(), role_ids_[role].end());
    segs.push_back(std::move(start));
    std::string run;
    bool have_run = false;
    for (size_t i = 0; i < msg.items.size(); ++i) {
      const Item& item = msg.items[i];
      const std::string at = where + ", item " + num(static_cast<int64_t>(i));
      if (!item.is_image) {
        const size_t bad = find_invalid_utf8(item.text);
        if (bad != std::string::npos)
          throw fail(at + ": text is not valid UTF-8 at byte " + num(static_cast<int64_t>(bad)) +
                     "; decode it to Unicode first");
        const size_t nul = item.text.find('\0');
        if (nul != std::string::npos)
          throw fail(at + ": text has a NUL character at position " + num(static_cast<int64_t>(char_index(item.text, nul))) +
                     "; NUL is refused (C servers cut strings at NUL)");
        run += item.text;
        have_run = true;
        continue;
      }
      flush(run, have_run);
      segs.push_back({Seg::kImage, {}, &item.image, "image " + num(n_images) + " (" + at + ")"});
      ++n_images;
    }
    flush(run, have_run);
    Segment end{Seg::kIds, {kImEndId}, nullptr, {}};
    end.ids.insert(end.ids.end(), newline_ids_.begin(), newline_ids_.end());
    segs.push_back(std::move(end));
  }
  if (request.add_generation_prompt) {
    Segment prompt{Seg::kIds, {kImStartId}, nullptr, {}};
    prompt.ids.insert(prompt.ids.end(), role_ids_[2].begin(), role_ids_[2].end());
    segs.push_back(std::move(prompt));
  }

  encode_runs_impl(segs, n_images * per_image, tokenizer_, config_, fail);

  // Limits (SPEC §1.3): drop from the end of the last text run, then the one before.
  int64_t text = 0, fixed = n_images * per_image, n_more = 0;
  for (const Segment& s : segs) {
    if (s.kind == Seg::kText) text += static_cast<int64_t>(s.ids.size()) + s.more, n_more += s.more;
    if (s.kind == Seg::kIds) fixed += static_cast<int64_t>(s.ids.size());
  }
  const std::string at_least = n_more ? "at least " : "";
  const int64_t over = std::max(text - config_.max_text_tokens, fixed + text - config_.max_seq_len);
  int64_t dropped = 0;
  if (over > 0) {
    if (fixed > config_.max_seq_len)
      throw fail("the request needs " + num(fixed) + " template and image tokens even with all text dropped, " +
                 num(fixed - config_.max_seq_len) + " over max_seq_len=" + num(config_.max_seq_len) + " (" +
                 num(n_images) + " images take " + num(per_image) +
                 " tokens each); send fewer images or split the request");
    if (truncation_ == Truncation::kError)
      throw fail("the request has " + at_least + num(text) + " text tokens (max_text_tokens=" +
                 num(config_.max_text_tokens) + ") and " + at_least + num(fixed + text) + " tokens in all (max_seq_len=" +
                 num(config_.max_seq_len) + ", images take " + num(per_image) + " tokens each): " + at_least +
                 num(over) + " tokens over; shorten the text or use truncation='truncate'");
    int64_t left = over - n_more;  // keep the first text - over of the counted tokens
    for (auto it = segs.rbegin(); it != segs.rend() && left > 0; ++it) {
      if (it->kind != Seg::kText) continue;
      const int64_t cut = std::min<int64_t>(left, static_cast<int64_t>(it->ids.size()));
      it->ids.resize(it->ids.size() - static_cast<size_t>(cut));
      left -= cut;
    }
    dropped = over;
  }

  // Images are read only once the request is known to fit.
  Layout lay;
  for (const Segment& s : segs)
    if (s.kind == Seg::kImage) lay.images.push_back(make_source(s, index, limits_));

  const size_t L = static_cast<size_t>(config_.max_seq_len);
  lay.input_ids.assign(L, kPadId);
  lay.attention_mask.assign(L, 0);
  lay.image_attention_mask.assign(L, 0);
  size_t t = 0;
  auto put = [&](int64_t id) {
    lay.input_ids[t] = id;
    lay.attention_mask[t] = 1;
    lay.image_attention_mask[t] = id == kImagePadId;
    ++t;
  };
  for (const Segment& s : segs) {
    if (s.kind == Seg::kImage) {
      put(kVisionStartId);
      for (int64_t k = 0; k < config_.tokens_per_image(); ++k) put(kImagePadId);
      put(kVisionEndId);
    } else {
      for (int32_t id : s.ids) put(id);
    }
  }
  lay.num_tokens = static_cast<int64_t>(t);
  lay.dropped_tokens = dropped;
  return lay;
}

}  // namespace vlfront::impl
