#!/usr/bin/env python3
"""A CPython emulation of the parts of RedisGears 1.2 that popup-operator's gears scripts use, so
their logic runs against a real Redis (redis-stack) where RedisGears 1 itself is not at hand. Where
the real runtime is (../shared/redisgears1), tests/gears_runtime.rs runs the same scenarios on both
and compares the outcomes.

    python3 gears_shim.py --redis redis://127.0.0.1:6379 complete.py timeseries.py

Each script is executed with `GearsBuilder`/`GB`, `execute`, `atomic` and `log` in its globals, as
inside RedisGears. `execute(...)` forwards the command to the real Redis (replies as RedisGears 1
hands them over: `str` for UTF-8, `bytearray` otherwise). The readers behave as RedisGears 1.2.13
does (src/readers/streams_reader.c and keys_reader.c of that tag, and what was seen on it):

StreamReader `register(prefix, batch, duration, trimStream, onFailedPolicy, onFailedRetryInterval)`:
* a pattern ending in `*` is a prefix, any other the whole key name (not a glob);
* every registration reads a stream through the one consumer group `__gears_consumer_group__`
  (consumer `__gears_client__`), created at `0`: two registrations on a stream split its entries;
* per stream it keeps its own count of unread entries: the stream's XLEN when it first meets the
  stream (at registration, or the first XADD), plus one per XADD it is told of;
* it reads (XREADGROUP ... COUNT batch '>') only when it fires: when the count reaches `batch`, or
  `duration` ms after an XADD left it below; entries deleted before that are never seen. When it
  first meets a stream it reads the group's pending entries first ('0'), as after a restart;
* after a successful execution it XACKs the ids, lowers its count by their number and, with
  `trimStream`, runs `XTRIM <stream> MAXLEN <count>`: a count below the real number of unread
  entries (another reader took some; deleted pending entries) cuts undecided entries, as there;
* a failed execution (a step raised) is kept as the last error; with `retry` nothing is acked and
  every stream is read again from its pending entries after the retry interval; with `continue`
  the batch is acked (and trimmed) as if processed.

KeysReader `register(prefix, eventTypes, readValue=False, mode='sync')`: the steps run on
`{'key': key, 'event': event}` for each keyspace event of those types on a matching key.

Differences, which no test relies on: events reach the shim through keyspace notifications (it
sets `notify-keyspace-events`), so a 'sync' registration runs just after its command instead of
inside it; executions run one at a time in one Python thread; `atomic()` is all or nothing (its
writes go as one MULTI/EXEC) but does not hold other clients back between its reads (the shim is the
only process that decides orders; the others only add entries).
"""

import argparse
import signal
import sys
import time
import traceback

import redis

GROUP = "__gears_consumer_group__"
CONSUMER = "__gears_client__"

_conn = None
_exec_conn = None  # for execute(): plain RESP replies, without redis-py's per-command reshaping
_stream_readers = []
_keys_readers = []
_stop = False


def _as_gears(v):
    """Replies as RedisGears 1 gives them: UTF-8 strings as str, other strings as bytearray."""
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            return bytearray(v)
    if isinstance(v, (list, tuple)):
        return [_as_gears(x) for x in v]
    if isinstance(v, dict):
        # RedisGears 1 runs on Redis 6.2 and sees RESP2: a map (XINFO STREAM, ...) is a flat list.
        return [_as_gears(x) for kv in v.items() for x in kv]
    return v


# Commands that write: inside `with atomic():` the first of them and everything after it is held back
# and sent as one MULTI/EXEC when the block ends (see `atomic`).
_WRITES = {"DECR", "DECRBY", "INCR", "INCRBY", "SET", "DEL", "XADD", "XDEL", "XTRIM", "HSET", "HDEL", "HINCRBY",
           "TS.ADD", "PEXPIRE", "EXPIRE"}
_atomic_depth = 0
_held = None  # the block's commands from its first write on


def execute(*args):
    """RedisGears' execute(): run a command on the (real) Redis; a Redis error raises."""
    global _held
    args = [str(a) if not isinstance(a, (str, bytes)) else a for a in args]
    name = args[0].upper() if isinstance(args[0], str) else args[0].decode().upper()
    if _atomic_depth and (_held is not None or name in _WRITES):
        if _held is None:
            _held = []
        _held.append(args)
        return None  # no script here uses a write's reply
    return _as_gears(_exec_conn.execute_command(*args))


def log(msg, level="notice"):
    print(f"[gears-shim {level}] {msg}", file=sys.stderr, flush=True)


class atomic:
    """`with atomic():` — in RedisGears 1 the block holds the Redis lock: all of it happens or, when
    Redis dies, none of it (its writes reach the AOF as one MULTI/EXEC). Here the block's writes (from
    the first write on; a read after a write would raise) go to Redis as one MULTI/EXEC at its end, so
    a block is all or nothing also when the emulation is killed. Other clients are not held back
    between the block's reads; in the tests they only add entries."""

    def __enter__(self):
        global _atomic_depth
        _atomic_depth += 1
        return self

    def __exit__(self, *exc):
        global _atomic_depth, _held
        _atomic_depth -= 1
        if _atomic_depth == 0 and _held is not None:
            held, _held = _held, None
            if any((a[0].upper() if isinstance(a[0], str) else a[0].decode().upper()) not in _WRITES for a in held):
                raise RuntimeError(f"gears shim: a read after a write inside atomic(): {held}")
            pipe = _exec_conn.pipeline(transaction=True)
            for args in held:
                pipe.execute_command(*args)
            pipe.execute()
        return False


