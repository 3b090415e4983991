"""doit's sqlite3 backend, but a failure to save its state is one clear line, not a traceback.

doit writes its DB once, at the end of a run. When that fails (disk full, read-only folder) the
build's results are still safe in the store, so the right message is what happened and that the
next run restores finished steps from the store. Registered as the doit backend
"modelmake-sqlite3" through the `doit.BACKEND` entry point in pyproject.toml.
"""
from __future__ import annotations

import sqlite3
import sys

from doit.dependency import SqliteDB

from modelmake.core.faults import kill_point


class SafeSqliteDB(SqliteDB):
    desc = "sqlite3, with clear errors when the DB cannot be saved"

    def dump(self):
        try:
            # SqliteDB.dump, with a test seam inside the transaction (crash-safety trials kill here)
            for i, task_id in enumerate(self._dirty):
                self._conn.execute("insert or replace into doit values (?,?)",
                                   (task_id, self.codec.encode(self._cache[task_id])))
                if i == 0:
                    kill_point("dbsave")
            self._conn.commit()
            self._conn.close()
            self._dirty = set()
        except (sqlite3.Error, OSError) as e:
            print(f"error: cannot save doit's state to {self.name} ({e}); finished steps stay in the "
                  "store and are restored by the next run", file=sys.stderr, flush=True)
            self.failed = True
