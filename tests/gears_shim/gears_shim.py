#!/usr/bin/env python3
"""A CPython stand-in for the parts of the RedisGears 1 Python API that popup-operator's gears
scripts use, so their logic can run against a real Redis (redis-stack) where RedisGears 1 itself
cannot be had.

    python3 gears_shim.py --redis redis://127.0.0.1:6379 complete.py timeseries.py

Each script is executed with `GearsBuilder`, `execute`, `atomic` and `log` in its globals, as
inside RedisGears. `execute(...)` forwards the command to the real Redis through redis-py (replies
decoded to str/int/list like RedisGears does). `GearsBuilder('StreamReader').register(...)`
records a registration; the shim then runs every registration as RedisGears 1's StreamReader
would:

* every stream whose name matches `prefix` (a glob) is read through a consumer group of its own
  (one group per registration), from the first entry; new entries are read as they arrive
  into an in-memory buffer (pending in the group until executed);
* an execution fires when `batch` entries are buffered, or when `duration` ms (if > 0) have
  passed since the previous execution and at least one entry is buffered; one execution takes
  at most `batch` entries of one stream;
* records are `{'key': stream, 'id': entry id, 'value': {field: value}}`, passed through the
  builder's steps (`map`, `foreach`, `filter`, `countby`);
* after a successful execution the entries are XACKed and, with `trimStream=True`, deleted.

Differences from the real thing (documented in docs/engines.md): executions are serial in one
Python thread and `atomic()` does not block other Redis clients (the shim is the only processor,
the other clients only XADD). A step that raises fails its execution as in RedisGears 1 (logged,
kept as the registration's last error, retried with onFailedPolicy='retry').
"""

import argparse
import fnmatch
import signal
import sys
import time
import traceback

import redis

_conn = None
_exec_conn = None  # for execute(): plain RESP replies, without redis-py's per-command reshaping
_registrations = []
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
        # RedisGears 1 runs on Redis 6.2 and sees RESP2: a map (XINFO STREAM, ...) is a flat list
        # of keys and values. Newer redis-py may hand over a dict even without RESP3.
        return [_as_gears(x) for kv in v.items() for x in kv]
    return v


def execute(*args):
    """RedisGears' execute(): run a command on the (real) Redis; a Redis error raises."""
    reply = _exec_conn.execute_command(*[str(a) if not isinstance(a, (str, bytes)) else a for a in args])
    return _as_gears(reply)


def log(msg, level="notice"):
    print(f"[gears-shim {level}] {msg}", file=sys.stderr, flush=True)


