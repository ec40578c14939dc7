"""Several workers on one database: named service leases and shared settings.

A *service lease* makes one worker at a time do a duty that must not run
twice: sending the audit outbox (a message sent by two workers would reach
the audit repository twice) or scanning an archive (N workers scanning the
same folder is N times the I/O for the same index).  :meth:`ServiceLeases.hold`
takes or renews the lease in one conditional statement: it succeeds when the
lease is free, expired, or already *owner*'s.  A worker that dies stops
renewing and another takes the duty over once the lease expires; nothing
waits on a lock held by a dead process.

:meth:`GatewaySettings.shared_secret` gives every worker the same random
value for a name (made by the first one that asks), for keys nobody
configured but every worker must agree on, such as the key that signs the
staff page's session cookie.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, insert, or_, select, update

from imagebridge.store.access import EngineAccess
from imagebridge.store.schema import gateway_settings, service_leases

_L = service_leases
_S = gateway_settings

Clock = Callable[[], datetime]


NODE_ENV = "IMAGEBRIDGE_NODE_NAME"
"""Overrides the host name in lease owners (containers whose host names are not stable)."""


def node_name() -> str:
    """This host's name in lease owners: ``$IMAGEBRIDGE_NODE_NAME``, else the system's."""
    return os.environ.get(NODE_ENV) or os.uname().nodename


def worker_name() -> str:
    """This process as a lease owner: ``host:pid`` (unique among live workers of a deployment)."""
    return f"{node_name()}:{os.getpid()}"


def dead_local_owner(owner: str | None) -> bool:
    """True when *owner* (``host:pid``) is a process of this host that has ended.

    Its leases need not wait to expire.  A process of another host, or one
    this user may not signal, is never declared dead here.
    """
    if not owner or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != node_name() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ServiceLeases(EngineAccess):
    """The ``service_leases`` table: hold, release, and who holds a duty."""

    def __init__(self, engine: Engine, *, clock: Clock = _utc_now) -> None:
        super().__init__(engine)
        self._clock = clock

    def hold(self, name: str, owner: str, seconds: float) -> bool:
        """Take or renew the lease *name* for *owner* for *seconds*; False if another holds it."""
        if not owner or seconds <= 0:
            raise ValueError("a service lease needs an owner and a positive duration")
        now = self._clock()
        values = {"owner": owner, "expires_at": now + timedelta(seconds=seconds)}
        renew = (
            update(_L)
            .where(_L.c.name == name, or_(_L.c.owner == owner, _L.c.expires_at < now))
            .values(values)
        )
        with self._writing() as conn:
            if conn.execute(renew).rowcount:
                return True
            holder = conn.execute(select(_L.c.owner).where(_L.c.name == name)).scalar()
            if holder is not None:
                if not dead_local_owner(holder):
                    return False
                # Its process on this host has ended: take the duty over at once.
                take = update(_L).where(_L.c.name == name, _L.c.owner == holder).values(values)
                return bool(conn.execute(take).rowcount)
        # Nobody ever held it: the first insert wins, a concurrent one conflicts.
        return self._insert_once(insert(_L).values(name=name, **values))

    def release(self, name: str, owner: str) -> None:
        """Give the lease up (if *owner* holds it), so another worker takes over at once."""
        with self._writing() as conn:
            conn.execute(delete(_L).where(_L.c.name == name, _L.c.owner == owner))

    def holder(self, name: str) -> str | None:
        """Who holds the lease now (None: free or expired)."""
        query = select(_L.c.owner).where(_L.c.name == name, _L.c.expires_at >= self._clock())
        with self._reading() as conn:
            owner: str | None = conn.execute(query).scalar()
        return owner


class GatewaySettings(EngineAccess):
    """The ``gateway_settings`` table: values shared by every worker of the deployment."""

    def get(self, name: str) -> str | None:
        """The value stored under *name*, or None."""
        with self._reading() as conn:
            value: str | None = conn.execute(select(_S.c.value).where(_S.c.name == name)).scalar()
        return value

    def put(self, name: str, value: str) -> None:
        """Store *value* under *name* (replacing what was there)."""
        with self._writing() as conn:
            if not conn.execute(update(_S).where(_S.c.name == name).values(value=value)).rowcount:
                conn.execute(insert(_S).values(name=name, value=value))

    def shared_secret(self, name: str, nbytes: int = 32) -> str:
        """The secret stored under *name*, made (random, URL-safe) by the first caller."""
        query = select(_S.c.value).where(_S.c.name == name)
        with self._reading() as conn:
            value: str | None = conn.execute(query).scalar()
        if value is not None:
            return value
        # A worker that loses the race to make it uses the one that won.
        self._insert_once(insert(_S).values(name=name, value=secrets.token_urlsafe(nbytes)))
        with self._reading() as conn:
            made: str = conn.execute(query).scalar_one()
        return made
