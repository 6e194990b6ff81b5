"""Crypto-shredding: personal fields encrypted per subject, unreadable (None) once the subject's key is erased."""

from __future__ import annotations

import base64
import sqlite3
import uuid
from pathlib import Path
from typing import Annotated, Any, ClassVar

import orjson
import pytest

from conftest import PG_DSN
from tidings.errors import TidingsError, UsageError
from tidings.events.event import Event
from tidings.eventstore.base import NewEvent
from tidings.eventstore.memory import MemoryEventStore
from tidings.eventstore.shredding import (
    KeyStore,
    MemoryKeyStore,
    Personal,
    PostgresKeyStore,
    Shredder,
    ShreddingError,
    SqliteKeyStore,
    SubjectErasedError,
    is_shredded,
    personal_fields,
)
from tidings.testing.services import require


class UserRegistered(Event, type="user.registered", version="1.0"):
    user_id: str
    plan: str
    email: Annotated[str | None, Personal]
    name: Annotated[str | None, Personal] = None


class EmailChanged(Event, type="user.email_changed", version="1.0"):
    user_id: str
    email: Annotated[str | None, Personal]


PERSONAL = frozenset({"email", "name"})


def alice() -> dict[str, Any]:
    return {"user_id": "alice", "plan": "pro", "email": "alice@example.com", "name": "Alice Liddell"}


def bob() -> dict[str, Any]:
    return {"user_id": "bob", "plan": "free", "email": "bob@example.com", "name": "Bob"}


async def test_round_trip() -> None:
    shredder = Shredder(MemoryKeyStore())
    data = {**alice(), "phone": None, "nested": {"a": [1, 2]}}
    stored = await shredder.encrypt("alice", data, PERSONAL | {"phone", "nested", "absent"})
    assert stored["user_id"] == "alice"
    assert stored["plan"] == "pro"
    assert stored["phone"] is None  # None has nothing to protect
    assert "absent" not in stored
    for field in ("email", "name", "nested"):
        wrapper = stored[field]
        assert is_shredded(wrapper)
        assert set(wrapper) == {"$shredded", "subject", "nonce", "ct"}
        assert wrapper["$shredded"] == "v1"
        assert wrapper["subject"] == "alice"
        assert len(base64.b64decode(wrapper["nonce"])) == 12
    body = orjson.dumps(stored)
    assert b"alice@example.com" not in body
    assert b"Liddell" not in body
    assert data["email"] == "alice@example.com"  # the input is not changed
    assert await shredder.decrypt(stored) == data
    # a random nonce per value: the same value encrypts differently each time
    again = await shredder.encrypt("alice", data, PERSONAL)
    assert again["email"]["ct"] != stored["email"]["ct"]


async def test_no_key_is_made_for_a_subject_without_personal_values() -> None:
    keys = MemoryKeyStore()
    shredder = Shredder(keys)
    stored = await shredder.encrypt("carol", {"user_id": "carol", "email": None}, PERSONAL)
    assert stored == {"user_id": "carol", "email": None}
    assert await keys.get("carol") is None


async def test_erased_subject_reads_as_none_while_the_rest_stays_readable() -> None:
    shredder = Shredder(MemoryKeyStore())
    a = await shredder.encrypt("alice", alice(), PERSONAL)
    b = await shredder.encrypt("bob", bob(), PERSONAL)
    assert await shredder.erase("alice") is True
    assert await shredder.erase("alice") is False  # nothing left to erase
    a_plain, b_plain = await shredder.decrypt_many([a, b])
    assert a_plain == {"user_id": "alice", "plan": "pro", "email": None, "name": None}
    assert b_plain == bob()
    # a forgotten subject gets no new key: new personal data for it is refused, None is fine
    with pytest.raises(SubjectErasedError, match="'alice' was erased"):
        await shredder.encrypt("alice", alice(), PERSONAL)
    assert await shredder.encrypt("alice", {"user_id": "alice", "email": None}, PERSONAL) == {
        "user_id": "alice",
        "email": None,
    }
    # erasing a subject that never had a key leaves a tombstone too
    assert await shredder.erase("dave") is False
    with pytest.raises(SubjectErasedError):
        await shredder.encrypt("dave", {"email": "dave@example.com"}, PERSONAL)


async def test_event_model_validates_after_decrypt_erased_or_not() -> None:
    assert personal_fields(UserRegistered) == {"email", "name"}
    assert personal_fields(UserRegistered) is personal_fields(UserRegistered)  # cached
    shredder = Shredder(MemoryKeyStore())
    event = UserRegistered(user_id="alice", plan="pro", email="alice@example.com", name="Alice")
    stored = await shredder.encrypt_model("alice", event)
    assert is_shredded(stored["email"])
    assert is_shredded(stored["name"])
    assert UserRegistered.model_validate(await shredder.decrypt(stored)) == event
    await shredder.erase("alice")
    erased = UserRegistered.model_validate(await shredder.decrypt(stored))
    assert erased == UserRegistered(user_id="alice", plan="pro", email=None, name=None)