def matches(pattern, key):
    """RedisGears 1's key match: a trailing `*` makes a prefix, otherwise the whole name."""
    if pattern.endswith("*"):
        return key.startswith(pattern[:-1])
    return key == pattern


class GearsBuilder:
    def __init__(self, reader="KeysReader", defaultArg="*", desc=None):
        if reader not in ("StreamReader", "KeysReader"):
            raise NotImplementedError(f"gears shim supports StreamReader and KeysReader, not {reader}")
        self.reader = reader
        self.desc = desc
        self.steps = []

    def map(self, f):
        self.steps.append(("map", f))
        return self

    def foreach(self, f):
        self.steps.append(("foreach", f))
        return self

    def filter(self, f):
        self.steps.append(("filter", f))
        return self

    def countby(self, extractor=lambda x: str(x)):
        self.steps.append(("countby", extractor))
        return self

    def register(self, prefix="*", batch=1, duration=0, trimStream=True, onFailedPolicy="continue",
                 onFailedRetryInterval=1, eventTypes=None, mode="async", readValue=True, **_ignored):
        if self.reader == "StreamReader":
            r = StreamReader(self, prefix, int(batch), int(duration), bool(trimStream))
            r.on_failed = onFailedPolicy
            r.retry_interval = float(onFailedRetryInterval)
            _stream_readers.append(r)
            r.start()
        else:
            _keys_readers.append(KeysReader(self, prefix, [e.lower() for e in (eventTypes or [])], mode))
        return "OK"

    def run(self, *_a, **_k):
        raise NotImplementedError("gears shim supports register() only")


GB = GearsBuilder


def run_steps(steps, records):
    for kind, f in steps:
        if kind == "map":
            records = [f(r) for r in records]
        elif kind == "foreach":
            for r in records:
                f(r)
        elif kind == "filter":
            records = [r for r in records if f(r)]
        elif kind == "countby":
            counts = {}
            for r in records:
                k = f(r)
                counts[k] = counts.get(k, 0) + 1
            records = [{"key": k, "value": v} for k, v in counts.items()]
    return records


class KeysReader:
    def __init__(self, builder, prefix, events, mode):
        self.builder, self.prefix, self.events, self.mode = builder, prefix, events, mode
        self.executions = 0
        self.last_error = None

    def on_event(self, event, key):
        if event not in self.events or not matches(self.prefix, key):
            return
        try:
            run_steps(self.builder.steps, [{"key": key, "event": event}])
            self.executions += 1
        except Exception as e:
            self.last_error = str(e)
            log(f"execution of {self.builder.desc} on {event} {key} failed: {e!r}", "warning")


class StreamState:
    """What RedisGears keeps per stream and registration (SingleStreamReaderCtx)."""

    def __init__(self, unread):
        self.unread = unread  # pendingMessages: its own count, not the stream's
        self.fire_at = None  # the duration timer
        self.read_pending = True  # the first execution reads the group's pending entries


