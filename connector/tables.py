"""The connector's own tables for one connector name, one object per concern, sharing the run's
fence: the one place that builds them for a database.

| attribute  | module                 | transactions       |
| ---------- | ---------------------- | ------------------ |
| `changes`  | connector.changelog    | the caller's       |
| `desired`  | connector.desired      | the caller's       |
| `problems` | connector.rowproblems  | the caller's       |
| `leads`    | connector.leadrows     | the caller's       |
| `queue()`  | connector.leadqueue    | its own, per call  |
| `runs`     | connector.runlog       | its own, per call  |
| `matches`  | connector.matches      | its own, per call  |
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from connector.changelog import change_log
from connector.desired import desired_values
from connector.leadqueue import SqlLeadQueue
from connector.leadrows import LeadRows
from connector.matches import MatchCache
from connector.rowproblems import RowProblems
from connector.runlock import FenceHolder
from connector.runlog import RunLog
from connector.source import SourceTable


class ConnectorTables:
    def __init__(self, engine: Engine, connector: str) -> None:
        self.engine = engine
        self.connector = connector
        # The run's lease while a run holds the run lock: every write of run state checks it
        # in its own transaction, so a run that lost the lock records nothing after a takeover.
        self.fence = FenceHolder()
        self.changes = change_log(engine, connector)
        self.desired = desired_values(engine, connector)
        self.problems = RowProblems(connector)
        self.leads = LeadRows(connector, self.fence)
        self.runs = RunLog(engine, connector, self.fence)
        self.matches = MatchCache(engine, connector)

    def queue(self, source: SourceTable) -> SqlLeadQueue:
        """The lead table as push's queue, checking ownership against `source`."""
        return SqlLeadQueue(
            self.engine,
            connector=self.connector,
            fence=self.fence,
            source=source,
            rows=self.leads,
            problems=self.problems,
        )