def test_a_personal_field_must_accept_none() -> None:
    with pytest.raises(UsageError, match=r"field 'email'.*must accept None.*Annotated\[str \| None, Personal\]"):

        class Bad(Event, type="bad"):
            email: Annotated[str, Personal]

    # the marker inside the type would mark nothing (the field would be stored in clear): refused as well
    with pytest.raises(UsageError, match="must accept None"):

        class Inner(Event, type="inner"):
            email: Annotated[str, Personal] | None = None

    class Listed(Event, type="listed"):
        emails: list[Annotated[str | None, Personal]] | None = None

    with pytest.raises(UsageError, match=r"Listed\.emails: Personal marks a whole field"):
        personal_fields(Listed)


def test_personal_fields_of_an_aggregate_state() -> None:
    class User:
        __personal__: ClassVar[frozenset[str]] = frozenset({"email", "address"})

    class Plain:
        pass

    class Wrong:
        __personal__ = "email"

    assert personal_fields(User) == {"email", "address"}
    assert personal_fields(Plain) == frozenset()
    with pytest.raises(UsageError, match="must be a set of attribute names"):
        personal_fields(Wrong)


async def test_snapshot_state_is_encrypted_like_an_event() -> None:
    class User:
        __personal__: ClassVar[frozenset[str]] = frozenset({"email", "address"})

    shredder = Shredder(MemoryKeyStore())
    state = {"plan": "pro", "email": "alice@example.com", "address": {"city": "Oxford", "lines": ["1 High St"]}}
    stored = await shredder.encrypt("alice", state, personal_fields(User))
    assert b"Oxford" not in orjson.dumps(stored)
    assert await shredder.decrypt(stored) == state
    await shredder.erase("alice")
    assert await shredder.decrypt(stored) == {"plan": "pro", "email": None, "address": None}


async def test_a_ciphertext_is_bound_to_its_field_and_subject() -> None:
    keys = MemoryKeyStore()
    shredder = Shredder(keys)
    a = await shredder.encrypt("alice", alice(), PERSONAL)
    b = await shredder.encrypt("bob", bob(), PERSONAL)

    swapped = {**a, "email": a["name"], "name": a["email"]}
    with pytest.raises(ShreddingError) as caught:
        await shredder.decrypt(swapped)
    message = str(caught.value)
    assert "\n" not in message
    assert "'alice'" in message
    assert "'email'" in message or "'name'" in message

    # bob's email moved into alice's event, wrapper and all: bob's key, but the associated data says "bob"...
    moved = {**a, "email": b["email"]}
    assert (await shredder.decrypt(moved))["email"] == "bob@example.com"  # ...so it is bob's own value, not a forgery
    # ...relabelled as alice's: it no longer authenticates
    relabelled = {**a, "email": {**b["email"], "subject": "alice"}}
    with pytest.raises(ShreddingError, match=r"field 'email' of subject 'alice'"):
        await shredder.decrypt(relabelled)

    ct = bytearray(base64.b64decode(a["email"]["ct"]))
    ct[0] ^= 1
    tampered = {**a, "email": {**a["email"], "ct": base64.b64encode(bytes(ct)).decode()}}
    with pytest.raises(ShreddingError, match=r"^cannot decrypt field 'email' of subject 'alice': .*altered") as caught:
        await shredder.decrypt(tampered)
    assert isinstance(caught.value, TidingsError)

    # the key shows nowhere: not in errors, nor in the reprs
    key = await keys.get("alice")
    assert key is not None
    for text in (str(caught.value), repr(caught.value), repr(keys), repr(shredder)):
        for form in (key.hex(), base64.b64encode(key).decode(), repr(key)):
            assert form not in text


async def test_malformed_wrappers_are_clear_errors() -> None:
    shredder = Shredder(MemoryKeyStore())
    a = await shredder.encrypt("alice", alice(), PERSONAL)
    with pytest.raises(ShreddingError, match=r"field 'email' of subject 'alice': unknown shredded format 'v9'"):
        await shredder.decrypt({**a, "email": {**a["email"], "$shredded": "v9"}})
    with pytest.raises(ShreddingError, match="not base64"):
        await shredder.decrypt({**a, "email": {**a["email"], "nonce": "!!"}})
    with pytest.raises(ShreddingError, match="no subject"):
        await shredder.decrypt({**a, "email": {**a["email"], "subject": 7}})