class atomic:
    """`with atomic():` — in RedisGears 1 this holds the Redis lock for the block."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class GearsBuilder:
    def __init__(self, reader="KeysReader", defaultArg="*", desc=None):
        if reader != "StreamReader":
            raise NotImplementedError(f"gears shim supports StreamReader only, not {reader}")
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
                 onFailedRetryInterval=1, **_ignored):
        r = Registration(len(_registrations), self, prefix, int(batch), int(duration), bool(trimStream))
        r.on_failed = onFailedPolicy
        r.retry_interval = float(onFailedRetryInterval)
        _registrations.append(r)
        return "OK"

    def run(self, *_a, **_k):
        raise NotImplementedError("gears shim supports register() only")


GB = GearsBuilder


class Registration:
    def __init__(self, index, builder, prefix, batch, duration, trim):
        self.group = f"__gears_shim_{index}__"
        self.builder = builder
        self.prefix = prefix
        self.batch = max(1, batch)
        self.duration = duration
        self.trim = trim
        self.last_fire = {}
        self.buffer = {}
        self.executions = 0
        self.failures = 0
        self.last_error = None
        self.retry_at = 0.0
        self.on_failed = "continue"
        self.retry_interval = 1.0

    def streams(self):
        found = []
        for key in _conn.scan_iter(match=self.prefix, _type="stream", count=1000):
            key = key.decode("utf-8", "replace")
            if fnmatch.fnmatchcase(key, self.prefix):
                found.append(key)
        return found

    def ensure_group(self, stream):
        try:
            _conn.xgroup_create(stream, self.group, id="0")
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def read_new(self, stream):
        """Move newly added entries into the in-memory buffer (RedisGears 1 reads on arrival)."""
        try:
            reply = _conn.xreadgroup(self.group, "shim", {stream: ">"}, count=10000)
        except redis.ResponseError as e:
            if "NOGROUP" in str(e):  # the stream was deleted and created again
                self.ensure_group(stream)
                return
            raise
        buf = self.buffer.setdefault(stream, [])
        for _s, items in reply:
            buf.extend((eid.decode(), fields) for eid, fields in items if fields is not None)

    def execute_batch(self, stream, entries):
        """Run one execution. A step that raises fails the execution, as in RedisGears 1: the error
        is logged and kept as `last_error`; with onFailedPolicy 'retry' the same entries run again
        after the retry interval (nothing acknowledged or trimmed), with 'continue' they are
        acknowledged and trimmed as if processed."""
        records = [{"key": stream, "id": eid, "value": {_as_gears(k): _as_gears(v) for k, v in fields.items()}}
                   for eid, fields in entries]
        try:
            run_steps(self.builder.steps, records)
        except Exception as e:
            self.failures += 1
            self.last_error = str(e)
            log(f"execution of {self.builder.desc} failed: {e!r}", "warning")
            if self.on_failed == "retry":
                self.retry_at = time.monotonic() + self.retry_interval
                return False
        ids = [eid for eid, _ in entries]
        _conn.xack(stream, self.group, *ids)
        if self.trim:
            _conn.xdel(stream, *ids)
        self.executions += 1
        return True

    def poll(self):
        """Read new entries, run the executions that are due; return the records processed."""
        done = 0
        now = time.monotonic()
        for stream in self.streams():
            self.ensure_group(stream)
            self.read_new(stream)
            buf = self.buffer.get(stream, [])
            last = self.last_fire.setdefault(stream, now)
            timed_out = self.duration > 0 and (now - last) * 1000 >= self.duration
            if now < self.retry_at:
                continue
            while buf and (len(buf) >= self.batch or timed_out):
                chunk = buf[: self.batch]
                if not self.execute_batch(stream, chunk):
                    break  # retried later, in order
                buf[:] = buf[self.batch:]
                self.last_fire[stream] = now
                done += len(chunk)
            if timed_out:
                self.last_fire[stream] = now
        return done


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


def main():
    global _conn, _exec_conn
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis", required=True, help="redis:// URL of the real Redis")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="stop after this long")
    ap.add_argument("--poll-ms", type=float, default=5.0, help="idle poll interval")
    ap.add_argument("scripts", nargs="+", help="RedisGears Python scripts to register")
    args = ap.parse_args()

    # Raw replies: execute() turns them into what RedisGears 1 hands to scripts (see _as_gears).
    _conn = redis.Redis.from_url(args.redis, decode_responses=False)
    _exec_conn = redis.Redis.from_url(args.redis, decode_responses=False)
    _exec_conn.response_callbacks = {}
    _conn.ping()
    for path in args.scripts:
        before = len(_registrations)
        with open(path, encoding="utf-8") as fh:
            code = fh.read()
        env = {
            "__name__": "__gears__",
            "GearsBuilder": GearsBuilder,
            "GB": GB,
            "execute": execute,
            "atomic": atomic,
            "log": log,
        }
        exec(compile(code, path, "exec"), env)
        if len(_registrations) != before + 1:
            log(f"{path} registered {len(_registrations) - before} readers, expected 1", "warning")
            return 2
        r = _registrations[-1]
        log(f"registered {path}: desc={r.builder.desc!r} prefix={r.prefix} batch={r.batch} "
            f"duration={r.duration} trimStream={r.trim}")
    print("READY", flush=True)

    def stop(*_a):
        global _stop
        _stop = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    deadline = time.monotonic() + args.max_seconds
    while not _stop and time.monotonic() < deadline:
        try:
            busy = sum(r.poll() for r in _registrations)
        except redis.ConnectionError as e:
            log(f"connection lost: {e}", "warning")
            return 3
        except Exception:  # the shim itself failed (steps' errors are handled per execution)
            traceback.print_exc()
            return 1
        if busy == 0:
            time.sleep(args.poll_ms / 1000.0)
    log("executions: " + ", ".join(f"{r.builder.desc}={r.executions}" for r in _registrations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
