// OpenAI chat-completions shapes in a request, as Python's
// vlfront.runtime.openai_compat: one table (runtime/openai_fields.json,
// compiled in) says which request fields are ignored and which refused, and
// which message keys, image_url keys and item types are refused. image_url
// values must be data: URLs; remote and file: URLs are refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vlfront::impl::openai {

// Refused fields (first by sorted key), then keys that are neither ours
// (`own`, sorted) nor ignored OpenAI fields. Raises Error(VLF_ERR_REQUEST).
void check_request_fields(const nlohmann::json& request, const std::vector<std::string>& own, long index);
// A message key OpenAI defines that the template cannot render (name, tool_calls, ...).
void check_message_keys(const nlohmann::json& message, const std::string& where, long index);
// An OpenAI item type the front-end does not take (input_audio, file, ...).
void check_item_type(const std::string& kind, const std::string& where, long index);
// The encoded image of an image_url value ({"url": "data:..."} or the URL string).
// Raises Error(VLF_ERR_REQUEST) for a bad shape or URL, VLF_ERR_IMAGE for bad base64.
std::vector<uint8_t> image_url_bytes(const nlohmann::json& value, const std::string& where, long index);

}  // namespace vlfront::impl::openai