async def test_a_wrapper_shaped_value_in_a_clear_field_is_refused() -> None:
    # otherwise a user could plant a fake ciphertext in a free-form field and make the stream unreadable
    shredder = Shredder(MemoryKeyStore())
    with pytest.raises(ShreddingError, match="'tags' of subject 'alice' is not personal"):
        await shredder.encrypt("alice", {"tags": {"$shredded": "v1", "subject": "x"}}, PERSONAL)


async def test_caller_mistakes() -> None:
    shredder = Shredder(MemoryKeyStore())
    with pytest.raises(UsageError, match="subject must be a non-empty string"):
        await shredder.encrypt("", alice(), PERSONAL)
    with pytest.raises(UsageError, match="single string"):
        await shredder.encrypt("alice", alice(), "email")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="cannot be encoded as JSON"):
        await shredder.encrypt("alice", {"email": {1, 2}}, PERSONAL)


class CountingKeys(MemoryKeyStore):
    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[list[str]] = []

    async def get(self, subject: str) -> bytes | None:
        raise AssertionError("decrypt_many must ask for its keys in one go")

    async def get_many(self, subjects: Any) -> dict[str, bytes | None]:
        subjects = list(subjects)
        self.lookups.append(subjects)
        return {s: self._keys.get(s) for s in subjects}


async def test_decrypt_many_asks_once_per_subject() -> None:
    keys = CountingKeys()
    shredder = Shredder(keys)
    stored = [
        await shredder.encrypt(s, {"user_id": s, "email": f"{s}{i}@x"}, PERSONAL) for i in range(50) for s in "ab"
    ]
    plain = await shredder.decrypt_many([*stored, {"no": "personal data"}])
    assert keys.lookups == [["a", "b"]]
    assert plain[-1] == {"no": "personal data"}
    assert plain[3] == {"user_id": "b", "email": "b1@x"}
    assert await shredder.decrypt_many([]) == []


def _db_bytes(path: Path) -> bytes:
    """The database file and any journal or WAL next to it, as they are on disk."""
    found = b""
    for suffix in ("", "-journal", "-wal"):
        part = path.with_name(path.name + suffix)
        if part.exists():
            found += part.read_bytes()
    return found


async def _check_key_store(store: KeyStore) -> None:
    with pytest.raises(UsageError):
        await store.get("")
    key = await store.get_or_create("alice")
    assert len(key) == 32
    assert await store.get_or_create("alice") == key
    assert await store.get("alice") == key
    assert await store.get("nobody") is None
    other = await store.get_or_create("bob")
    assert other != key
    assert await store.get_many(["alice", "bob", "nobody", "alice"]) == {"alice": key, "bob": other, "nobody": None}
    assert key.hex() not in repr(store)


async def test_memory_key_store() -> None:
    store = MemoryKeyStore()
    await _check_key_store(store)
    assert await store.erase("alice") is True
    assert await store.get("alice") is None
    with pytest.raises(SubjectErasedError):
        await store.get_or_create("alice")


