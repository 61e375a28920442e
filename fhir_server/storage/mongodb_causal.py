"""Read-your-writes for the MongoDB store: causally consistent sessions.

Majority write and read concern alone do not guarantee that a read right after an
acknowledged write sees it:

- on a sharded cluster a transaction that wrote to several shards (a resource and its
  outbox entry already do) is acknowledged once its commit decision is durable; until
  every shard has applied it, a plain majority read may return the documents as they
  were before it (MongoDB manual, "Transactions: production considerations",
  outside reads during commit);
- after a failover a new primary's majority snapshot can lag behind writes the old
  primary acknowledged.

A read that carries `afterClusterTime` (a causally consistent session advanced to the
write's operation time) waits for both. So the store keeps the newest cluster and
operation times its own commits and reads reached (`CausalTimes.note`) and starts every
read, and every transaction, in a session advanced to them (`advance`): within one
API worker, reads see every write that worker acknowledged before, and the
transaction snapshots start after them. A client whose requests go to different
workers gets this only when its requests stay on one worker (sticky load balancing);
see README "At scale: MongoDB".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


class CausalTimes:
    """The newest times this process has seen from MongoDB (cluster time: the signed
    document the driver gossips; operation time: a bson Timestamp)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.cluster_time: Any = None
        self.operation_time: Any = None

    def note(self, session: Any) -> None:
        """After a commit or a read: remember the session's times if they are newer."""
        cluster, operation = session.cluster_time, session.operation_time
        if cluster is not None and (
            self.cluster_time is None or cluster["clusterTime"] > self.cluster_time["clusterTime"]
        ):
            self.cluster_time = cluster
        if operation is not None and (
            self.operation_time is None or operation > self.operation_time
        ):
            self.operation_time = operation

    def advance(self, session: Any) -> None:
        """Make `session`'s next operation start after everything noted so far."""
        if self.cluster_time is not None:
            session.advance_cluster_time(self.cluster_time)
        if self.operation_time is not None:
            session.advance_operation_time(self.operation_time)

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Any]:
        """A causally consistent session for the reads of one request."""
        session = self._client.start_session(causal_consistency=True)
        try:
            self.advance(session)
            yield session
            self.note(session)
        finally:
            await session.end_session()
