"""Shared state for quotas that are global across replicas: rate limits, budgets, pauses.

`MemoryStore` keeps the state of one process; `RedisStore` shares it between
every replica pointed at one Redis and decides locally, at each limit divided
by the number of replicas, while Redis is unreachable. Both implement the
`StateStore` protocol that policies code against.
"""

from ._base import GcraResult, StateStore
from ._memory import MemoryStore
from ._redis import RedisStore
from ._writeback import WriteBack

WRITE_BACK = WriteBack()
"""The process's worker for store updates made after a call ends (see `WriteBack`)."""

__all__ = ["WRITE_BACK", "GcraResult", "MemoryStore", "RedisStore", "StateStore", "WriteBack"]