async def test_sqlite_key_store_persists_and_erasure_leaves_no_key_bytes(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    async with SqliteKeyStore(path) as store:
        await _check_key_store(store)
        key = await store.get_or_create("alice")
        bob_key = await store.get_or_create("bob")
    assert key in _db_bytes(path)  # the check below means something: the key was in the file

    async with SqliteKeyStore(path) as store:
        # this build of SQLite may zero freed space by default already; the store does not count on it
        assert await store._run(lambda conn: conn.execute("PRAGMA secure_delete").fetchone()[0]) == 1
        assert await store.get("alice") == key  # survives reopening
        assert await store.erase("alice") is True
        assert await store.get("alice") is None
        assert await store.erase("alice") is False
    assert key not in _db_bytes(path)  # overwritten, then deleted, with secure_delete on: no copy left
    assert bob_key in _db_bytes(path)

    async with SqliteKeyStore(path) as store:
        assert await store.get("alice") is None  # the erasure survives reopening
        with pytest.raises(SubjectErasedError):
            await store.get_or_create("alice")
        assert await store.get("bob") == bob_key

    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT subject, key IS NULL, erased_at IS NOT NULL FROM tidings_subject_keys").fetchall()
    conn.close()
    assert sorted(rows) == [("alice", 1, 1), ("bob", 0, 0)]


async def test_sqlite_key_store_in_wal_mode_leaves_no_key_bytes(tmp_path: Path) -> None:
    # a database shared with a WAL-mode store: the WAL holds old pages until a checkpoint
    path = tmp_path / "shared.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    async with SqliteKeyStore(path) as store:
        key = await store.get_or_create("alice")
        assert key in _db_bytes(path)
        assert await store.erase("alice") is True
        assert key not in _db_bytes(path)


async def test_sqlite_key_store_cache_and_other_processes_erasures(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "keys.db"
    async with (
        SqliteKeyStore(path, cache_ttl=60, clock=lambda: now[0]) as here,
        SqliteKeyStore(path, cache_ttl=60, cache_size=2, clock=lambda: now[0]) as there,
    ):
        key = await here.get_or_create("alice")
        assert await there.get("alice") == key  # now in there's cache
        await here.erase("alice")
        assert await here.get("alice") is None  # the erasing store forgets at once
        assert await there.get("alice") == key  # another store learns of it when its entry expires...
        now[0] += 61
        assert await there.get("alice") is None  # ...after the TTL
        for subject in "abcd":
            await there.get_or_create(subject)
        assert len(there._cache) == 2  # bounded


async def test_postgres_key_store() -> None:
    require("PostgreSQL", "127.0.0.1", 5432)
    import psycopg
    from psycopg import sql

    table = f"tidings_keys_{uuid.uuid4().hex[:12]}"
    try:
        async with PostgresKeyStore(PG_DSN, table=table) as store, PostgresKeyStore(PG_DSN, table=table) as other:
            await _check_key_store(store)
            key = await store.get("alice")
            assert key is not None
            assert await other.get("alice") == key  # stored, seen by another connection
            assert await other.get_or_create("alice") == key
            assert await store.erase("alice") is True
            assert await store.erase("alice") is False
            assert await store.get("alice") is None
            with pytest.raises(SubjectErasedError):
                await store.get_or_create("alice")
            async with PostgresKeyStore(PG_DSN, table=table, cache_size=0) as fresh:
                assert await fresh.get("alice") is None
                assert await fresh.get("bob") is not None
            shredder = Shredder(store)
            stored = await shredder.encrypt("bob", bob(), PERSONAL)
            assert await Shredder(other).decrypt(stored) == bob()
        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            cursor = await conn.execute(
                sql.SQL("SELECT subject, key IS NULL, erased_at IS NOT NULL FROM {} ORDER BY subject").format(
                    sql.Identifier(table)
                )
            )
            assert await cursor.fetchall() == [("alice", True, True), ("bob", False, False)]
    finally:
        async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


async def test_postgres_key_store_errors_mask_the_password() -> None:
    store = PostgresKeyStore("postgresql://app:s3cret@127.0.0.1:1/none", connect_timeout=1)
    assert "s3cret" not in repr(store)
    with pytest.raises(ShreddingError) as caught:
        await store.get("alice")
    assert "s3cret" not in str(caught.value)
    await store.close()


async def test_end_to_end_with_the_memory_event_store() -> None:
    shredder = Shredder(MemoryKeyStore())

    async def append(store: MemoryEventStore, user: str, event: Event) -> None:
        data = await shredder.encrypt_model(user, event)
        await store.append(
            f"user-{user}",
            [NewEvent(str(uuid.uuid4()), event.event_type(), orjson.dumps(data), b"{}", event.event_version())],
        )

    types: dict[str, type[Event]] = {"user.registered": UserRegistered, "user.email_changed": EmailChanged}

    async def history(store: MemoryEventStore, user: str) -> list[Event]:
        recorded = await store.read_stream(f"user-{user}")
        plain = await shredder.decrypt_many([orjson.loads(e.data) for e in recorded])
        return [types[e.event_type].model_validate(p) for e, p in zip(recorded, plain, strict=True)]

    async with MemoryEventStore() as store:
        for user in ("alice", "bob"):
            await append(store, user, UserRegistered(user_id=user, plan="pro", email=f"{user}@a.example", name=user))
            await append(store, user, EmailChanged(user_id=user, email=f"{user}@b.example"))
            await append(store, user, EmailChanged(user_id=user, email=None))
        raw = b"".join(e.data for e in await store.read_all())
        assert b"@a.example" not in raw
        assert b"@b.example" not in raw

        before = await history(store, "alice")
        assert [getattr(e, "email", None) for e in before] == ["alice@a.example", "alice@b.example", None]

        assert await shredder.erase("alice") is True
        erased = await history(store, "alice")
        assert erased == [
            UserRegistered(user_id="alice", plan="pro", email=None, name=None),
            EmailChanged(user_id="alice", email=None),
            EmailChanged(user_id="alice", email=None),
        ]
        assert await history(store, "bob") == [
            UserRegistered(user_id="bob", plan="pro", email="bob@a.example", name="bob"),
            EmailChanged(user_id="bob", email="bob@b.example"),
            EmailChanged(user_id="bob", email=None),
        ]
        # the store itself is untouched: same events, same types, same places
        assert [(e.stream_id, e.version, e.event_type) for e in await store.read_all()] == [
            (f"user-{u}", v, t)
            for u in ("alice", "bob")
            for v, t in ((1, "user.registered"), (2, "user.email_changed"), (3, "user.email_changed"))
        ]
