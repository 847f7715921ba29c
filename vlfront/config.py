"""Model configuration and presets (SPEC section 1.1). No torch, no onnx."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from vlfront.errors import ConfigError

# Special tokens, SPEC section 1.2 (id -> string). The pad is <|endoftext|>.
SPECIAL_TOKENS: dict[int, str] = {
    151643: "<|endoftext|>",
    151644: "<|im_start|>",
    151645: "<|im_end|>",
    151646: "<|object_ref_start|>",
    151647: "<|object_ref_end|>",
    151648: "<|box_start|>",
    151649: "<|box_end|>",
    151650: "<|quad_start|>",
    151651: "<|quad_end|>",
    151652: "<|vision_start|>",
    151653: "<|vision_end|>",
    151654: "<|vision_pad|>",
    151655: "<|image_pad|>",
    151656: "<|video_pad|>",
    151657: "<tool_call>",
    151658: "</tool_call>",
    151659: "<|fim_prefix|>",
    151660: "<|fim_middle|>",
    151661: "<|fim_suffix|>",
    151662: "<|fim_pad|>",
    151663: "<|repo_name|>",
    151664: "<|file_sep|>",
    151665: "<tool_response>",
    151666: "</tool_response>",
    151667: "<think>",
    151668: "</think>",
}
NUM_ORDINARY_TOKENS = 151643
TOKENIZER_SIZE = 151669

PAD_ID = 151643
IM_START_ID = 151644
IM_END_ID = 151645
VISION_START_ID = 151652
VISION_END_ID = 151653
IMAGE_PAD_ID = 151655

QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


@dataclass(frozen=True)
class Config:
    """The front-end's shape and preprocessing (manifest `config`)."""

    hidden_size: int = 768
    image_size: int = 224
    patch_size: int = 16
    vocab_rows: int = 151936
    max_seq_len: int = 1024
    max_text_tokens: int = 512
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    vision_pos: str = "sincos2d"
    seed: int = field(default=0, compare=False)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def tokens_per_image(self) -> int:
        return self.grid * self.grid

    def validate(self) -> "Config":
        """Raise ConfigError naming the first invalid value; return self."""
        if self.hidden_size <= 0 or self.hidden_size % 4:
            raise ConfigError(f"hidden_size={self.hidden_size}: must be a positive multiple of 4 (sincos2d uses D/4)")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}")
        if self.vocab_rows < TOKENIZER_SIZE or self.vocab_rows % 128:
            raise ConfigError(f"vocab_rows={self.vocab_rows}: must be >= {TOKENIZER_SIZE} and a multiple of 128")
        if not 0 < self.max_text_tokens <= self.max_seq_len:
            raise ConfigError(f"max_text_tokens={self.max_text_tokens} must be in 1..max_seq_len={self.max_seq_len}")
        if self.vision_pos not in ("sincos2d", "learned"):
            raise ConfigError(f"vision_pos={self.vision_pos!r}: must be 'sincos2d' or 'learned'")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ConfigError("image_mean and image_std need 3 values each, std > 0")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["image_mean"] = list(self.image_mean)
        d["image_std"] = list(self.image_std)
        d["tokens_per_image"] = self.tokens_per_image
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known - {"tokens_per_image"}
        if unknown:
            raise ConfigError(f"config has unknown keys {sorted(unknown)}")
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("image_mean", "image_std"):
            if k in kw:
                kw[k] = tuple(float(x) for x in kw[k])
        cfg = cls(**kw).validate()
        if "tokens_per_image" in d and d["tokens_per_image"] != cfg.tokens_per_image:
            raise ConfigError(f"tokens_per_image={d['tokens_per_image']} disagrees with image_size/patch_size")
        return cfg


PRESETS: dict[str, Config] = {
    "default": Config(hidden_size=768),
    "tiny": Config(hidden_size=64),
}


def preset(name: str) -> Config:
    """Return the named preset's Config. Raises ConfigError for an unknown name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
