"""doit's file checker on xxh3 content digests (configured in DOIT_CONFIG by build/graph.py)."""
from __future__ import annotations

import os

from doit.dependency import FileChangedChecker

from modelmake.core.digest import file_digest


class XXH3Checker(FileChangedChecker):
    """doit file checker on xxh3 content digests, with (mtime, size) as a stat cache.

    An unchanged stat means unchanged content, so a no-op build hashes nothing; a touched file
    with the same bytes is hashed once and found unchanged.
    """

    def check_modified(self, file_path, file_stat, state):
        mtime, size, digest = state
        if file_stat.st_mtime == mtime and file_stat.st_size == size:
            return False
        if file_stat.st_size != size:
            return True
        return digest != file_digest(file_path)

    def get_state(self, dep, current_state):
        st = os.stat(dep)
        if current_state and current_state[0] == st.st_mtime and current_state[1] == st.st_size:
            return None  # unchanged: keep the stored state, skip hashing
        return st.st_mtime, st.st_size, file_digest(dep)
