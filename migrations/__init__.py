"""The Alembic revisions, installed as `bot.migrations` (see pyproject.toml)."""
