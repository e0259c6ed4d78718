"""Settings: read once from the environment and `.env`, then passed to whoever needs them.

Nothing else in the project reads `os.environ`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.db.engine import async_url

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant in a Discord server. Answer concisely and use Discord "
    "Markdown. Several people may speak in one conversation; their names precede their words."
)


def _split_list(value: Any) -> Any:
    """Lists are written comma-separated, `CHAT_MODELS=gpt-4o,gpt-4o-mini`, or as JSON,
    `CHAT_MODELS=["gpt-4o","gpt-4o-mini"]`."""
    if not isinstance(value, str):
        return value
    if value.lstrip().startswith("["):
        try:
            items = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError("it starts with [ but is not a JSON list") from None
        if not isinstance(items, list):
            raise ValueError("it starts with [ but is not a JSON list")
    else:
        items = value.split(",")
    entries = [item.strip() if isinstance(item, str) else item for item in items]
    if any(entry == "" for entry in entries):
        raise ValueError("it has an empty entry; separate the names with single commas")
    return entries


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
    )

    # Secrets and addresses.
    discord_token: SecretStr
    acedatacloud_api_token: SecretStr
    acedatacloud_api_base_url: str = "https://api.acedata.cloud"
    api_path_prefix: str = "/openai"
    database_url: str = "sqlite+aiosqlite:///./data/bot.db"
    discord_api_base_url: str | None = None
    discord_gateway_url: str | None = None

    # Models and prompts.
    chat_model: str = "gpt-4o-mini"
    chat_models: Annotated[list[str], NoDecode] = Field(
        default=[
            "gpt-4o-mini",
            "gpt-4o",
            "gpt-4.1",
            "gpt-4.1-mini",
            "gpt-5",
            "gpt-5-mini",
            "o4-mini",
        ]
    )
    vision_models: Annotated[list[str], NoDecode] = Field(
        default=["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-5", "gpt-5-mini"]
    )
    image_model: str = "gpt-image-1"
    image_models: Annotated[list[str], NoDecode] = Field(
        default=["gpt-image-1", "dall-e-3", "dall-e-2", "nano-banana"]
    )
    # Which endpoint answers chat: chat completions, or the Responses API; models listed in
    # RESPONSES_MODELS go to the Responses API either way (some are offered only there).
    chat_api: Literal["chat_completions", "responses"] = "chat_completions"
    responses_models: Annotated[list[str], NoDecode] = Field(default=[])
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # Long-term memory: finished turns are embedded with this model, at this size.
    embedding_model: str = "text-embedding-3-small"
    embedding_dimensions: int = Field(default=256, ge=1, le=3072)
    temperature: float | None = Field(default=None, ge=0, le=2)

    # Limits that keep cost and load under control.
    history_token_budget: int = Field(default=6000, ge=256)
    max_answer_tokens: int | None = Field(default=None, ge=16)
    # Turns older than this many days are deleted, once a day; None: kept for good.
    history_retention_days: int | None = Field(default=None, ge=1)
    max_prompt_chars: int = Field(default=4000, ge=1, le=6000)
    max_concurrent_requests: int = Field(default=16, ge=1)
    max_image_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    max_answer_messages: int = Field(default=6, ge=1, le=50)
    # Phone photos are 12 MP, or 48-50 MP (8160×6120) at full resolution; 8192×8192 is 67 MP.
    # Decoding takes 4 bytes a pixel, and image work bot-wide is budgeted at this many pixels.
    max_image_pixels: int = Field(default=70_000_000, ge=1_000_000)

    # Timeouts, in seconds.
    chat_timeout: float = Field(default=120, gt=0)
    stream_idle_timeout: float = Field(default=60, gt=0)
    answer_timeout: float = Field(default=600, gt=0)
    image_timeout: float = Field(default=300, gt=0)
    # On SIGTERM or SIGINT, answers and image jobs already running may finish for this long.
    shutdown_grace_seconds: float = Field(default=20, ge=0)
    # Ask for images as tasks and poll for them, rather than holding a request open.
    image_async_tasks: bool = False
    image_task_poll_seconds: float = Field(default=3.0, gt=0)

    # Discord behaviour.
    message_content_intent: bool = True
    allow_direct_messages: bool = False
    dev_guild_id: int | None = None
    shard_count: int | None = Field(default=None, ge=1)
    shard_ids: Annotated[list[int] | None, NoDecode] = None

    # Health and metrics over HTTP (None: not served); see the README's Monitoring section.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    _split = field_validator(
        "chat_models",
        "vision_models",
        "image_models",
        "responses_models",
        "shard_ids",
        mode="before",
    )(_split_list)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("acedatacloud_api_base_url", "discord_api_base_url", "discord_gateway_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        """Accept the usual URL forms and pick the async driver for them."""
        return async_url(value)

    @model_validator(mode="after")
    def _defaults_are_offered(self) -> Settings:
        if self.chat_model not in self.chat_models:
            raise ValueError(f"CHAT_MODEL {self.chat_model} is not one of CHAT_MODELS")
        if self.image_model not in self.image_models:
            raise ValueError(f"IMAGE_MODEL {self.image_model} is not one of IMAGE_MODELS")
        return self

    @model_validator(mode="after")
    def _shards_need_a_count(self) -> Settings:
        if self.shard_ids is not None and self.shard_count is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT, the number of shards in all")
        count = self.shard_count or 0
        if self.shard_ids is not None and any(not 0 <= id_ < count for id_ in self.shard_ids):
            raise ValueError("every shard id must be below SHARD_COUNT")
        return self


class SettingsError(Exception):
    """A setting is missing or malformed; `str()` is one sentence an admin can act on."""


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    reason = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:  # a check across settings: its message names them
        return f"{reason}: fix it in the environment or in .env."
    name = str(error["loc"][0]).upper()
    if error["type"] == "missing":
        return f"{name} is not set: add it to the environment or to .env (see .env.example)."
    # Never echo the value: it may be a secret.
    return f"{name} is not valid ({reason}): fix it in the environment or in .env."
