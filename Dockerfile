# syntax=docker/dockerfile:1

# Build stage: install the bot, its migrations included, into a virtual environment.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot/ bot/
COPY cogs/ cogs/
COPY migrations/ migrations/
RUN pip install ".[postgres]"

# Run stage: only the virtual environment and an unprivileged user; no source tree.
FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_URL=sqlite:////app/data/bot.db
RUN useradd --create-home --uid 10001 bot && mkdir -p /app/data && chown bot:bot /app/data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
USER bot
# matplotlib finds its fonts once, here, rather than on the first /usage chart of every start.
RUN python -c "import matplotlib.font_manager"
VOLUME ["/app/data"]
# `python -m bot health` without importing the bot: with METRICS_PORT set it asks the bot's
# /healthz (every shard connected, the database answering within 1 s); without, it reads the
# heartbeat file the bot keeps fresh while its gateway is connected. It never calls Discord.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "bot.health"]
CMD ["python", "-m", "bot"]
