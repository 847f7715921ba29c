// The JSON form of a request; checks and messages follow Python's processor.
#include <algorithm>
#include <set>

#include <nlohmann/json.hpp>

#include "base64.h"
#include "error.h"
#include "json_guard.h"
#include "openai_compat.h"
#include "py_show.h"
#include "request.h"

namespace vlfront::impl {

namespace {

using nlohmann::json;

std::string py_list(std::vector<std::string> keys) {
  std::sort(keys.begin(), keys.end());
  std::string out = "[";
  for (size_t i = 0; i < keys.size(); ++i) out += (i ? ", '" : "'") + keys[i] + "'";
  return out + "]";
}

std::vector<std::string> keys_of(const json& obj) {
  std::vector<std::string> k;
  for (const auto& [key, _] : obj.items()) k.push_back(key);
  return k;
}

// Never the whole client value (deep lists, huge strings): py_show.h, as Python's _show.
std::string py_value(const json& v) { return py_show(v); }

Item parse_item(const json& item, long index, const std::string& at) {
  auto fail = [&](const std::string& m) { return request_error(VLF_ERR_REQUEST, index, at + ": " + m); };
  if (!item.is_object())
    throw fail("an item must be a dict like {'type': 'text', 'text': ...}, got " + py_type(item));
  const auto type = item.find("type");
  const std::string kind = (type != item.end() && type->is_string()) ? type->get<std::string>() : "";
  if (!kind.empty()) openai::check_item_type(kind, at, index);
  if (kind != "text" && kind != "image" && kind != "image_url")
    throw fail("type " + (type == item.end() ? std::string("None") : py_value(*type)) +
               " is not 'text', 'image' or 'image_url'");
  const std::vector<std::string> want = {"type", kind};
  std::vector<std::string> have = keys_of(item);
  std::sort(have.begin(), have.end());
  std::vector<std::string> sorted_want = want;
  std::sort(sorted_want.begin(), sorted_want.end());
  if (have != sorted_want)
    throw fail("a " + kind + " item needs exactly the keys " + py_list(want) + ", got " + py_keys(have));
  const json& value = item[kind];
  Item out;
  if (kind == "text") {
    if (!value.is_string()) throw fail("text must be a str, got " + py_type(value));
    out.text = value.get<std::string>();
    return out;
  }
  out.is_image = true;
  if (kind == "image_url") {  // OpenAI's form: a data: URL, decoded to the encoded image
    out.image.kind = ImageInput::Kind::kEncoded;
    out.image.bytes = openai::image_url_bytes(value, at, index);
  } else if (value.is_string()) {
    out.image.kind = ImageInput::Kind::kFile;
    out.image.path = value.get<std::string>();
  } else if (value.is_object() && value.size() == 1 && value.contains("base64") && value["base64"].is_string()) {
    out.image.kind = ImageInput::Kind::kEncoded;
    if (!base64_decode(value["base64"].get<std::string>(), out.image.bytes))
      throw request_error(VLF_ERR_IMAGE, index, at + ": the \"base64\" value is not valid base64");
  } else {
    throw fail("image value of type " + py_type(value) +
               " is not supported; pass a file path or {\"base64\": \"...\"} with the encoded image");
  }
  return out;
}

}  // namespace

Request request_from_json(std::string_view text, long index) {
  auto fail = [&](const std::string& m) { return request_error(VLF_ERR_REQUEST, index, m); };
  json doc;
  try {
    doc = json_guard::parse(text, "the request");  // UTF-8, depth <= 64, no client bytes in the message
  } catch (const json_guard::Refused& e) {
    throw fail(e.what());
  }
  Request req;
  const json* messages = &doc;
  if (doc.is_object()) {
    if (!doc.contains("messages"))
      throw fail("a request dict needs a 'messages' list; got keys " + py_keys(keys_of(doc)) +
                 " (to lay out several requests, pass a list of them)");
    openai::check_request_fields(doc, {"add_generation_prompt", "messages"}, index);  // ignored or refused
    if (doc.contains("add_generation_prompt")) {
      if (!doc["add_generation_prompt"].is_boolean())
        throw fail("add_generation_prompt must be true or false, got " + py_value(doc["add_generation_prompt"]));
      req.add_generation_prompt = doc["add_generation_prompt"].get<bool>();
    }
    messages = &doc["messages"];
  }
  if (!messages->is_array()) throw fail("messages must be a list, got " + py_type(*messages));
  if (messages->empty()) throw fail("the request has no messages");
  for (size_t m = 0; m < messages->size(); ++m) {
    const json& msg = (*messages)[m];
    const std::string where = "message " + std::to_string(m);
    if (!msg.is_object())
      throw fail(where + ": must be a dict with 'role' and 'content', got " + py_type(msg));
    openai::check_message_keys(msg, where, index);
    std::vector<std::string> missing, unknown;
    for (const char* k : {"content", "role"})
      if (!msg.contains(k)) missing.push_back(k);
    for (const auto& k : keys_of(msg))
      if (k != "content" && k != "role") unknown.push_back(k);
    if (!missing.empty() || !unknown.empty())
      throw fail(where + ": needs exactly the keys ['content', 'role']; missing " + py_list(missing) + ", unknown " +
                 py_keys(unknown));
    const json& role = msg["role"];
    const json& content = msg["content"];
    if (!role.is_string())
      throw fail(where + ": role must be one of ['system', 'user', 'assistant'], got " + py_type(role));
    if (role != "system" && role != "user" && role != "assistant")
      throw fail(where + ": role " + py_value(role) + " is not one of ['system', 'user', 'assistant']");
    Message out;
    out.role = role.get<std::string>();
    if (content.is_string()) {
      Item item;
      // doc is this function's own: the text (up to a 32 MiB body) moves out of it, no copy
      item.text = std::move(*const_cast<json&>(content).get_ptr<std::string*>());
      out.items.push_back(std::move(item));
    } else if (content.is_array()) {
      for (size_t i = 0; i < content.size(); ++i)
        out.items.push_back(parse_item(content[i], index, where + ", item " + std::to_string(i)));
    } else {
      throw fail(where + ": content must be a str or a list of items, got " + py_type(content));
    }
    req.messages.push_back(std::move(out));
  }
  return req;
}

}  // namespace vlfront::impl
