// The C ABI and the C++ wrapper: argument checks, ownership, and (when a tiny
// bundle was exported by the ctest fixture) embedding, concurrency and the batcher.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "vlfront/vlfront.h"
#include "vlfront/vlfront.hpp"

namespace {

bool have_bundle() { return std::filesystem::exists(std::string(VLFRONT_TEST_BUNDLE) + "/manifest.json"); }
#define NEED_BUNDLE() \
  if (!have_bundle()) GTEST_SKIP() << "no tiny bundle at " VLFRONT_TEST_BUNDLE " (the export fixture did not run)"

vlf_status_code code_of(vlf_status* s) {
  const vlf_status_code c = vlf_status_get_code(s);
  vlf_status_destroy(s);
  return c;
}

TEST(CApi, NullArgumentsAreStatusesNotCrashes) {
  EXPECT_EQ(vlf_status_get_code(nullptr), VLF_OK);
  EXPECT_STREQ(vlf_status_get_message(nullptr), "");
  vlf_status_destroy(nullptr);
  vlf_tokenizer_destroy(nullptr);
  vlf_runtime_destroy(nullptr);
  vlf_request_destroy(nullptr);
  vlf_embeddings_destroy(nullptr);
  vlf_batcher_destroy(nullptr);
  EXPECT_EQ(code_of(vlf_tokenizer_create(nullptr, nullptr)), VLF_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(code_of(vlf_runtime_create("x", nullptr, nullptr)), VLF_ERR_INVALID_ARGUMENT);
  vlf_runtime* rt = nullptr;
  EXPECT_EQ(code_of(vlf_runtime_create("/nonexistent/bundle", nullptr, &rt)), VLF_ERR_BUNDLE);
  EXPECT_EQ(rt, nullptr);  // out-pointers are written only on success
  EXPECT_EQ(code_of(vlf_runtime_embed(nullptr, nullptr, 0, nullptr)), VLF_ERR_INVALID_ARGUMENT);
}

TEST(CApi, OptionsNameTheKeyAndValue) {
  vlf_runtime_options* o = nullptr;
  ASSERT_EQ(vlf_runtime_options_create(&o), nullptr);
  vlf_status* s = vlf_runtime_options_set(o, "precision", "fp64");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(vlf_status_get_code(s), VLF_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(vlf_status_get_message(s)).find("precision='fp64'"), std::string::npos);
  vlf_status_destroy(s);
  EXPECT_EQ(code_of(vlf_runtime_options_set(o, "colour", "1")), VLF_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(code_of(vlf_runtime_options_set(o, "threads", "-1")), VLF_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(vlf_runtime_options_set(o, "threads", "2"), nullptr);
  vlf_runtime_options_destroy(o);
}

TEST(CApi, RequestBuilderChecksOrder) {
  vlf_request* r = nullptr;
  ASSERT_EQ(vlf_request_create(&r), nullptr);
  EXPECT_EQ(code_of(vlf_request_add_text(r, "x", 1)), VLF_ERR_INVALID_ARGUMENT);  // no message yet
  EXPECT_EQ(code_of(vlf_request_add_message(r, "robot")), VLF_ERR_REQUEST);
  EXPECT_EQ(vlf_request_add_message(r, "user"), nullptr);
  EXPECT_EQ(vlf_request_add_text(r, "x", 1), nullptr);
  const uint8_t px[12] = {};
  EXPECT_EQ(code_of(vlf_request_add_image_rgb(r, px, 2, 2, 5)), VLF_ERR_IMAGE);  // stride < 3*width
  EXPECT_EQ(vlf_request_add_image_rgb(r, px, 2, 2, 6), nullptr);
  vlf_request_destroy(r);
}

TEST(Wrapper, HandlesAreMoveOnly) {
  static_assert(!std::is_copy_constructible_v<vlfront::Request>);
  static_assert(!std::is_copy_assignable_v<vlfront::Runtime>);
  static_assert(std::is_nothrow_move_constructible_v<vlfront::Embeddings>);
  vlfront::Request a;
  a.add_message("user").add_text("hi");
  vlfront::Request b = std::move(a);
  EXPECT_EQ(a.get(), nullptr);  // moved-from owns nothing: no double free
  EXPECT_NE(b.get(), nullptr);
  a = std::move(b);
  EXPECT_NE(a.get(), nullptr);
  try {
    vlfront::Runtime rt("/nonexistent/bundle");
    FAIL();
  } catch (const vlfront::Exception& e) {
    EXPECT_EQ(e.code(), VLF_ERR_BUNDLE);
    EXPECT_NE(std::string(e.what()).find("no manifest.json"), std::string::npos);
  }
}

TEST(Runtime, EmbedsTextAndImages) {
  NEED_BUNDLE();
  vlfront::Runtime rt(VLFRONT_TEST_BUNDLE, vlfront::RuntimeOptions().set("threads", "1"));
  EXPECT_EQ(rt.backend(), "onnxruntime");
  const int64_t D = rt.get_int("hidden_size");
  std::vector<uint8_t> pixels(50 * 40 * 3, 90);
  vlfront::Request a, b;
  a.add_message("user").add_text("Hello world");
  b.add_message("user").add_image_rgb(pixels.data(), 40, 50, 150).add_text("What?");
  vlfront::Embeddings out = rt.embed({&a, &b});
  const auto e = out.get(VLF_OUTPUT_INPUTS_EMBEDS);
  EXPECT_EQ(e.shape, (std::vector<int64_t>{2, 1024, D}));
  EXPECT_EQ(out.get(VLF_OUTPUT_PIXEL_VALUES).shape, (std::vector<int64_t>{1, 224, 224, 3}));
  EXPECT_EQ(out.get(VLF_OUTPUT_IMAGES_PER_REQUEST).as<int64_t>()[1], 1);
  EXPECT_EQ(rt.tokenizer().encode("Hello world"), (std::vector<int32_t>{9707, 1879}));
  // The same request alone gives the same row (batching does not change values).
  vlfront::Embeddings alone = rt.embed({&b});
  const float* x = alone.get(VLF_OUTPUT_INPUTS_EMBEDS).as<float>();
  const float* y = e.as<float>() + 1024 * D;
  for (int64_t i = 0; i < 1024 * D; ++i) ASSERT_EQ(x[i], y[i]) << i;
  EXPECT_GE(rt.get_int("cache_hits"), 1);
}

TEST(Runtime, FirstBadRequestFailsTheBatchByIndex) {
  NEED_BUNDLE();
  vlfront::Runtime rt(VLFRONT_TEST_BUNDLE);
  vlfront::Request good, bad;
  good.add_message("user").add_text("fine");
  const uint8_t junk[] = {0xFF, 0xD8, 0xFF, 0x00, 0x01};
  bad.add_message("user").add_image_encoded(junk, sizeof junk);
  try {
    rt.embed({&good, &bad});
    FAIL();
  } catch (const vlfront::Exception& e) {
    EXPECT_EQ(e.code(), VLF_ERR_IMAGE);
    EXPECT_EQ(std::string(e.what()).rfind("request 1: image 0 (message 0, item 0): cannot decode", 0), 0u) << e.what();
  }
}

TEST(Runtime, ConcurrentCallersAndBatcher) {
  NEED_BUNDLE();
  vlfront::Runtime rt(VLFRONT_TEST_BUNDLE, vlfront::RuntimeOptions().set("threads", "1"));
  vlfront::Request req;
  req.add_message("user").add_text("same text for everyone");
  const std::vector<float> want = [&] {
    auto out = rt.embed({&req});
    auto t = out.get(VLF_OUTPUT_INPUTS_EMBEDS);
    return std::vector<float>(t.as<float>(), t.as<float>() + t.numel());
  }();
  vlfront::Batcher batcher(rt, 4, 2000, 64);
  std::vector<std::thread> threads;
  std::atomic<int> equal{0};
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3; ++i) {
        auto out = (t % 2) ? batcher.embed(req) : rt.embed({&req});
        auto e = out.get(VLF_OUTPUT_INPUTS_EMBEDS);
        equal += std::equal(want.begin(), want.end(), e.as<float>());
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(equal.load(), 24);
}

TEST(Batcher, QueueFullAndBadRequestFailsAlone) {
  NEED_BUNDLE();
  vlfront::Runtime rt(VLFRONT_TEST_BUNDLE, vlfront::RuntimeOptions().set("threads", "1"));
  vlf_batcher* b = nullptr;
  EXPECT_EQ(code_of(vlf_batcher_create(rt.get(), 0, 0, 1, &b)), VLF_ERR_INVALID_ARGUMENT);
  vlfront::Batcher batcher(rt, 8, 20000, 64);
  vlfront::Request good, bad;
  good.add_message("user").add_text("ok");
  bad.add_message("user").add_text(std::string("a\0b", 3));
  std::thread t([&] { EXPECT_NO_THROW(batcher.embed(good)); });
  try {
    batcher.embed(bad);
    FAIL();
  } catch (const vlfront::Exception& e) {
    EXPECT_EQ(e.code(), VLF_ERR_REQUEST);
    EXPECT_NE(std::string(e.what()).find("NUL character"), std::string::npos);
  }
  t.join();
}

TEST(Batcher, HeavyTextRunsAloneAndEveryAnswerIsExact) {
  NEED_BUNDLE();
  vlfront::Runtime rt(VLFRONT_TEST_BUNDLE, vlfront::RuntimeOptions().set("threads", "1"));
  std::string words;
  while (words.size() <= (size_t{1} << 20)) words += "many words, 12 of them. ";  // over kHeavyTextBytes
  std::vector<vlfront::Request> reqs(4);
  reqs[0].add_message("user").add_text(words);
  for (int i = 1; i < 4; ++i) reqs[i].add_message("user").add_text("small request " + std::to_string(i));
  std::vector<std::vector<float>> want;
  for (auto& r : reqs) {
    vlfront::Embeddings out = rt.embed({&r});  // the tensor views below live as long as `out`
    auto t = out.get(VLF_OUTPUT_INPUTS_EMBEDS);
    want.emplace_back(t.as<float>(), t.as<float>() + t.numel());
  }
  // A 500 ms window and room for 8: without the heavy lane all four would share one batch.
  vlfront::Batcher batcher(rt, 8, 500000, 64);
  std::vector<std::thread> threads;
  std::atomic<int> equal{0};
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      vlfront::Embeddings out = batcher.embed(reqs[i]);
      auto e = out.get(VLF_OUTPUT_INPUTS_EMBEDS);
      equal += e.numel() == static_cast<int64_t>(want[i].size()) && std::equal(want[i].begin(), want[i].end(), e.as<float>());
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(equal.load(), 4);
  EXPECT_EQ(batcher.get_int("requests"), 4);
  EXPECT_EQ(batcher.get_int("batches"), 2);  // the heavy one alone, the three small ones together
}

}  // namespace
