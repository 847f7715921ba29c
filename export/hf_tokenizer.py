"""The files that let Hugging Face `transformers` load a bundle's tokenizer with our chat template.

`AutoTokenizer.from_pretrained(bundle_dir)` reads `tokenizer.json` (the
tokenizer itself, SPEC 1.2), `tokenizer_config.json` (class, special tokens,
`chat_template`) and `special_tokens_map.json`. The chat template renders the
SPEC 1.3 layout as a string:

    <|im_start|>{role}\\n{content}<|im_end|>\\n ... [<|im_start|>assistant\\n]

with an image (`{"type": "image"}` or `{"type": "image_url"}`) as
`<|vision_start|>` + tokens_per_image x `<|image_pad|>` + `<|vision_end|>`, so that
`tokenizer.apply_chat_template(messages, add_generation_prompt=True)` gives the
runtime's `input_ids` before padding. Two cases differ, because transformers
tokenizes the rendered string as one text where we encode the role header and
each text run apart (docs/transformers.md):

* text holding a special-token string (`"<|im_start|>"`): transformers reads it
  as the special token; we always encode user text as ordinary text;
* a message whose first text starts with whitespace holding a line break
  (`"\\nHi"`): the regex joins it with the header's `"\\n"` into one piece.

Both files are deterministic bytes (sorted keys), listed and hashed in the manifest.
"""

from __future__ import annotations

import json
import pathlib

from vlfront.config import PAD_ID, SPECIAL_TOKENS, Config

TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
HF_FILES = (TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)

# Jinja, as transformers runs it (whitespace control strips the template's own layout).
_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'text' -%}"
    "{{- item['text'] -}}"
    "{%- elif item['type'] in ['image', 'image_url'] -%}"
    "{{- '<|vision_start|>' + '<|image_pad|>' * TOKENS_PER_IMAGE + '<|vision_end|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)


def chat_template(config: Config) -> str:
    """The Jinja chat template of SPEC 1.3 for `config` (tokens_per_image pads per image)."""
    return _TEMPLATE.replace("TOKENS_PER_IMAGE", str(config.tokens_per_image))


def tokenizer_config(config: Config) -> dict:
    """tokenizer_config.json: a fast tokenizer over tokenizer.json, no BOS, <|im_end|> ends a turn."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": chat_template(config),
        "added_tokens_decoder": {
            str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True}
            for i, s in sorted(SPECIAL_TOKENS.items())
        },
        "additional_special_tokens": [SPECIAL_TOKENS[i] for i in sorted(SPECIAL_TOKENS)],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": SPECIAL_TOKENS[PAD_ID],
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "model_max_length": config.max_seq_len,
        "padding_side": "right",
        "errors": "replace",
    }


def special_tokens_map() -> dict:
    return {"eos_token": "<|im_end|>", "pad_token": SPECIAL_TOKENS[PAD_ID],
            "additional_special_tokens": [SPECIAL_TOKENS[i] for i in sorted(SPECIAL_TOKENS)]}


def write_hf_files(root: str | pathlib.Path, config: Config) -> list[pathlib.Path]:
    """Write tokenizer_config.json and special_tokens_map.json into `root` (beside tokenizer.json).

    Returns:
        The paths written.
    """
    root = pathlib.Path(root)
    out = []
    for name, doc in ((TOKENIZER_CONFIG, tokenizer_config(config)), (SPECIAL_TOKENS_MAP, special_tokens_map())):
        path = root / name
        path.write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        out.append(path)
    return out
