#include <gtest/gtest.h>

#include <fstream>

#include "error.h"
#include "processor.h"

namespace vlfront::impl {
namespace {

const Tokenizer* tokenizer() {
  static std::unique_ptr<Tokenizer> tok =
      std::ifstream(VLFRONT_TEST_RANKS).good() ? Tokenizer::from_tiktoken(VLFRONT_TEST_RANKS) : nullptr;
  return tok.get();
}

#define NEED_TOKENIZER() \
  if (!tokenizer()) GTEST_SKIP() << "no Qwen ranks at " VLFRONT_TEST_RANKS " (run `make setup`)"

Request chat(std::initializer_list<std::pair<const char*, std::vector<Item>>> messages) {
  Request r;
  for (const auto& [role, items] : messages) r.messages.push_back({role, items});
  return r;
}
Item text(const std::string& s) { return Item{false, s, {}}; }
Item rgb(int w, int h) {
  Item it;
  it.is_image = true;
  it.image.kind = ImageInput::Kind::kRgb;
  it.image.width = w, it.image.height = h;
  it.image.bytes.assign(static_cast<size_t>(w * h * 3), 128);
  return it;
}

std::string error_of(const Processor& p, const Request& r) {
  try {
    p.layout(r, 2);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Processor, TemplateOfOneTurn) {
  NEED_TOKENIZER();
  Processor p(*tokenizer(), ModelConfig{}, Truncation::kTruncate, {});
  const Layout lay = p.layout(chat({{"user", {text("Hello world")}}}), 0);
  // <|im_start|> user \n Hello world <|im_end|> \n <|im_start|> assistant \n
  const std::vector<int64_t> want = {kImStartId, 872, 198, 9707, 1879, kImEndId, 198, kImStartId, 77091, 198};
  ASSERT_EQ(lay.num_tokens, static_cast<int64_t>(want.size()));
  EXPECT_EQ(std::vector<int64_t>(lay.input_ids.begin(), lay.input_ids.begin() + lay.num_tokens), want);
  EXPECT_EQ(lay.input_ids.size(), 1024u);
  EXPECT_EQ(lay.input_ids[lay.num_tokens], kPadId);
  EXPECT_EQ(lay.attention_mask[lay.num_tokens - 1], 1);
  EXPECT_EQ(lay.attention_mask[lay.num_tokens], 0);
}

TEST(Processor, ImagesAndTextRuns) {
  NEED_TOKENIZER();
  Processor p(*tokenizer(), ModelConfig{}, Truncation::kTruncate, {});
  const Layout a = p.layout(chat({{"user", {text("Hel"), text("lo world"), rgb(4, 3), text("x")}}}), 0);
  const Layout b = p.layout(chat({{"user", {text("Hello world"), rgb(4, 3), text("x")}}}), 0);
  EXPECT_EQ(a.input_ids, b.input_ids);  // a run of text items is encoded once
  ASSERT_EQ(a.images.size(), 1u);
  EXPECT_EQ(a.images[0].where, "image 0 (message 0, item 2)");
  int64_t pads = 0;
  for (size_t t = 0; t < a.input_ids.size(); ++t) {
    pads += a.image_attention_mask[t];
    EXPECT_EQ(a.image_attention_mask[t], a.input_ids[t] == kImagePadId);
  }
  EXPECT_EQ(pads, 196);
}

TEST(Processor, SameImageSameKeyDifferentPixelsDifferentKey) {
  NEED_TOKENIZER();
  Processor p(*tokenizer(), ModelConfig{}, Truncation::kTruncate, {});
  Item other = rgb(4, 3);
  other.image.bytes[0] = 1;
  const Layout lay = p.layout(chat({{"user", {rgb(4, 3), rgb(4, 3), other, rgb(3, 4)}}}), 0);
  EXPECT_EQ(lay.images[0].key, lay.images[1].key);
  EXPECT_NE(lay.images[0].key, lay.images[2].key);
  EXPECT_NE(lay.images[0].key, lay.images[3].key);  // same bytes, other shape
}

TEST(Processor, TruncatesFromTheLastRun) {
  NEED_TOKENIZER();
  ModelConfig cfg;
  cfg.max_text_tokens = 8;
  Processor p(*tokenizer(), cfg, Truncation::kTruncate, {});
  // "a a a ..." encodes one token per word: runs of 6 and 6 -> 4 dropped from the second.
  const Layout lay = p.layout(chat({{"user", {text("a a a a a a")}}, {"user", {text("b b b b b b")}}}), 0);
  EXPECT_EQ(lay.dropped_tokens, 4);
  const Layout fits = p.layout(chat({{"user", {text("a a a a")}}}), 0);
  EXPECT_EQ(fits.dropped_tokens, 0);
}

TEST(Processor, TruncationErrorPolicyAndUnfittable) {
  NEED_TOKENIZER();
  ModelConfig cfg;
  cfg.max_text_tokens = 3;
  Processor strict(*tokenizer(), cfg, Truncation::kError, {});
  const std::string e = error_of(strict, chat({{"user", {text("a a a a a a")}}}));
  EXPECT_EQ(e.rfind("request 2: the request has 6 text tokens (max_text_tokens=3)", 0), 0u) << e;
  Processor p(*tokenizer(), ModelConfig{}, Truncation::kTruncate, {});
  Request many = chat({{"user", {rgb(2, 2), rgb(2, 2), rgb(2, 2), rgb(2, 2), rgb(2, 2), rgb(2, 2)}}});
  const std::string u = error_of(p, many);
  EXPECT_NE(u.find("template and image tokens even with all text dropped"), std::string::npos) << u;
}

TEST(Processor, RefusesBadText) {
  NEED_TOKENIZER();
  Processor p(*tokenizer(), ModelConfig{}, Truncation::kTruncate, {});
  EXPECT_EQ(error_of(p, chat({{"user", {text(std::string("a\0b", 3))}}})),
            "request 2: message 0, item 0: text has a NUL character at position 1; NUL is refused (C servers cut "
            "strings at NUL)");
  EXPECT_NE(error_of(p, chat({{"user", {text("ok \xff")}}})).find("not valid UTF-8 at byte 3"), std::string::npos);
  EXPECT_EQ(error_of(p, chat({{"robot", {text("x")}}})),
            "request 2: message 0: role 'robot' is not one of ['system', 'user', 'assistant']");
  EXPECT_EQ(error_of(p, Request{}), "request 2: the request has no messages");
}

TEST(Processor, ImageSourcesAreCheckedAfterTheFit) {
  NEED_TOKENIZER();
  Processor p(*tokenizer(), ModelConfig{}, Truncation::kTruncate, {});
  Item missing;
  missing.is_image = true;
  missing.image.kind = ImageInput::Kind::kFile;
  missing.image.path = "/nonexistent/x.jpg";
  EXPECT_NE(error_of(p, chat({{"user", {missing}}})).find("cannot read '/nonexistent/x.jpg'"), std::string::npos);
  Item empty;
  empty.is_image = true;
  EXPECT_NE(error_of(p, chat({{"user", {empty}}})).find("the bytes value is empty"), std::string::npos);
  ImageLimits no_paths;
  no_paths.allow_paths = false;
  Processor locked(*tokenizer(), ModelConfig{}, Truncation::kTruncate, no_paths);
  EXPECT_NE(error_of(locked, chat({{"user", {missing}}})).find("file paths are not accepted"), std::string::npos);
}

TEST(Config, ValidatesLikePython) {
  ModelConfig c;
  c.hidden_size = 63;
  EXPECT_THROW(c.validate(), Error);
  c = ModelConfig{};
  c.vocab_rows = 151669;  // not a multiple of 128
  EXPECT_THROW(c.validate(), Error);
  c = ModelConfig{};
  c.vision_pos = "rope";
  EXPECT_THROW(c.validate(), Error);
  EXPECT_NO_THROW(ModelConfig{}.validate());
}

TEST(RequestJson, ParsesAndRefuses) {
  const Request r = request_from_json(
      R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
          {"type": "image", "image": {"base64": "aGVsbG8="}}, {"type": "image", "image": "/tmp/x.png"}]}],
          "add_generation_prompt": false})");
  ASSERT_EQ(r.messages.size(), 1u);
  EXPECT_FALSE(r.add_generation_prompt);
  EXPECT_EQ(r.messages[0].items[1].image.bytes, std::vector<uint8_t>({'h', 'e', 'l', 'l', 'o'}));
  EXPECT_EQ(r.messages[0].items[2].image.path, "/tmp/x.png");
  auto error = [](const std::string& json) {
    try {
      request_from_json(json, 4);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error("[]"), "request 4: the request has no messages");
  EXPECT_EQ(error(R"({"messages": [], "x": 1})"),
            "request 4: unknown request keys ['x']; allowed: ['add_generation_prompt', 'messages'] and the OpenAI "
            "fields that cannot change the output (docs/openai.md)");
  // OpenAI shapes (runtime/openai_fields.json, compiled in): ignored fields, image_url data URLs, refusals.
  const Request o = request_from_json(
      R"({"model": "m", "stream": true, "messages": [{"role": "user", "content": [
          {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}},
          {"type": "image_url", "image_url": "DATA:image/jpeg;name=x;BASE64,aGVsbG8"}]}]})");
  EXPECT_EQ(o.messages[0].items[0].image.bytes, std::vector<uint8_t>({'h', 'e', 'l', 'l', 'o'}));
  EXPECT_EQ(o.messages[0].items[1].image.bytes, o.messages[0].items[0].image.bytes);
  EXPECT_EQ(error(R"({"messages": [], "n": 2})").rfind("request 4: 'n' is refused: ", 0), 0u);
  EXPECT_EQ(error(R"([{"role": "user", "content": [{"type": "image_url", "image_url": "https://x/y.png"}]}])")
                .rfind("request 4: message 0, item 0: remote https: URLs are not fetched here", 0), 0u);
  EXPECT_EQ(error(R"([{"role": "user", "content": [{"type": "text", "text": 3}]}])"),
            "request 4: message 0, item 0: text must be a str, got int");
  EXPECT_NE(error("[{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error(R"([{"role": "user", "content": [{"type": "image", "image": {"base64": "@@"}}]}])").find("base64"),
            std::string::npos);
}

}  // namespace
}  // namespace vlfront::impl
