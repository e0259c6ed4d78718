from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Settings, SettingsError, load_settings

REQUIRED = {"DISCORD_TOKEN": "discord-secret-token", "ACEDATACLOUD_API_TOKEN": "api-secret-token"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings come only from what each test sets: no stray .env, no inherited variables."""
    monkeypatch.chdir(tmp_path)
    for name in (
        "DISCORD_TOKEN",
        "ACEDATACLOUD_API_TOKEN",
        "DATABASE_URL",
        "CHAT_MODEL",
        "CHAT_MODELS",
        "IMAGE_MODEL",
        "IMAGE_MODELS",
        "LOG_LEVEL",
        "CHAT_API",
        "RESPONSES_MODELS",
        "HISTORY_RETENTION_DAYS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_chat_api_and_responses_models(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.chat_api, settings.responses_models) == ("chat_completions", [])
    monkeypatch.setenv("CHAT_API", "responses")
    monkeypatch.setenv("RESPONSES_MODELS", "o3-pro, o4-mini")
    settings = load_settings()
    assert (settings.chat_api, settings.responses_models) == ("responses", ["o3-pro", "o4-mini"])
    monkeypatch.setenv("CHAT_API", "completions")
    with pytest.raises(SettingsError, match=r"^CHAT_API is not valid"):
        load_settings()


def test_history_retention_is_whole_days_at_least_one(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    assert load_settings().history_retention_days is None  # unset: everything is kept
    monkeypatch.setenv("HISTORY_RETENTION_DAYS", "90")
    assert load_settings().history_retention_days == 90
    for refused in ("0", "-3", "1.5", "a month"):
        monkeypatch.setenv("HISTORY_RETENTION_DAYS", refused)
        with pytest.raises(SettingsError, match=r"^HISTORY_RETENTION_DAYS is not valid"):
            load_settings()


def test_missing_token_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACEDATACLOUD_API_TOKEN", "x")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value) == (
        "DISCORD_TOKEN is not set: add it to the environment or to .env (see .env.example)."
    )


def test_malformed_setting_is_named_without_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MAX_CONCURRENT_REQUESTS", "many")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value).startswith("MAX_CONCURRENT_REQUESTS is not valid (")
    assert "many" not in str(error.value)


def test_env_file_lists_and_urls(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "DISCORD_TOKEN=a\nACEDATACLOUD_API_TOKEN=b\nCHAT_MODEL=gpt-5\nCHAT_MODELS=gpt-4o, gpt-5\n"
        "DATABASE_URL=postgresql://bot:pw@db/bot\nACEDATACLOUD_API_BASE_URL=http://x/\n"
        "log_level=debug\nLOG_FORMAT=JSON\n"
    )
    settings = load_settings()
    assert settings.chat_models == ["gpt-4o", "gpt-5"]
    assert settings.database_url == "postgresql+asyncpg://bot:pw@db/bot"
    assert settings.acedatacloud_api_base_url == "http://x"
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "json"


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("gpt-4o-mini,gpt-5", ["gpt-4o-mini", "gpt-5"]),
        (" gpt-4o-mini , gpt-5 ", ["gpt-4o-mini", "gpt-5"]),
        ('["gpt-4o-mini", "gpt-5"]', ["gpt-4o-mini", "gpt-5"]),
        ("gpt-4o-mini", ["gpt-4o-mini"]),
    ],
)
def test_lists_are_read_comma_separated_or_as_json(
    monkeypatch: pytest.MonkeyPatch, written: str, read: list[str]
) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CHAT_MODELS", written)
    assert load_settings().chat_models == read


@pytest.mark.parametrize("written", ["gpt-4o-mini,,gpt-5", "gpt-4o-mini, ,gpt-5", "gpt-4o-mini,"])
def test_empty_list_entries_are_refused(monkeypatch: pytest.MonkeyPatch, written: str) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CHAT_MODELS", written)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value) == (
        "CHAT_MODELS is not valid (it has an empty entry; separate the names with single "
        "commas): fix it in the environment or in .env."
    )


def test_a_list_that_looks_like_json_must_be_json(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IMAGE_MODELS", '["dall-e-3", ')
    with pytest.raises(SettingsError, match=r"^IMAGE_MODELS is not valid \(it starts with \["):
        load_settings()


@pytest.mark.parametrize(
    ("variables", "sentence"),
    [
        (
            {"CHAT_MODEL": "gpt-5", "CHAT_MODELS": "gpt-4o,gpt-4o-mini"},
            "CHAT_MODEL gpt-5 is not one of CHAT_MODELS: fix it in the environment or in .env.",
        ),
        (
            {"CHAT_MODELS": "gpt-4o"},
            "CHAT_MODEL gpt-4o-mini is not one of CHAT_MODELS: "
            "fix it in the environment or in .env.",
        ),
        (
            {"IMAGE_MODEL": "dall-e-3", "IMAGE_MODELS": "gpt-image-1"},
            "IMAGE_MODEL dall-e-3 is not one of IMAGE_MODELS: "
            "fix it in the environment or in .env.",
        ),
    ],
)
def test_the_default_model_must_be_offered(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], sentence: str
) -> None:
    for name, value in {**REQUIRED, **variables}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value) == sentence


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    for value in REQUIRED.values():
        assert value not in repr(settings)
        assert value not in str(settings.model_dump())


def test_unknown_database_scheme_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DATABASE_URL", "mysql://localhost/bot")
    with pytest.raises(SettingsError, match=r"^DATABASE_URL is not valid \(use a sqlite"):
        load_settings()


def test_python_m_bot_without_token_prints_one_sentence(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "Cannot start: DISCORD_TOKEN is not set: add it to the environment or to .env "
        "(see .env.example)."
    ]


def test_shard_ids_need_a_count(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SHARD_IDS", "0,1")
    with pytest.raises(SettingsError, match="SHARD_IDS needs SHARD_COUNT"):
        load_settings()
    monkeypatch.setenv("SHARD_COUNT", "4")
    assert load_settings().shard_ids == [0, 1]


def test_every_setting_is_documented() -> None:
    """.env.example and the README's table list every setting an admin can set."""
    root = Path(__file__).resolve().parents[1]
    example = (root / ".env.example").read_text()
    readme = (root / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"{name.upper()}=" in example, name
        assert f"`{name.upper()}`" in readme, name


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_metrics_port_must_be_a_port(monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("METRICS_PORT", port)
    with pytest.raises(SettingsError, match=r"^METRICS_PORT is not valid"):
        load_settings()
