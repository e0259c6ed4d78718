from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.db import migrate
from bot.db.engine import DatabaseUnavailable, async_url, create_engine, create_sessionmaker
from bot.db.failures import DATABASE_ERRORS, describe
from bot.db.models import Base, ConversationKind, TurnStatus, UsageKind, mapped_here
from bot.db.repository import ConversationStore, ImageRef, NewTurn, StateStore
from bot.db.usage_store import EVERYONE, DaySpent, Spent, UsageStore
from bot.db.vector_store import VectorStore
from tests.conftest import POSTGRES_URL, empty_postgres
from tests.fakes.postgres import refusing_postgres, self_signed_certificate


def _turn(n: int, *, role: str = "user", tokens: int = 10) -> NewTurn:
    return NewTurn(role=role, content=f"message {n}", token_estimate=tokens, author_id=7)


@pytest.mark.filterwarnings("ignore:Did not recognize type 'vector'")
async def test_models_and_migrations_agree(engine: AsyncEngine) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": mapped_here}
        )
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_migrating_again_changes_nothing(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate.upgrade(engine)
        await migrate.upgrade(engine)
        current, head = await migrate.pending(engine)
        assert current == head is not None
    finally:
        await engine.dispose()


async def test_every_revision_goes_down_and_up_again_keeping_what_fits(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """An admin may step back a release: each downgrade runs, and upgrading again (as the bot
    does at start) works on the rows the older schema kept, history included."""
    store = ConversationStore(sessions)
    conversation = await store.open(5, guild_id=1, kind=ConversationKind.CHANNEL)
    image = ImageRef(5, 50, 500, "cat.png", "image/png")
    await store.append_turn(conversation.id, replace(_turn(1), images=[image]))
    await store.append_turn(conversation.id, _turn(2, role="assistant"))
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO guild_settings (guild_id, model, version, updated_at) "
                "VALUES (1, 'gpt-4o', 'v1', CURRENT_TIMESTAMP)"
            )
        )

    def step_down(connection: Connection, target: str) -> None:
        config = migrate.alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, target)

    script = ScriptDirectory.from_config(migrate.alembic_config())
    for older in [revision.revision for revision in script.walk_revisions()][1:]:
        async with migrate.migrating(engine) as connection:
            await connection.run_sync(step_down, older)
    await migrate.upgrade(engine)

    async with engine.connect() as connection:
        kept = await connection.execute(text("SELECT guild_id, model FROM guild_settings"))
        assert kept.all() == [(1, "gpt-4o")]
    turns = await store.newest_turns(conversation.id, token_budget=10_000)
    assert [turn.content for turn in turns] == ["message 1", "message 2"]
    assert turns[0].images == [image]


# Each process imports everything first, says so, then migrates when told, so that all of them
# meet the new database at the same moment.
_MIGRATE_WHEN_TOLD = """
import asyncio, sys
from bot.db import migrate
from bot.db.engine import create_engine

async def main(url):
    engine = create_engine(url)
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()

asyncio.run(main(sys.argv[1]))
"""


async def test_processes_starting_at_once_do_not_race(database_url: str, tmp_path: Path) -> None:
    """Several bot processes migrating one new database at once (PostgreSQL, or a SQLite file
    that does not exist yet): a lock serialises them and every one of them succeeds."""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _MIGRATE_WHEN_TOLD,
            database_url,
            cwd=tmp_path,
            env=environment,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(6)
    ]
    for process in processes:
        assert process.stdout is not None
        assert await asyncio.wait_for(process.stdout.readline(), 60) == b"ready\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
    results = [await asyncio.wait_for(p.communicate(), 60) for p in processes]
    assert [p.returncode for p in processes] == [0] * 6, results
    engine = create_engine(database_url)
    try:
        current, head = await migrate.pending(engine)
        assert current == head is not None
    finally:
        await engine.dispose()


