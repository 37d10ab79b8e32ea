"""Shared state for quotas that are global across replicas: rate limits, budgets, pauses.

`MemoryStore` keeps the state of one process; `RedisStore` shares it between
every replica pointed at one Redis and decides locally, at each limit divided
by the number of replicas, while Redis is unreachable. Both implement the
`StateStore` protocol that policies code against.
"""

from ._base import GcraResult, StateStore
from ._memory import MemoryStore
from ._redis import RedisStore

__all__ = ["GcraResult", "MemoryStore", "RedisStore", "StateStore"]