class StreamReader:
    def __init__(self, builder, prefix, batch, duration, trim):
        self.builder, self.prefix, self.batch, self.duration, self.trim = builder, prefix, batch, duration, trim
        self.on_failed = "continue"
        self.retry_interval = 1.0
        self.retry_at = None
        self.streams = {}
        self.executions = 0
        self.failures = 0
        self.last_error = None

    def start(self):
        """At registration (and after a failure under `retry`): meet every matching stream anew."""
        self.streams = {}
        for key in _conn.scan_iter(match="*", _type="stream", count=1000):
            key = key.decode("utf-8", "replace")
            if matches(self.prefix, key):
                self.meet(key)

    def meet(self, stream):
        state = self.streams[stream] = StreamState(_conn.xlen(stream))
        self.fire(stream, state)
        return state

    def on_xadd(self, stream):
        if not matches(self.prefix, stream) or self.retry_at is not None:
            return
        state = self.streams.get(stream)
        if state is None:
            self.meet(stream)
            return
        state.unread += 1
        if state.unread >= self.batch:
            self.fire(stream, state)
        elif state.fire_at is None and self.duration > 0:
            state.fire_at = time.monotonic() + self.duration / 1000.0

    def due(self, now):
        if self.retry_at is not None and now >= self.retry_at:
            self.retry_at = None
            self.start()
            return
        for stream, state in list(self.streams.items()):
            if state.fire_at is not None and now >= state.fire_at:
                self.fire(stream, state)

    def next_deadline(self):
        times = [s.fire_at for s in self.streams.values() if s.fire_at is not None]
        if self.retry_at is not None:
            times.append(self.retry_at)
        return min(times) if times else None

    def read(self, stream, state):
        args = ["XREADGROUP", "GROUP", GROUP, CONSUMER]
        if not state.read_pending:
            args += ["COUNT", self.batch]
        args += ["STREAMS", stream, "0" if state.read_pending else ">"]
        try:
            reply = _conn.execute_command(*args)
        except redis.ResponseError:
            try:  # no group (yet, or the stream was created again): create it at 0 and retry
                _conn.xgroup_create(stream, GROUP, id="0")
            except redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
            reply = _conn.execute_command(*args)
        entries = []
        for _s, items in reply or []:
            entries.extend((eid.decode(), fields) for eid, fields in items)
        return entries

    def fire(self, stream, state):
        """One execution on `stream`, then the next one if RedisGears would trigger it."""
        while True:
            state.fire_at = None
            was_pending = state.read_pending
            entries = self.read(stream, state)
            state.read_pending = False
            if not self.execute(stream, state, entries):
                return
            if state.unread <= 0 or (not entries and not was_pending):
                state.unread = 0  # at the end of the stream
                return
            if state.unread < self.batch:
                if self.duration > 0:
                    state.fire_at = time.monotonic() + self.duration / 1000.0
                return

    def execute(self, stream, state, entries):
        records = [{"key": stream, "id": eid,
                    "value": {_as_gears(k): _as_gears(v) for k, v in (fields or {}).items()}}
                   for eid, fields in entries]
        try:
            run_steps(self.builder.steps, records)
        except Exception as e:
            self.failures += 1
            self.last_error = str(e)
            log(f"execution of {self.builder.desc} failed: {e!r}", "warning")
            if self.on_failed == "retry":
                # forget every stream; after the interval read each again from its pending entries
                self.streams = {}
                self.retry_at = time.monotonic() + self.retry_interval
                return False
        if entries:
            ids = [eid for eid, _ in entries]
            state.unread = max(0, state.unread - len(ids))
            _conn.xack(stream, GROUP, *ids)
            if self.trim:
                _conn.execute_command("XTRIM", stream, "MAXLEN", state.unread)
            self.executions += 1
        return True


def dispatch(message):
    if message is None or message.get("type") not in ("pmessage", "message"):
        return
    event = message["channel"].decode().rsplit(":", 1)[-1].lower()
    key = message["data"].decode("utf-8", "replace")
    for r in _keys_readers:
        r.on_event(event, key)
    if event == "xadd":
        for r in _stream_readers:
            r.on_xadd(key)


def main():
    global _conn, _exec_conn
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis", required=True, help="redis:// URL of the real Redis")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="stop after this long")
    ap.add_argument("scripts", nargs="+", help="RedisGears Python scripts to register")
    args = ap.parse_args()

    _conn = redis.Redis.from_url(args.redis, decode_responses=False)
    _exec_conn = redis.Redis.from_url(args.redis, decode_responses=False)
    _exec_conn.response_callbacks = {}
    _conn.ping()
    # The shim learns of XADDs and expiries as RedisGears does, from keyspace events: E (keyevent
    # channels), t (streams), x (expired).
    flags = set(_conn.config_get("notify-keyspace-events").get(b"notify-keyspace-events", b"").decode())
    _conn.config_set("notify-keyspace-events", "".join(sorted(flags | set("Etx"))))
    pubsub = _conn.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("__keyevent@*__:xadd", "__keyevent@*__:expired")

    for path in args.scripts:
        with open(path, encoding="utf-8") as fh:
            code = fh.read()
        before = len(_stream_readers) + len(_keys_readers)
        env = {"__name__": "__gears__", "GearsBuilder": GearsBuilder, "GB": GB, "execute": execute,
               "atomic": atomic, "log": log}
        exec(compile(code, path, "exec"), env)
        made = len(_stream_readers) + len(_keys_readers) - before
        if made == 0:
            log(f"{path} registered nothing", "warning")
            return 2
        log(f"registered {path}: {made} registration(s)")
    for r in _stream_readers:
        log(f"StreamReader desc={r.builder.desc!r} prefix={r.prefix} batch={r.batch} duration={r.duration} "
            f"trimStream={r.trim}")
    for r in _keys_readers:
        log(f"KeysReader desc={r.builder.desc!r} prefix={r.prefix} events={r.events} mode={r.mode}")
    print("READY", flush=True)

    def stop(*_a):
        global _stop
        _stop = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = time.monotonic() + args.max_seconds
    while not _stop and time.monotonic() < deadline:
        try:
            now = time.monotonic()
            for r in _stream_readers:
                r.due(now)
            waits = [d for d in (r.next_deadline() for r in _stream_readers) if d is not None]
            timeout = max(0.0, min(waits) - time.monotonic()) if waits else 0.05
            dispatch(pubsub.get_message(timeout=min(timeout, 0.05)))
        except redis.ConnectionError as e:
            log(f"connection lost: {e}", "warning")
            return 3
        except Exception:  # the shim itself failed (steps' errors are handled per execution)
            traceback.print_exc()
            return 1
    log("executions: " + ", ".join(f"{r.builder.desc}={r.executions}" for r in _stream_readers + _keys_readers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