async def test_sqlite_runs_with_wal_and_foreign_keys(engine: AsyncEngine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's own settings")
    async with engine.connect() as connection:
        assert (await connection.scalar(text("PRAGMA journal_mode"))) == "wal"
        assert (await connection.scalar(text("PRAGMA foreign_keys"))) == 1


async def test_conversation_is_created_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    store = ConversationStore(sessions)
    results = await asyncio.gather(
        *(store.open(42, guild_id=1, kind=ConversationKind.CHANNEL) for _ in range(5))
    )
    assert len({ref.id for ref in results}) == 1
    assert await store.find(43) is None


async def test_newest_turns_fit_the_budget_whole_and_in_order(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = ConversationStore(sessions)
    conversation = await store.open(1, guild_id=None, kind=ConversationKind.THREAD)
    ids = [await store.append_turn(conversation.id, _turn(n)) for n in range(200)]

    turns = await store.newest_turns(conversation.id, token_budget=95)
    # Nine turns of ten tokens fit in 95; a tenth would be half a turn, so it is left out.
    assert [turn.id for turn in turns] == ids[-9:]
    assert [turn.content for turn in turns][-1] == "message 199"

    limited = await store.newest_turns(conversation.id, token_budget=10**6, max_turns=70)
    assert [turn.id for turn in limited] == ids[-70:]  # spans more than one page

    before = await store.newest_turns(conversation.id, token_budget=30, before_turn_id=ids[100])
    assert [turn.id for turn in before] == ids[97:100]


async def test_in_progress_answers_are_not_history_until_finished(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = ConversationStore(sessions)
    conversation = await store.open(2, guild_id=None, kind=ConversationKind.CHANNEL)
    await store.append_turn(conversation.id, _turn(1))
    answer = await store.append_turn(
        conversation.id,
        NewTurn(role="assistant", content="", token_estimate=0, status=TurnStatus.IN_PROGRESS),
    )
    assert len(await store.newest_turns(conversation.id, token_budget=1000)) == 1

    await store.finish_turn(
        answer,
        content="the answer",
        token_estimate=5,
        status=TurnStatus.COMPLETE,
        message_ids=[555, 556],
        model="gpt-4o",
        prompt_tokens=12,
        completion_tokens=3,
    )
    turns = await store.newest_turns(conversation.id, token_budget=1000)
    assert [(t.role, t.content, t.message_ids) for t in turns] == [
        ("user", "message 1", []),
        ("assistant", "the answer", [555, 556]),
    ]


async def test_crashed_answers_are_marked_interrupted(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = ConversationStore(sessions)
    conversation = await store.open(3, guild_id=None, kind=ConversationKind.CHANNEL)
    turn = await store.append_turn(
        conversation.id,
        NewTurn(role="assistant", content="half", token_estimate=2, status=TurnStatus.IN_PROGRESS),
    )
    other = await store.open(4, guild_id=77, kind=ConversationKind.CHANNEL)
    theirs = await store.append_turn(
        other.id,
        NewTurn(role="assistant", content="", token_estimate=0, status=TurnStatus.IN_PROGRESS),
    )
    # Another process serves server 77: its answer may still be running.
    interrupted = await store.interrupt_unfinished(lambda guild_id: guild_id != 77)
    assert [(t.id, channel_id) for t, channel_id in interrupted] == [(turn, 3)]
    stored = await store.get_turn(turn)
    assert stored is not None and stored.status is TurnStatus.INTERRUPTED
    running = await store.get_turn(theirs)
    assert running is not None and running.status is TurnStatus.IN_PROGRESS
    assert await store.interrupt_unfinished(lambda guild_id: guild_id != 77) == []


async def test_reset_forgets_turns_and_their_images(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = ConversationStore(sessions)
    conversation = await store.open(4, guild_id=9, kind=ConversationKind.CHANNEL)
    other = await store.open(5, guild_id=9, kind=ConversationKind.CHANNEL)
    image = ImageRef(channel_id=4, message_id=10, attachment_id=11, filename="a.png", prompt="cat")
    await store.append_turn(
        conversation.id,
        NewTurn(role="assistant", content="img", token_estimate=1, images=[image]),
    )
    await store.append_turn(other.id, _turn(1))
    assert await store.newest_image(conversation.id) == image

    assert await store.reset(4) == 1
    assert await store.newest_turns(conversation.id, token_budget=100) == []
    assert await store.newest_image(conversation.id) is None
    assert len(await store.newest_turns(other.id, token_budget=100)) == 1
    assert await store.reset(999) == 0


async def test_usage_totals_by_user_and_server(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    usage = UsageStore(sessions)
    for user, tokens in ((1, 10), (1, 5), (2, 100)):
        await usage.record(
            user_id=user,
            guild_id=50,
            channel_id=60,
            kind=UsageKind.CHAT,
            model="gpt-4o",
            prompt_tokens=tokens,
            completion_tokens=1,
        )
    await usage.record(
        user_id=1, guild_id=50, channel_id=60, kind=UsageKind.IMAGE, model="gpt-image-1", images=2
    )
    since = datetime.now(UTC) - timedelta(hours=1)
    mine = await usage.totals(since=since, user_id=1)
    assert (mine.requests, mine.prompt_tokens, mine.completion_tokens, mine.images) == (3, 15, 2, 2)
    server = await usage.totals(since=since, guild_id=50)
    assert server.prompt_tokens == 115
    future = await usage.totals(since=datetime.now(UTC) + timedelta(hours=1))
    assert future.requests == 0

    # The same, summed by day: per person and for the whole server, by model.
    today = datetime.now(UTC).date()
    assert await usage.spent(50, 1, since=today) == Spent(tokens=17, images=2)
    assert await usage.spent(50, EVERYONE, since=today) == Spent(tokens=118, images=2)
    assert await usage.spent(50, 1, since=today + timedelta(days=1)) == Spent()
    assert await usage.by_day(50, EVERYONE, since=today) == [DaySpent(today, 118, 2)]
    assert await usage.by_model(50, since=today) == {
        "gpt-4o": Spent(118, 0),
        "gpt-image-1": Spent(0, 2),
    }
    assert await usage.top_people(50, since=today) == [(2, Spent(101, 0)), (1, Spent(17, 2))]
    assert [r.prompt_tokens for r in await usage.records(50, since=since)] == [10, 5, 100, 0]


async def test_usage_recorded_before_budgets_is_summed_by_day(engine: AsyncEngine) -> None:
    """Revision 0004 sums the usage already recorded, so caps count it from the start."""

    def step(connection: Connection, target: str, *, down: bool) -> None:
        config = migrate.alembic_config()
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, target)

    async with migrate.migrating(engine) as connection:
        await connection.run_sync(step, "0003", down=True)
        for user, tokens, at in (
            (1, 10, "2026-11-30 10:00:00"),
            (1, 5, "2026-11-30 23:00:00"),
            (2, 7, "2026-12-01 01:00:00"),
        ):
            await connection.execute(
                text(
                    "INSERT INTO usage_records (guild_id, user_id, kind, model, prompt_tokens, "
                    "completion_tokens, images, created_at) "
                    f"VALUES (50, {user}, 'chat', 'gpt-4o', {tokens}, 1, 0, '{at}+00:00')"
                )
            )
    await migrate.upgrade(engine)
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT user_id, day, tokens, requests FROM usage_days ORDER BY user_id, day")
        )
        assert [(u, str(d), t, r) for u, d, t, r in rows] == [
            (0, "2026-11-30", 17, 2),
            (0, "2026-12-01", 8, 1),
            (1, "2026-11-30", 17, 2),
            (2, "2026-12-01", 8, 1),
        ]


async def test_revision_0005_goes_down_keeping_embedding_costs_as_chat(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Down, the vectors go (they are made again) and what embedding cost still counts."""
    store = ConversationStore(sessions)
    conversation = await store.open(5, guild_id=1, kind=ConversationKind.CHANNEL)
    turn = await store.append_turn(conversation.id, _turn(1))
    await UsageStore(sessions).record(
        user_id=7, guild_id=1, channel_id=5, kind=UsageKind.EMBEDDING, model="e", prompt_tokens=3
    )
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO turn_vectors (turn_id, conversation_id, model, dimensions, vector) "
                f"VALUES ({turn}, {conversation.id}, 'e', 1, :vector)"
            ),
            {"vector": b"\x00\x00\x80\x3f"},
        )

    def step_down(connection: Connection) -> None:
        config = migrate.alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")

    async with migrate.migrating(engine) as connection:
        await connection.run_sync(step_down)
    async with engine.connect() as connection:
        kinds = await connection.execute(text("SELECT kind, prompt_tokens FROM usage_records"))
        assert kinds.all() == [("chat", 3)]
    await migrate.upgrade(engine)
    async with engine.connect() as connection:
        assert (await connection.execute(text("SELECT * FROM turn_vectors"))).all() == []
        memory = await connection.execute(text("SELECT memory FROM channel_settings"))
        assert memory.all() == []


async def test_state_values(sessions: async_sessionmaker[AsyncSession]) -> None:
    state = StateStore(sessions)
    assert await state.get("k") is None
    await state.set("k", "one")
    await state.set("k", "two")
    assert await state.get("k") == "two"


async def test_turn_ids_are_never_reused(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Buttons carry turn ids: after a delete, a new turn must not take an old id."""
    store = ConversationStore(sessions)
    conversation = await store.open(6, guild_id=None, kind=ConversationKind.CHANNEL)
    first = await store.append_turn(conversation.id, _turn(1))
    await store.delete_turns([first])
    second = await store.append_turn(conversation.id, _turn(2))
    assert second > first


async def test_nul_characters_are_stored_as_replacement_characters(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """PostgreSQL refuses NUL in text; a model or a person can still send one."""
    store = ConversationStore(sessions)
    conversation = await store.open(3, guild_id=None, kind=ConversationKind.CHANNEL)
    image = ImageRef(3, 30, 300, "a\x00.png", "image/png", prompt="draw\x00 it")
    await store.append_turn(
        conversation.id,
        NewTurn(
            role="user",
            content="hi\x00there",
            token_estimate=3,
            author_name="ev\x00e",
            images=[image],
        ),
    )
    answer = await store.append_turn(
        conversation.id,
        NewTurn(role="assistant", content="", token_estimate=0, status=TurnStatus.IN_PROGRESS),
    )
    await store.finish_turn(
        answer, content="x\x00y", token_estimate=1, status=TurnStatus.COMPLETE, message_ids=[]
    )
    question, reply = await store.newest_turns(conversation.id, token_budget=1000)
    assert (question.content, question.author_name) == ("hi\ufffdthere", "ev\ufffde")
    assert (question.images[0].filename, question.images[0].prompt) == (
        "a\ufffd.png",
        "draw\ufffd it",
    )
    assert reply.content == "x\ufffdy"


async def _failure(url: str) -> str:
    """What an admin is told when the database at `url` cannot be opened."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except DATABASE_ERRORS as exc:
        return describe(exc, url)
    finally:
        await engine.dispose()
    raise AssertionError("the database opened")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_server_is_named_by_host_and_port() -> None:
    """`python -m bot migrate` (and the bot's start, and check) say it in one line."""
    port = _closed_port()
    url = f"postgresql://bot:hunter2@127.0.0.1:{port}/bot"
    sentence = await _failure(url)
    assert sentence == (
        f"Cannot reach the database server at 127.0.0.1:{port}: the connection was refused."
    )
    code, stderr = await _migrate_in_a_process(url)
    assert (code, stderr) == (1, f"Cannot start: {sentence}\n")


async def _migrate_in_a_process(url: str, *, user: int | None = None) -> tuple[int, str]:
    """`python -m bot migrate`, as `user` if given: its exit code and what it printed."""
    python, path = sys.executable, [str(Path(__file__).parents[1])]
    if user is not None:
        python, path = _python_for_others(), [*path, sysconfig.get_paths()["purelib"]]
    process = await asyncio.create_subprocess_exec(
        python,
        "-m",
        "bot",
        "migrate",
        cwd="/",
        env={
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": os.pathsep.join(path),
            "PYTHONDONTWRITEBYTECODE": "1",
            "DISCORD_TOKEN": "x",
            "ACEDATACLOUD_API_TOKEN": "y",
            "DATABASE_URL": url,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        user=user,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    assert "hunter2" not in stderr.decode()
    return process.returncode, stderr.decode()


@pytest.mark.parametrize(
    ("mode", "names", "told"),
    [
        # The certificate is for 127.0.0.1: verify-full accepts it and the login goes on.
        ("verify-full", "IP:127.0.0.1", "Password authentication failed for user bot"),
        # For another name: verify-full refuses it, verify-ca (chain only) does not.
        ("verify-full", "DNS:db.example.com", "The TLS certificate of 127.0.0.1:"),
        ("verify-ca", "DNS:db.example.com", "Password authentication failed for user bot"),
        ("require", "DNS:db.example.com", "Password authentication failed for user bot"),
    ],
)
async def test_sslmode_and_sslrootcert_from_the_url_are_honoured(
    tmp_path: Path, mode: str, names: str, told: str
) -> None:
    certificate = self_signed_certificate(tmp_path, names=names)
    async with refusing_postgres(certificate) as port:
        url = (
            f"postgres://bot:hunter2@127.0.0.1:{port}/bot"
            f"?sslmode={mode}&sslrootcert={certificate[0]}"
        )
        sentence = await _failure(url)
    assert sentence.startswith(told), sentence
    assert "hunter2" not in sentence


async def test_a_certificate_no_root_vouches_for_is_refused(tmp_path: Path) -> None:
    served = self_signed_certificate(tmp_path, names="IP:127.0.0.1")
    (tmp_path / "other").mkdir()
    other_root = self_signed_certificate(tmp_path / "other", names="IP:127.0.0.1")
    async with refusing_postgres(served) as port:
        sentence = await _failure(
            f"postgresql://bot@127.0.0.1:{port}/bot?sslmode=verify-ca&sslrootcert={other_root[0]}"
        )
    assert sentence.startswith(f"The TLS certificate of 127.0.0.1:{port} was not accepted: ")


async def test_a_wrong_password_is_named_with_the_user() -> None:
    async with refusing_postgres() as port:
        sentence = await _failure(f"postgresql://bot:hunter2@127.0.0.1:{port}/bot?sslmode=disable")
    assert sentence == (
        f"Password authentication failed for user bot at 127.0.0.1:{port}: check DATABASE_URL."
    )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://h/db?sslmode=sometimes",
        "postgresql://h/db?options=statement_timeout%3D5",
        "postgresql://h/db?options=-c%20statement_timeout",
        "postgresql://h/db?connect_timeout=soon",
        "postgresql://h/db?keepalives=1",
    ],
)
def test_malformed_libpq_options_are_refused_with_the_settings(url: str) -> None:
    refusals = "sslmode must be one of|options must be -c|connect_timeout must be|the URL option"
    with pytest.raises(ValueError, match=rf"^({refusals})"):
        async_url(url)


def test_postgresql_without_its_driver_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # as if it were not installed
    with pytest.raises(DatabaseUnavailable) as error:
        create_engine("postgresql://bot@db/bot")
    assert str(error.value) == (
        "A PostgreSQL DATABASE_URL needs the asyncpg driver: install it with "
        "pip install '.[postgres]'."
    )


@pytest.mark.postgres
@pytest.mark.skipif(POSTGRES_URL is None, reason="needs TEST_POSTGRES_URL")
async def test_provider_urls_work_on_postgresql() -> None:
    """`postgres://`, `sslmode` and `options=-c ...` as providers write them."""
    assert POSTGRES_URL is not None
    base = make_url(POSTGRES_URL).set(drivername="postgres").render_as_string(hide_password=False)
    url = (
        f"{base}?sslmode=prefer&options=-c%20statement_timeout%3D4500%20-c%20lock_timeout%3D7s"
        "&channel_binding=prefer&connect_timeout=10&application_name=acebot"
        "&target_session_attrs=read-write"
    )
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(text("SHOW statement_timeout")) == "4500ms"
            assert await connection.scalar(text("SHOW lock_timeout")) == "7s"
            assert await connection.scalar(text("SHOW application_name")) == "acebot"
            server_has_tls = await connection.scalar(text("SHOW ssl")) == "on"
    finally:
        await engine.dispose()

    where = make_url(POSTGRES_URL)
    missing = where.set(database="no_such_database_here").render_as_string(hide_password=False)
    assert await _failure(missing) == (
        f"The database no_such_database_here does not exist at {where.host}:{where.port or 5432}: "
        "create it or fix DATABASE_URL."
    )
    if not server_has_tls:
        assert await _failure(f"{base}?sslmode=require") == (
            f"The PostgreSQL server at {where.host}:{where.port or 5432} does not offer TLS, "
            "which sslmode asks for."
        )


def _python_for_others() -> str:
    """This Python version from a system folder other users may run it from (this one may be
    in a private home), with this environment's packages on PYTHONPATH."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    found = shutil.which(version, path="/usr/bin:/usr/local/bin")
    if found is None:
        pytest.skip(f"no {version} other users may run")
    return found


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A folder another user can reach (pytest's own tmp_path is private to its user)."""
    folder = Path(tempfile.mkdtemp(prefix="bot-db-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


# Root may write anything, so as root the bot's process runs as `nobody` to meet the refusal
# an unprivileged container user meets; otherwise as this test's own user.
AS_ROOT = os.getuid() == 0
NOBODY = 65534


async def test_a_folder_the_bot_cannot_write_names_the_uid(shared_folder: Path) -> None:
    database = shared_folder / "data" / "bot.db"
    database.parent.mkdir(mode=0o755 if AS_ROOT else 0o555)
    user = NOBODY if AS_ROOT else os.getuid()
    code, stderr = await _migrate_in_a_process(
        f"sqlite:///{database}", user=NOBODY if AS_ROOT else None
    )
    assert (code, stderr) == (
        1,
        f"Cannot start: No permission to create the file {database}: the folder "
        f"{database.parent} is not writable for uid {user}, which the bot runs as.\n",
    )
    assert not database.exists()


@pytest.mark.skipif(not AS_ROOT, reason="needs a file owned by another user")
async def test_a_file_of_another_user_names_both_uids(shared_folder: Path) -> None:
    database = shared_folder / "bot.db"
    code, _ = await _migrate_in_a_process(f"sqlite:///{database}")  # made by root
    assert code == 0
    code, stderr = await _migrate_in_a_process(f"sqlite:///{database}", user=NOBODY)
    assert (code, stderr) == (
        1,
        f"Cannot start: No permission to write the file {database}: it belongs to uid 0 and "
        f"the bot runs as uid {NOBODY}.\n",
    )


async def test_a_read_only_file_is_called_read_only(shared_folder: Path) -> None:
    database = shared_folder / "bot.db"
    sqlite3.connect(database).close()
    database.chmod(0o444)
    if AS_ROOT:
        os.chown(shared_folder, NOBODY, NOBODY)
        os.chown(database, NOBODY, NOBODY)
    code, stderr = await _migrate_in_a_process(
        f"sqlite:///{database}", user=NOBODY if AS_ROOT else None
    )
    assert (code, stderr) == (
        1,
        f"Cannot start: The file {database} is read-only: make it writable (chmod u+w).\n",
    )


@pytest.mark.postgres
@pytest.mark.skipif(POSTGRES_URL is None, reason="needs TEST_POSTGRES_URL")
async def test_pgvector_the_migration_cannot_use_leaves_the_bot_searching() -> None:
    """pgvector installed in a schema off the search path: its type is not found, and the
    migration goes on without it rather than failing."""
    assert POSTGRES_URL is not None
    await empty_postgres(POSTGRES_URL)
    engine = create_engine(POSTGRES_URL)
    try:
        async with engine.begin() as connection:
            offered = await connection.scalar(
                text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
            )
            if offered is None:
                pytest.skip("this PostgreSQL has no pgvector")
            await connection.execute(text("CREATE SCHEMA elsewhere"))
            await connection.execute(text("CREATE EXTENSION vector SCHEMA elsewhere"))
        await migrate.upgrade(engine)
        vectors = VectorStore(create_sessionmaker(engine), model="m", dimensions=256)
        await vectors.prepare()
        assert not vectors.pgvector
    finally:
        async with engine.begin() as connection:  # later tests' pgvector is where they look
            await connection.execute(text("DROP SCHEMA IF EXISTS elsewhere CASCADE"))
        await engine.dispose()
