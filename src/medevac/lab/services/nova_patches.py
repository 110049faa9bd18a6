"""How the lab's Nova service changes Nova and oslo.messaging in its process.

Each function patches one thing, once, before Nova's fixtures start; see the
"Deadlock avoidance" section of nova_service's docstring for why the service
group and cell patches exist.
"""

from __future__ import annotations

import collections.abc
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from nova_notifications import NotificationForwarder


def patch_lazy_provider_allocations() -> None:
    """Fetch a host's allocations from Placement only when they are used.

    Every resource update (each boot's claim, each evacuation's claim on its
    destination) reads the allocations of every server on the host, one
    Placement call per server, for a reshape or a PCI-in-Placement heal that
    never happens with the fake driver and ``[pci] report_in_placement`` off:
    a host's Nth boot cost N calls, and a 200-server lab took over 15 minutes
    to boot. Nova still gets the same data whenever it does look at it.
    """
    from nova.scheduler.client import report

    real = report.SchedulerReportClient.get_allocations_for_provider_tree

    class LazyAllocations(collections.abc.Mapping[Any, Any]):
        def __init__(self, fetch: Callable[[], Any]) -> None:
            self._fetch, self._data = fetch, None

        def _loaded(self) -> Any:
            if self._data is None:
                self._data = self._fetch()
            return self._data

        def __getitem__(self, key: Any) -> Any:
            return self._loaded()[key]

        def __iter__(self) -> Iterator[Any]:
            return iter(self._loaded())

        def __len__(self) -> int:
            return len(self._loaded())

    def lazy(self: Any, context: Any, nodename: str) -> LazyAllocations:
        return LazyAllocations(lambda: real(self, context, nodename))

    report.SchedulerReportClient.get_allocations_for_provider_tree = lazy


def patch_fake_rpc() -> None:
    """Make the in-process RPC bus wake listeners on delivery.

    oslo.messaging's fake driver polls every queue every 50 ms: each RPC hop
    costs up to 50 ms and every listener thread wakes 20 times a second. Here
    listeners sleep on a condition that a delivery (or a stop) notifies.
    """
    from oslo_messaging._drivers import base as om_base
    from oslo_messaging._drivers import impl_fake

    cond = threading.Condition()
    gen = [0]

    def bump() -> None:
        with cond:
            gen[0] += 1
            cond.notify_all()

    orig_deliver = impl_fake.FakeExchange.deliver_message

    def deliver_message(self: Any, *a: Any, **kw: Any) -> Any:
        try:
            return orig_deliver(self, *a, **kw)
        finally:
            bump()

    def poll(self: Any, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.time() + timeout
        while not self._stopped.is_set():
            with cond:
                seen = gen[0]
            for target in self._targets:
                exchange = self._exchange_manager.get_exchange(target.exchange)
                (ctxt, message, reply_q, requeue) = exchange.poll(target, self._pool)
                if message is not None:
                    return impl_fake.FakeIncomingMessage(ctxt, message, reply_q, requeue)
            wait = 1.0
            if deadline is not None:
                wait = min(wait, deadline - time.time())
                if wait <= 0:
                    break
            with cond:
                if gen[0] == seen and not self._stopped.is_set():
                    cond.wait(wait)
        return None

    orig_stop = impl_fake.FakeListener.stop

    def stop(self: Any) -> None:
        orig_stop(self)
        bump()

    impl_fake.FakeExchange.deliver_message = deliver_message
    impl_fake.FakeListener.poll = om_base.batch_poll_helper(poll)
    impl_fake.FakeListener.stop = stop


def patch_service_group(register: Callable[[Any, Any], None]) -> None:
    """One lab-owned heartbeat thread instead of a timer per service: a service
    joining its group is handed to ``register(service, driver)``."""
    import nova.conf
    from nova.servicegroup.drivers import db as sg_db

    conf = nova.conf.CONF

    def join(driver: Any, member: Any, group: Any, service: Any = None) -> None:
        if service is None:
            raise RuntimeError("service is mandatory for the DB driver")
        register(service, driver)

    sg_db.DbDriver.join = join
    # service_down_time is read live (it is cached per driver otherwise)
    sg_db.DbDriver.service_down_time = property(
        lambda self: conf.service_down_time, lambda self, v: None
    )


def patch_notifications(forwarder: NotificationForwarder | None) -> None:
    """Versioned notifications go to ``forwarder`` (if enabled), and are not hoarded
    in memory as Nova's fixtures do; legacy notifications go nowhere."""
    from nova.tests.fixtures import notifications as notif_fixtures

    def versioned_notify(
        notifier: Any, priority: str, ctxt: Any, event_type: str, payload: Any
    ) -> None:
        payload = notifier._serializer.serialize_entity(ctxt, payload)
        if forwarder is not None and forwarder.enabled:
            try:
                cdict = notifier._serializer.serialize_context(ctxt)
            except Exception:
                cdict = {}
            forwarder.submit(notifier.publisher_id, priority, event_type, payload, cdict or {})

    notif_fixtures.FakeVersionedNotifier._notify = versioned_notify
    notif_fixtures.FakeNotifier._notify = lambda notifier, priority, ctxt, event_type, payload: None


def patch_live_migration() -> None:
    """A live-migrated server's domain leaves its source hypervisor.

    ``fake.FakeDriver`` live-migrates (the conductor's checks, the destination's
    claim and ``post_live_migration_at_destination`` all run), but its
    ``post_live_migration`` is the base driver's no-op: the domain would stay
    defined and RUNNING on the source, so the lab would see the server run on two
    hosts. Nova's own ``FakeLiveMigrateDriver`` destroys it there; so does this.
    """
    from nova.virt import fake

    def post_live_migration(
        self: Any,
        context: Any,
        instance: Any,
        block_device_info: Any,
        migrate_data: Any = None,
    ) -> None:
        self.destroy(context, instance, network_info=None, block_device_info=block_device_info)

    fake.FakeDriver.post_live_migration = post_live_migration


def patch_target_cell() -> None:
    """``target_cell`` no longer swaps the process-global cell state."""
    from nova.tests import fixtures as nova_fixtures

    def target_cell_no_swap(fixture_self: Any, context: Any, cell_mapping: Any) -> Any:
        return fixture_self._real_target_cell(context, cell_mapping)

    nova_fixtures.CellDatabases._wrap_target_cell = target_cell_no_swap
