"""One run per run directory: a lock file naming its holder.

    with run_lock.hold(model_dir, chief):   # ConfigError if another live run holds it
        ...                                  # train, save checkpoints

The chief creates `<model_dir>/run.lock` (JSON: host, pid, start time) before it writes anything
else, and removes it when the run ends (normally, by an error, or on SIGTERM through
`release_held`). A second run on the same directory stops with one line naming the holder.

A lock is stale, and taken over with a warning, when its holder is gone:
- on the same host: no process with its pid is alive;
- on another host (a shared file system or a bucket): its file was not refreshed for
  `STALE_SECONDS` (the holder touches it at least every `REFRESH_SECONDS`, see `refresh`).
A local directory is locked atomically (O_EXCL); on object stores (gs://) creation is
check-then-write, which guards against the usual mistake (a second launch) but not an exact race.
"""

import contextlib
import json
import os
import socket
import time
from typing import Dict, Optional

import tensorflow as tf
from absl import logging

from vatt_gh.errors import ConfigError

NAME = "run.lock"
REFRESH_SECONDS = 60.0
STALE_SECONDS = 15 * 60.0

_held: Dict[str, float] = {}  # lock path -> time of the last refresh, of this process


def _is_local(path: str) -> bool:
    return "://" not in path


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _read(path: str) -> Optional[dict]:
    try:
        with tf.io.gfile.GFile(path) as f:
            holder = json.load(f)
        return holder if isinstance(holder, dict) else {}
    except tf.errors.NotFoundError:
        return None
    except (ValueError, tf.errors.OpError):
        return {}  # unreadable: a lock half written by a killed process


def _age(path: str) -> float:
    try:
        return time.time() - tf.io.gfile.stat(path).mtime_nsec / 1e9
    except tf.errors.OpError:
        return 0.0


def _stale_reason(path: str, holder: dict) -> Optional[str]:
    """Why the lock at `path` is stale, or None when its holder may be running."""
    host, pid = holder.get("host"), holder.get("pid")
    if host == socket.gethostname() and isinstance(pid, int):
        return None if _pid_alive(pid) else f"process {pid} on {host} is gone"
    age = _age(path)
    if age > STALE_SECONDS:
        return f"not refreshed for {age / 60:.0f} min"
    return None


def _create(path: str) -> bool:
    """Write this process's lock at `path`; False when one exists already."""
    text = json.dumps(_holder())
    if _is_local(path):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    if tf.io.gfile.exists(path):
        return False
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)
    return True


def acquire(model_dir: str) -> str:
    """Take the run directory's lock (the directory must exist); returns its path."""
    path = os.path.join(model_dir, NAME)
    for _ in range(3):
        if _create(path):
            _held[path] = time.time()
            return path
        holder = _read(path)
        if holder is None:  # released meanwhile
            continue
        reason = _stale_reason(path, holder) if holder else "unreadable"
        if reason is None:
            raise ConfigError(
                f"{model_dir} is in use by another run (host {holder.get('host')}, pid "
                f"{holder.get('pid')}, {path}); wait for it, or use another --model_dir"
            )
        logging.warning("taking over the stale lock %s (%s)", path, reason)
        tf.io.gfile.remove(path)
    raise ConfigError(f"could not take the lock {path}: it keeps reappearing")


def refresh() -> None:
    """Touch this process's locks at most every REFRESH_SECONDS (call it from the loop)."""
    now = time.time()
    for path, last in list(_held.items()):
        if now - last >= REFRESH_SECONDS:
            try:
                with tf.io.gfile.GFile(path, "w") as f:
                    f.write(json.dumps(_holder()))
            except tf.errors.OpError as e:  # not fatal: the lock only guards against mistakes
                logging.warning("could not refresh %s: %s", path, str(e).splitlines()[0])
            _held[path] = now


def release(path: str) -> None:
    """Remove this process's lock at `path` (only if it is still ours)."""
    if _held.pop(path, None) is None:
        return
    holder = _read(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        tf.io.gfile.remove(path)


def release_held() -> None:
    """Remove every lock this process holds (before an exit that skips `finally`)."""
    for path in list(_held):
        release(path)


@contextlib.contextmanager
def hold(model_dir: str, chief: bool = True):
    """The run directory's lock for the duration of the block (the chief's; others pass)."""
    if not chief:
        yield None
        return
    tf.io.gfile.makedirs(model_dir)
    path = acquire(model_dir)
    try:
        yield path
    finally:
        release(path)
