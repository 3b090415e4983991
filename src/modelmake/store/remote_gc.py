"""Removing what a remote holds and nobody uses: `modelmake remote clean`, never a build or
`modelmake store gc`.

A result (an entry) is removed when no current recipe of this project uses it and it is older
than the age asked for: a team cache also serves other branches and checkouts, so age is what
protects their results. Blobs go when no remaining entry lists them and they are older than an
hour, so an upload in progress (blobs first, entry last) is never cut from under its writer; the
same hour applies to temp files of killed uploads. Entries are removed before blobs: a reader
never finds an entry whose blobs were removed by this, except one written during the run, which
it then reads as incomplete and rebuilds (and uploads again).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from modelmake.store.remote import Listed, Remote
from modelmake.store.remote_entry import EntryError, decode

GRACE_S = 3600.0


@dataclass
class Collected:
    entries: int = 0                                        # entries the remote lists
    blobs: int = 0                                          # blobs the remote lists
    dead_entries: list[Listed] = field(default_factory=list)
    dead_blobs: list[Listed] = field(default_factory=list)
    leftovers: list[Listed] = field(default_factory=list)   # temp files of killed uploads

    @property
    def freed(self) -> int:
        return sum(x.size for x in self.dead_entries + self.dead_blobs + self.leftovers)


def collect(remote: Remote, live: set[str], older_than_s: float, dry_run: bool = False) -> Collected:
    """Find (and unless dry_run remove) the remote's entries not in `live` (action-cache names)
    and older than older_than_s, then the blobs and temp files nothing needs. Raises RemoteError
    (Unsupported when the remote cannot list or delete)."""
    backend = remote.backend()
    now = time.time()
    out = Collected()
    ac = remote.retrying(lambda: backend.listing("ac"))
    out.entries = len(ac)
    referenced: set[str] = set()
    for item in ac:
        if item.name in live or _age(item, now) < older_than_s:
            data = remote.retrying(lambda item=item: backend.get_entry(item.name))
            try:
                referenced.update(f.sha256 for f in decode(data).files) if data is not None else None
                continue
            except EntryError:
                if _age(item, now) < GRACE_S:
                    continue  # a damaged entry is rewritten by the next build that needs it
        out.dead_entries.append(item)
    cas = remote.retrying(lambda: backend.listing("cas"))
    out.blobs = len(cas)
    out.dead_blobs = [b for b in cas if b.name not in referenced and _age(b, now) >= GRACE_S]
    out.leftovers = [t for t in remote.retrying(lambda: backend.listing("tmp")) if _age(t, now) >= GRACE_S]
    if not dry_run:
        for kind, items in (("ac", out.dead_entries), ("cas", out.dead_blobs), ("tmp", out.leftovers)):
            for item in items:
                remote.retrying(lambda kind=kind, item=item: backend.delete(kind, item.name))
    return out


def _age(item: Listed, now: float) -> float:
    # a backend that does not say when something was written: it counts as old (clean-up is asked for)
    return float("inf") if item.mtime is None else now - item.mtime
