"""The /etc sandboxes see: lambdad's directory of copies of the allowed host files.

A zygote's template root (guest/lambdad_jail.enter_template) lives as long as the zygote, so it
cannot bind each /etc file as it is at that moment (a bind keeps the file's inode: a
resolv.conf rewritten when the host's network changes would stay old in every sandbox). It
binds this directory instead, whose entries `refresh` replaces when their source changes; the
allowed /etc entries that are directories (ssl, ca-certificates...) are bound onto it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

REFRESH_S = 5.0  # how often the sources are compared with the copies, at most


class EtcMirror:
    def __init__(self, source: Path, target: Path, allowed: Sequence[str]) -> None:
        self._source = source
        self._target = target
        self._allowed = tuple(allowed)
        self._seen: dict[str, tuple[int, int, int]] = {}  # name -> (inode, mtime, size)
        self._checked = float("-inf")

    def directories(self) -> list[str]:
        """The allowed entries that are directories (bound, not copied), and Debian's JDK
        configuration (java-*)."""
        found = [name for name in self._allowed if (self._source / name).is_dir()]
        java = sorted(p.name for p in self._source.glob("java-*") if p.is_dir())
        return found + java

    def refresh(self, force: bool = False) -> None:
        """Copy the allowed files that changed (and drop those gone); make the directories'
        mount points. Cheap when nothing changed: a stat per file, every REFRESH_S at most."""
        now = time.monotonic()
        if not force and now - self._checked < REFRESH_S:
            return
        self._checked = now
        self._target.mkdir(parents=True, exist_ok=True)
        for name in self._allowed:
            source, copy = self._source / name, self._target / name
            if source.is_dir():
                continue
            try:
                stat = source.stat()  # (follows a symlink, as localtime is)
            except OSError:
                if self._seen.pop(name, None) is not None:
                    copy.unlink(missing_ok=True)
                continue
            signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if self._seen.get(name) == signature and copy.exists():
                continue
            with contextlib.suppress(OSError):
                partial = copy.with_name(f".{name}.new")
                partial.write_bytes(source.read_bytes())
                partial.chmod(0o644)
                os.replace(partial, copy)  # a bind of the directory shows it at once
                self._seen[name] = signature
        for directory in self.directories():
            (self._target / directory).mkdir(exist_ok=True)  # a mount point for its bind
