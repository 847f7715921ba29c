// A request (SPEC §1): a chat of messages whose content is text and image items.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vlfront::impl {

struct ImageInput {
  enum class Kind { kEncoded, kFile, kRgb };
  Kind kind = Kind::kEncoded;
  std::vector<uint8_t> bytes;  // kEncoded: the file bytes; kRgb: height*width*3 packed pixels
  std::string path;            // kFile
  int64_t height = 0, width = 0;
};

struct Item {
  bool is_image = false;
  std::string text;  // UTF-8
  ImageInput image;
};

struct Message {
  std::string role;
  std::vector<Item> items;
};

struct Request {
  std::vector<Message> messages;
  bool add_generation_prompt = true;
};

// Parses the JSON form: a list of messages or {"messages": [...],
// "add_generation_prompt": bool}; content a string or a list of items
// {"type": "text", "text": str} / {"type": "image", "image": path | {"base64": str}} /
// {"type": "image_url", "image_url": {"url": "data:image/...;base64,..."} | "data:..."}.
// OpenAI fields are ignored or refused per runtime/openai_fields.json (openai_compat.h);
// unknown keys are refused, as in Python's processor. Raises Error(VLF_ERR_REQUEST).
Request request_from_json(std::string_view json, long index = -1);  // json is only read, never copied

}  // namespace vlfront::impl
