# syntax=docker/dockerfile:1

# Build stage: install the bot and its dependencies into a virtual environment.
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot/ bot/
COPY cogs/ cogs/
RUN pip install ".[postgres]"

# Run stage: the virtual environment, the migrations, and an unprivileged user.
FROM python:3.12-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_URL=sqlite:////app/data/bot.db
RUN useradd --create-home --uid 10001 bot
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Migrations are found next to the installed package's source tree (bot/../migrations).
COPY bot/ bot/
COPY cogs/ cogs/
COPY migrations/ migrations/
RUN mkdir -p /app/data && chown bot:bot /app/data
USER bot
VOLUME ["/app/data"]
CMD ["python", "-m", "bot"]
