"""The gateway's routing table file: read again whenever it changes (inode, mtime or size,
checked per request: ``apply`` replaces it by rename), so ``apply`` takes effect without a
restart. A table that cannot be read keeps the last good one in use.
"""

from __future__ import annotations

import os
from pathlib import Path

from batuta.errors import RoutingError
from batuta.gateway.errors import GatewayError
from batuta.routing.table import RoutingTable, read_table


class TableFile:
    """The routing table, read again when its file changes (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._where = os.fspath(path)  # stat-ed per request: no Path conversion each time
        self._signature: tuple[int, int, int] | None = None
        self._table: RoutingTable | None = None
        self._error = ""

    def current(self) -> RoutingTable:
        """The table in force; a 503 when no readable table was ever found."""
        try:
            st = os.stat(self._where)
            signature: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            signature = None
        if signature != self._signature or self._table is None:
            self._signature = signature
            try:
                self._table = read_table(self.path)
                self._error = ""
            except RoutingError as exc:
                self._error = str(exc)  # the last good table, if any, stays in use
        if self._table is None:
            raise GatewayError(503, self._error, type_="service_unavailable", code="no_table")
        return self._table

    def maybe(self) -> RoutingTable | None:
        """The table in force, or None (for what reports on it: metrics, status)."""
        try:
            return self.current()
        except GatewayError:
            return None
