"""Real Nova + Placement on loopback, with fake hypervisors (lab service).

Run with the lab venv's interpreter (it does not import ``medevac``)::

    .venv-lab/bin/python src/medevac/lab/services/nova_service.py \\
        --hosts host1,host2 --ready-file /tmp/nova.json \\
        [--report-interval 1] [--service-down-time 5] \\
        [--transport-url rabbit://guest:guest@127.0.0.1:5672/] [--log-file F]

It reuses the fixtures Nova ships for its functional tests: real Nova API,
conductor, scheduler, compute managers, service-group heartbeat logic and
Placement, all in this one process; the hypervisor is ``fake.FakeDriver``
(1000 vCPU, 800 GB of RAM per host: room for any lab layout), quotas are lifted.

When ready it writes (atomically) the ready file::

    {"api_url": "http://127.0.0.1:P/v2.1", "control_url": "http://127.0.0.1:Q",
     "pid": N, "image_id": ..., "flavor_id": "1", "hosts": [...],
     "report_interval": F, "service_down_time": N}

Nova API (``api_url``)
    Version discovery at ``/`` and ``/v2.1``. Every request is admin (user
    ``admin``, project ``admin``, roles admin,member,reader) unless the
    ``X-Auth-Token`` is ``lab-project-<PROJECT>`` or
    ``lab-project-<PROJECT>-user-<USER>``: then a member (roles member,reader)
    of PROJECT (user ``lab-user`` by default). ``host_status`` (both the
    ``show:host_status`` and ``show:host_status:unknown-only`` policies) is
    opened to members of the server's own project, as NFV clouds do.

Control API (``control_url``, JSON)
    GET  /healthz                       {"ok": true}
    GET  /info                          ports, hosts, image/flavor ids, timings
    GET  /hosts                         {"hosts": {h: {"compute_running": bool,
                                          "domains_alive": bool}}}
    POST /hosts/<h>/stop   {"domains": "destroy"|"keep"}  (default destroy)
    POST /hosts/<h>/start  {"domains_alive": bool}        (default: unchanged)
    POST /hosts/<h>/power-cut            every domain of the host powered off at
                                          once; nova-compute is left as it is
    POST /servers/<uuid>/crash
    POST /servers/<uuid>/heal
    GET  /domains                       {h: [uuid of each RUNNING domain]}
    GET  /domains/all                   {h: {uuid: power state name}} for every
                                          domain defined on the fake hypervisor
    GET  /heartbeat                     current timings
    POST /heartbeat {"report_interval": F, "service_down_time": N}
    Errors: 404 {"error": ...} for unknown host/server/path, 400 for a bad body,
    409 when the operation does not fit the current state.

Semantics chosen
    * stop/destroy: the host's nova-compute stops (RPC servers down, no more
      heartbeats, so Nova reports it ``down`` / host_status UNKNOWN after
      service_down_time) and every domain of the host is powered off in the
      fake hypervisor (it keeps its definitions, like libvirt's persistent
      domains after a power loss). stop/keep: only nova-compute stops; the
      domains go on running.
    * start: a brand new compute manager is started on the same fake
      hypervisor (Nova's ``restart_compute_service(keep_hypervisor_state=
      True)`` path), so ``init_host`` destroys the instances that were
      evacuated away, as production does. With ``domains_alive`` false the
      remaining domains stay (or are made) SHUTDOWN and a power-state sync is
      run at once for the host's instances: Nova then sees them shut down and
      calls its own stop API, so they end ``SHUTOFF`` (vm_state stopped,
      power_state 4), the state a compute host's reboot leaves them in with
      ``resume_guests_state_on_host_boot`` off. With ``domains_alive`` true the
      domains are RUNNING again.
    * crash: the server's domain goes to power state CRASHED, then Nova's
      power-state sync runs for it synchronously on its host (the per-instance
      step of ``_sync_power_states``): Nova records the power state and calls
      its stop API, so the server ends SHUTOFF (vm_state stopped, power_state 4).
      If the host's nova-compute is stopped only the domain changes.
    * heal: if Nova already stopped the server, heal starts it through Nova's
      compute API (``os-start`` path, the driver powers the domain on); if Nova
      still thinks it is active the domain is simply RUNNING again and synced.
      Either way it ends ACTIVE / running.

Deadlock avoidance
    Nova's threading fixtures guard SQLite with a writer RLock per database and
    swap a process-global "current cell" under a writer-preferring
    reader/writer lock on every ``target_cell`` to cell0 (every server list
    scatter-gathers over cell0 and cell1). A thread holding a DB writer lock
    that needs the global cell state, while another holds the cell read lock
    and waits on that DB writer lock and a third waits to swap the state, is a
    cycle: it was seen with big boots and 1 s heartbeats. This service
    removes the cycle instead of making it rarer:
      1. ``target_cell`` no longer swaps the global cell state: targeted
         contexts already carry their own DB connection, and untargeted code
         always uses the default cell (cell1, where every compute lives). The
         reader/writer lock thus never has a writer, so no thread ever waits
         on it; the only blocking locks left are the per-DB writer RLocks,
         held only for one transaction.
      2. Nova's per-service heartbeat timers are replaced by one heartbeat
         thread that reports every live service in turn with Nova's own
         ``DbDriver._report_state``: at most one heartbeat write in flight,
         and the timings can be changed at run time (POST /heartbeat takes
         effect at once; ``service_down_time`` is read live by the
         service-group driver).
    The lab can therefore boot at full speed with the final (short) timings.
    A second, optional guard: the caller may still lengthen the heartbeat while
    booting through POST /heartbeat. SIGUSR1 dumps every thread's stack to the
    log (for diagnosing a hang).
"""

import argparse
import faulthandler
import json
import logging
import os
import queue
import re
import signal
import socket
import socketserver
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

os.environ.setdefault('OS_NOVA_DISABLE_EVENTLET_PATCHING', '1')
os.environ.setdefault('OS_LOG_CAPTURE', '0')

LOG = logging.getLogger('lab.nova_service')

IMAGE_ID = '155d900f-4e14-4e4c-a73d-069cbf4541e6'
FLAVOR_ID = '1'
ADMIN_PROJECT = 'admin'
TOKEN_RE = re.compile(r'^lab-project-(?P<project>.+?)(?:-user-(?P<user>.+))?$')
LAB_MEMBER_RULE = 'role:admin or role:member'
HOST_STATUS_RULE = ('role:admin or '
                    '(role:member and project_id:%(project_id)s)')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--hosts', required=True,
                   help='comma separated compute host names')
    p.add_argument('--report-interval', type=float, default=1.0)
    p.add_argument('--service-down-time', type=int, default=5)
    p.add_argument('--ready-file', required=True)
    p.add_argument('--transport-url', default=None)
    p.add_argument('--log-file', default=None)
    args = p.parse_args(argv)
    args.hosts = [h.strip() for h in args.hosts.split(',') if h.strip()]
    if not args.hosts:
        p.error('--hosts needs at least one host')
    if len(set(args.hosts)) != len(args.hosts):
        p.error('--hosts has duplicates')
    for h in args.hosts:
        if not re.match(r'^[A-Za-z0-9][A-Za-z0-9._-]*$', h):
            p.error('bad host name %r' % h)
    if args.report_interval <= 0:
        p.error('--report-interval must be > 0')
    if args.service_down_time <= args.report_interval:
        p.error('--service-down-time must exceed --report-interval')
    return args


# --------------------------------------------------------------------------
# notification forwarding
# --------------------------------------------------------------------------

class NotificationForwarder:
    """Publishes Nova's versioned notifications to RabbitMQ, off Nova's path.

    Nova's thread only enqueues (never blocks; drops when the queue is full).
    """

    def __init__(self, url):
        self.url = url
        self.queue = queue.Queue(maxsize=20000)
        self.enabled = False
        self.dropped = 0
        self.sent = 0
        self.failed = 0
        self._notifier = None
        self._transport = None
        self._thread = None
        self._stop = threading.Event()

    def start(self):
        parsed = urllib.parse.urlparse(self.url)
        host = parsed.hostname or '127.0.0.1'
        port = parsed.port or 5672
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError as exc:
            LOG.warning('notification bus %s unreachable (%s): versioned '
                        'notifications will not be published', host, exc)
            return False
        try:
            import oslo_messaging
            from oslo_config import cfg
            from oslo_messaging import transport as om_transport
            conf = cfg.ConfigOpts()
            conf([], project='lab-notify')
            conf.register_opts(om_transport._transport_opts)
            conf.set_override('control_exchange', 'nova')
            self._transport = oslo_messaging.get_notification_transport(
                conf, url=self.url)
            self._notifier = oslo_messaging.Notifier(
                self._transport, publisher_id='nova-lab',
                driver='messagingv2', topics=['versioned_notifications'],
                retry=1)
        except Exception as exc:
            LOG.warning('notification bus %s unusable (%s): versioned '
                        'notifications will not be published', host, exc)
            return False
        self.enabled = True
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name='lab-notify')
        self._thread.start()
        LOG.info('publishing versioned notifications to %s', host)
        return True

    def submit(self, publisher_id, priority, event_type, payload, ctxt):
        if not self.enabled:
            return
        try:
            self.queue.put_nowait((publisher_id, priority, event_type,
                                   payload, ctxt))
        except queue.Full:
            self.dropped += 1

    def _run(self):
        warned = False
        while not self._stop.is_set():
            try:
                item = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            publisher_id, priority, event_type, payload, ctxt = item
            try:
                notifier = self._notifier.prepare(publisher_id=publisher_id)
                getattr(notifier, priority.lower(), notifier.info)(
                    ctxt, event_type, payload)
                self.sent += 1
                warned = False
            except Exception as exc:
                self.failed += 1
                if not warned:
                    LOG.warning('publishing %s failed: %s', event_type, exc)
                    warned = True

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._transport is not None:
            try:
                self._transport.cleanup()
            except Exception:
                pass


# --------------------------------------------------------------------------
# a host's allocations read only when something uses them
# --------------------------------------------------------------------------

def patch_lazy_provider_allocations():
    """Fetch a host's allocations from Placement only when they are used.

    Every resource update (each boot's claim, each evacuation's claim on its
    destination) reads the allocations of every server on the host, one
    Placement call per server, for a reshape or a PCI-in-Placement heal that
    never happens with the fake driver and ``[pci] report_in_placement`` off:
    a host's Nth boot cost N calls, and a 200-server lab took over 15 minutes
    to boot. Nova still gets the same data whenever it does look at it.
    """
    import collections.abc

    from nova.scheduler.client import report

    real = report.SchedulerReportClient.get_allocations_for_provider_tree

    class LazyAllocations(collections.abc.Mapping):
        def __init__(self, fetch):
            self._fetch, self._data = fetch, None

        def _loaded(self):
            if self._data is None:
                self._data = self._fetch()
            return self._data

        def __getitem__(self, key):
            return self._loaded()[key]

        def __iter__(self):
            return iter(self._loaded())

        def __len__(self):
            return len(self._loaded())

    def lazy(self, context, nodename):
        return LazyAllocations(lambda: real(self, context, nodename))

    report.SchedulerReportClient.get_allocations_for_provider_tree = lazy


# --------------------------------------------------------------------------
# in-process RPC without polling
# --------------------------------------------------------------------------

def patch_fake_rpc():
    """Make the in-process RPC bus wake listeners on delivery.

    oslo.messaging's fake driver polls every queue every 50 ms: each RPC hop
    costs up to 50 ms and every listener thread wakes 20 times a second. Here
    listeners sleep on a condition that a delivery (or a stop) notifies.
    """
    from oslo_messaging._drivers import base as om_base
    from oslo_messaging._drivers import impl_fake

    cond = threading.Condition()
    gen = [0]

    def bump():
        with cond:
            gen[0] += 1
            cond.notify_all()

    orig_deliver = impl_fake.FakeExchange.deliver_message

    def deliver_message(self, *a, **kw):
        try:
            return orig_deliver(self, *a, **kw)
        finally:
            bump()

    def poll(self, timeout=None):
        deadline = None if timeout is None else time.time() + timeout
        while not self._stopped.is_set():
            with cond:
                seen = gen[0]
            for target in self._targets:
                exchange = self._exchange_manager.get_exchange(target.exchange)
                (ctxt, message, reply_q, requeue) = exchange.poll(target,
                                                                  self._pool)
                if message is not None:
                    return impl_fake.FakeIncomingMessage(ctxt, message,
                                                         reply_q, requeue)
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

    def stop(self):
        orig_stop(self)
        bump()

    impl_fake.FakeExchange.deliver_message = deliver_message
    impl_fake.FakeListener.poll = om_base.batch_poll_helper(poll)
    impl_fake.FakeListener.stop = stop


# --------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------

class _QuietWSGIHandler(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        LOG.debug('api %s - %s', self.address_string(), fmt % args)


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def identity_wrapper(app):
    """Fills in the identity headers Nova's stubbed Keystone reads."""

    def wrapped(environ, start_response):
        token = environ.get('HTTP_X_AUTH_TOKEN', '') or ''
        m = TOKEN_RE.match(token)
        if m:
            project = m.group('project')
            user = m.group('user') or 'lab-user'
            if user == 'admin':
                user = 'lab-admin-user'  # 'admin' would make it an admin
            roles = 'member,reader'
        else:
            project, user, roles = ADMIN_PROJECT, 'admin', 'admin,member,reader'
        environ['HTTP_X_AUTH_USER'] = user
        environ['HTTP_X_AUTH_PROJECT_ID'] = project
        environ['HTTP_X_ROLES'] = roles
        environ['HTTP_X_USER_ID'] = user
        environ['HTTP_X_PROJECT_ID'] = project
        return app(environ, start_response)

    return wrapped


class HttpError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def make_control_handler(lab):
    routes = [
        ('GET', re.compile(r'^/healthz$'), lambda m, b: {'ok': True}),
        ('GET', re.compile(r'^/info$'), lambda m, b: lab.info()),
        ('GET', re.compile(r'^/hosts$'), lambda m, b: lab.hosts_state()),
        ('GET', re.compile(r'^/domains$'), lambda m, b: lab.domains()),
        ('GET', re.compile(r'^/domains/all$'),
         lambda m, b: lab.all_domains()),
        ('GET', re.compile(r'^/heartbeat$'), lambda m, b: lab.heartbeat()),
        ('POST', re.compile(r'^/heartbeat$'),
         lambda m, b: lab.set_heartbeat(b)),
        ('POST', re.compile(r'^/hosts/([^/]+)/stop$'),
         lambda m, b: lab.stop_host(m.group(1), b)),
        ('POST', re.compile(r'^/hosts/([^/]+)/start$'),
         lambda m, b: lab.start_host(m.group(1), b)),
        ('POST', re.compile(r'^/hosts/([^/]+)/power-cut$'),
         lambda m, b: lab.power_cut(m.group(1))),
        ('POST', re.compile(r'^/servers/([^/]+)/crash$'),
         lambda m, b: lab.crash_server(m.group(1))),
        ('POST', re.compile(r'^/servers/([^/]+)/heal$'),
         lambda m, b: lab.heal_server(m.group(1))),
    ]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def log_message(self, fmt, *args):
            LOG.debug('control %s', fmt % args)

        def _send(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method):
            path = urllib.parse.urlsplit(self.path).path.rstrip('/') or '/'
            length = int(self.headers.get('Content-Length') or 0)
            raw = self.rfile.read(length) if length else b''
            try:
                body = {}
                if raw.strip():
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        raise HttpError(400, 'body is not JSON')
                    if not isinstance(body, dict):
                        raise HttpError(400, 'body must be a JSON object')
                known_path = False
                for meth, rx, fn in routes:
                    m = rx.match(path)
                    if not m:
                        continue
                    known_path = True
                    if meth != method:
                        continue
                    return self._send(200, fn(m, body))
                if known_path:
                    raise HttpError(405, 'method not allowed')
                raise HttpError(404, 'no such path %s' % path)
            except HttpError as exc:
                self._send(exc.status, {'error': exc.message})
            except Exception as exc:
                LOG.exception('control %s %s failed', method, path)
                self._send(500, {'error': '%s: %s' % (type(exc).__name__,
                                                      exc)})

        def do_GET(self):
            self._handle('GET')

        def do_POST(self):
            self._handle('POST')

    return Handler


def _serve(server, name):
    t = threading.Thread(target=server.serve_forever,
                         kwargs={'poll_interval': 0.2}, daemon=True,
                         name=name)
    t.start()
    return t


# --------------------------------------------------------------------------
# the lab
# --------------------------------------------------------------------------

class Lab:
    def __init__(self, args):
        self.args = args
        self.case = None
        self.hosts = {}          # host -> {'service', 'driver', 'running', 'alive'}
        self.lock = threading.RLock()   # serialises control operations
        self.hb_lock = threading.Lock()
        self.hb_services = []    # services the heartbeat thread reports
        self.hb_wake = threading.Event()
        self.hb_stop = threading.Event()
        self.hb_thread = None
        self.hb_driver = None
        self.report_interval = float(args.report_interval)
        self.forwarder = None
        self.api_server = None
        self.control_server = None

    # -- setup -------------------------------------------------------------
    def start(self):
        import nova.conf
        import nova.tests.functional
        from nova.servicegroup.drivers import db as sg_db
        from nova.tests import fixtures as nova_fixtures
        from nova.tests.fixtures import notifications as notif_fixtures
        from nova.tests.functional import integrated_helpers

        CONF = nova.conf.CONF
        lab = self
        if self.forwarder is not None:
            self.forwarder.start()
        patch_fake_rpc()
        patch_lazy_provider_allocations()

        # 1. heartbeat: one lab-owned thread instead of a timer per service.
        def join(driver, member, group, service=None):
            if service is None:
                raise RuntimeError('service is mandatory for the DB driver')
            lab._hb_register(service, driver)
        sg_db.DbDriver.join = join
        # service_down_time is read live (it is cached per driver otherwise)
        sg_db.DbDriver.service_down_time = property(
            lambda self: CONF.service_down_time, lambda self, v: None)

        # 2. versioned notifications: forward, do not hoard in memory.
        forwarder = self.forwarder

        def versioned_notify(notifier, priority, ctxt, event_type, payload):
            payload = notifier._serializer.serialize_entity(ctxt, payload)
            if forwarder is not None and forwarder.enabled:
                try:
                    cdict = notifier._serializer.serialize_context(ctxt)
                except Exception:
                    cdict = {}
                forwarder.submit(notifier.publisher_id, priority, event_type,
                                 payload, cdict or {})
        notif_fixtures.FakeVersionedNotifier._notify = versioned_notify
        notif_fixtures.FakeNotifier._notify = (
            lambda notifier, priority, ctxt, event_type, payload: None)

        # 3. no global cell swapping (see module docstring).
        def target_cell_no_swap(fixture_self, context, cell_mapping):
            return fixture_self._real_target_cell(context, cell_mapping)
        nova_fixtures.CellDatabases._wrap_target_cell = target_cell_no_swap

        class LabCase(integrated_helpers.ProviderUsageBaseTestCase):
            compute_driver = 'fake.FakeDriver'

            def setUp(self):
                self.flags(api_paste_config=os.path.join(
                    sys.prefix, 'etc', 'nova', 'api-paste.ini'), group='wsgi')
                self.flags(report_interval=max(
                    1, int(round(lab.args.report_interval))),
                    service_down_time=lab.args.service_down_time)
                super().setUp()

            def _clear_attrs(self):
                pass

            def runTest(self):
                pass

        case = LabCase('runTest')
        self.case = case
        t0 = time.monotonic()
        case.setUp()
        # Nova's test base makes idle pool workers poll every 10 ms (its tests then
        # tear down at once). A running Nova's workers wait 1 s: with the lab's 200
        # or so idle workers, 10 ms kept a core busy waking them, on a machine the
        # controller shares.
        import futurist._thread  # (only once Nova has set up its threading mode)

        futurist._thread.ThreadWorker.MAX_IDLE_FOR = 1
        self._tame_logging()
        case.flags(notification_format='versioned', group='notifications')
        for opt in ('instances', 'cores', 'ram', 'metadata_items',
                    'key_pairs', 'server_groups', 'server_group_members'):
            case.flags(**{opt: -1, 'group': 'quota'})
        case.flags(reserved_host_memory_mb=0)
        case.flags(service_down_time=self.args.service_down_time)
        case.policy.set_rules({
            'os_compute_api:servers:show:host_status': HOST_STATUS_RULE,
            'os_compute_api:servers:show:host_status:unknown-only':
                HOST_STATUS_RULE,
            # The lab places each tenant's servers on a chosen host (2.74
            # ``host``), which stock policy keeps for admins.
            'compute:servers:create:requested_destination': LAB_MEMBER_RULE,
        }, overwrite=False)
        LOG.info('control plane up in %.2fs', time.monotonic() - t0)

        self.hb_thread = threading.Thread(target=self._hb_run, daemon=True,
                                          name='lab-heartbeat')
        self.hb_thread.start()

        for host in self.args.hosts:
            svc = case._start_compute(host)
            self.hosts[host] = {'service': svc, 'driver': svc.manager.driver,
                                'running': True, 'alive': True}
        LOG.info('%d computes up in %.2fs', len(self.hosts),
                 time.monotonic() - t0)

        app = identity_wrapper(case.api_fixture.app())
        self.api_server = ThreadingWSGIServer(('127.0.0.1', 0),
                                              _QuietWSGIHandler)
        self.api_server.set_app(app)
        _serve(self.api_server, 'lab-api')
        self.control_server = ThreadingHTTPServer(
            ('127.0.0.1', 0), make_control_handler(self))
        self.control_server.daemon_threads = True
        _serve(self.control_server, 'lab-control')

    def _tame_logging(self):
        """Drop the in-memory log capture; log INFO+ to the log file."""
        root = logging.getLogger()
        for h in list(root.handlers):
            root.removeHandler(h)
        fmt = logging.Formatter(
            '%(asctime)s %(levelname)s [%(name)s] %(message)s')
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(fmt)
        root.addHandler(handler)
        level = os.environ.get('NOVA_LAB_LOG_LEVEL', 'INFO').upper()
        root.setLevel(getattr(logging, level, logging.INFO))
        if root.level <= logging.DEBUG:
            return
        for noisy in ('nova.scheduler.host_manager', 'placement.requestlog',
                      'nova.api.openstack.requestlog', 'oslo.messaging',
                      'stevedore', 'nova.compute.resource_tracker'):
            logging.getLogger(noisy).setLevel(logging.WARNING)

    # -- heartbeat -----------------------------------------------------------
    def _hb_register(self, service, driver):
        with self.hb_lock:
            self.hb_driver = driver
            self.hb_services = [s for s in self.hb_services
                                if not (s.host == service.host and
                                        s.binary == service.binary)]
            self.hb_services.append(service)
        self.hb_wake.set()

    def _hb_unregister(self, service):
        with self.hb_lock:
            self.hb_services = [s for s in self.hb_services
                                if s is not service]

    def _hb_run(self):
        while not self.hb_stop.is_set():
            started = time.monotonic()
            with self.hb_lock:
                services = list(self.hb_services)
                driver = self.hb_driver
            for svc in services:
                if self.hb_stop.is_set():
                    return
                with self.hb_lock:
                    if svc not in self.hb_services:
                        continue
                try:
                    driver._report_state(svc)
                except Exception:
                    LOG.exception('heartbeat of %s failed', svc.host)
            self.hb_wake.clear()
            delay = self.report_interval - (time.monotonic() - started)
            if delay > 0:
                self.hb_wake.wait(delay)

    def heartbeat(self):
        from nova import conf
        return {'report_interval': self.report_interval,
                'service_down_time': conf.CONF.service_down_time}

    def set_heartbeat(self, body):
        ri = body.get('report_interval', self.report_interval)
        sdt = body.get('service_down_time', self.heartbeat()[
            'service_down_time'])
        if (not isinstance(ri, (int, float)) or isinstance(ri, bool) or
                not isinstance(sdt, int) or isinstance(sdt, bool) or
                ri <= 0 or sdt <= ri):
            raise HttpError(400, 'need report_interval > 0 and integer '
                                 'service_down_time > report_interval')
        self.case.flags(report_interval=max(1, int(round(ri))),
                        service_down_time=sdt)
        self.report_interval = float(ri)
        self.hb_wake.set()
        return self.heartbeat()

    # -- helpers ---------------------------------------------------------------
    def _host(self, host):
        if host not in self.hosts:
            raise HttpError(404, 'unknown host %s' % host)
        return self.hosts[host]

    def _admin_ctx(self):
        from nova import context
        return context.get_admin_context()

    def _cell_ctx(self):
        from nova import context
        ctx = context.get_admin_context()
        context.set_target_cell(ctx, self.case.cell_mappings['cell1'])
        return ctx

    def _instance(self, uuid):
        from nova import exception, objects
        if not re.match(r'^[0-9a-fA-F-]{32,36}$', uuid):
            raise HttpError(404, 'unknown server %s' % uuid)
        try:
            return objects.Instance.get_by_uuid(self._cell_ctx(), uuid)
        except exception.InstanceNotFound:
            raise HttpError(404, 'unknown server %s' % uuid)

    def info(self):
        return {'api_url': self.api_url, 'control_url': self.control_url,
                'pid': os.getpid(), 'image_id': IMAGE_ID,
                'flavor_id': FLAVOR_ID, 'hosts': list(self.hosts),
                'notifications': bool(self.forwarder and
                                      self.forwarder.enabled),
                **self.heartbeat()}

    @property
    def api_url(self):
        return 'http://127.0.0.1:%d/v2.1' % self.api_server.server_address[1]

    @property
    def control_url(self):
        return 'http://127.0.0.1:%d' % self.control_server.server_address[1]

    def hosts_state(self):
        return {'hosts': {h: {'compute_running': st['running'],
                              'domains_alive': st['alive']}
                          for h, st in self.hosts.items()}}

    def domains(self):
        from nova.compute import power_state
        out = {}
        for h, st in self.hosts.items():
            insts = dict(st['driver'].instances)
            out[h] = sorted(u for u, i in insts.items()
                            if i.state == power_state.RUNNING)
        return out

    def all_domains(self):
        from nova.compute import power_state
        names = power_state.STATE_MAP
        return {h: {u: names.get(i.state, str(i.state))
                    for u, i in dict(st['driver'].instances).items()}
                for h, st in self.hosts.items()}

    def _set_domains(self, st, state):
        for inst in list(st['driver'].instances.values()):
            inst.state = state

    # -- host faults -------------------------------------------------------------
    def power_cut(self, host):
        """A BMC's power off: the domains die at that instant, before its answer.
        Without the lock: a host stop holding it takes a second or more, and the
        BMC must answer at once (stopping nova-compute follows in the background)."""
        from nova.compute import power_state
        st = self._host(host)
        self._set_domains(st, power_state.SHUTDOWN)
        st['alive'] = False
        return {'host': host, 'domains_alive': False}

    def stop_host(self, host, body):
        mode = body.get('domains', 'destroy')
        if mode not in ('destroy', 'keep'):
            raise HttpError(400, 'domains must be "destroy" or "keep"')
        with self.lock:
            st = self._host(host)
            if mode == 'destroy':  # a power loss: the domains die first, not after
                self.power_cut(host)
            if st['running']:
                svc = st['service']
                self._hb_unregister(svc)
                st['running'] = False
                t0 = time.monotonic()
                svc.stop()
                LOG.info('compute %s stopped in %.2fs', host,
                         time.monotonic() - t0)
            return {'host': host, 'compute_running': st['running'],
                    'domains_alive': st['alive']}

    def start_host(self, host, body):
        from unittest import mock

        from nova.compute import power_state
        alive = body.get('domains_alive')
        if alive is not None and not isinstance(alive, bool):
            raise HttpError(400, 'domains_alive must be a boolean')
        with self.lock:
            st = self._host(host)
            if st['running']:
                raise HttpError(409, 'compute on %s is already running' % host)
            if alive is None:
                alive = st['alive']
            self._set_domains(st, power_state.RUNNING if alive
                              else power_state.SHUTDOWN)
            st['alive'] = alive
            case = self.case
            cell_name = case.host_mappings[host].cell_mapping.name
            t0 = time.monotonic()
            with mock.patch('nova.virt.driver.load_compute_driver') as load:
                load.return_value = st['driver']
                svc = case.start_service('compute', host=host,
                                         cell_name=cell_name)
            case.computes[host] = svc
            st['service'] = svc
            st['running'] = True
            LOG.info('compute %s restarted in %.2fs', host,
                     time.monotonic() - t0)
            if not alive:
                self._sync_host(st)
            return {'host': host, 'compute_running': True,
                    'domains_alive': alive}

    def _sync_instance(self, st, instance):
        from nova import utils
        manager = st['service'].manager
        ctx = self._cell_ctx()

        @utils.synchronized(instance.uuid)
        def query_driver_power_state_and_sync():
            manager._query_driver_power_state_and_sync(ctx, instance)
        query_driver_power_state_and_sync()

    def _sync_host(self, st):
        from nova import objects
        insts = objects.InstanceList.get_by_host(
            self._cell_ctx(), st['service'].host, expected_attrs=[])
        for inst in insts:
            try:
                self._sync_instance(st, inst)
            except Exception:
                LOG.exception('power sync of %s failed', inst.uuid)

    # -- server faults -------------------------------------------------------------
    def _server_host(self, uuid):
        inst = self._instance(uuid)
        for h, st in self.hosts.items():
            if uuid in st['driver'].instances and (inst.host == h):
                return inst, h, st
        for h, st in self.hosts.items():
            if uuid in st['driver'].instances:
                return inst, h, st
        raise HttpError(409, 'server %s has no domain on any lab host' % uuid)

    def crash_server(self, uuid):
        from nova.compute import power_state
        with self.lock:
            inst, h, st = self._server_host(uuid)
            st['driver'].instances[uuid].state = power_state.CRASHED
            synced = False
            if st['running'] and inst.host == h:
                self._sync_instance(st, inst)
                synced = True
            return {'server': uuid, 'host': h, 'synced': synced}

    def heal_server(self, uuid):
        from nova.compute import api as compute_api
        from nova.compute import power_state, vm_states
        with self.lock:
            inst, h, st = self._server_host(uuid)
            action = 'domain-restarted'
            if inst.vm_state == vm_states.STOPPED and inst.task_state is None \
                    and st['running'] and inst.host == h:
                ctx = self._cell_ctx()
                compute_api.API().start(ctx, inst)
                action = 'started-through-nova'
            else:
                st['driver'].instances[uuid].state = power_state.RUNNING
                if st['running'] and inst.host == h:
                    self._sync_instance(st, inst)
            return {'server': uuid, 'host': h, 'action': action}

    # -- teardown ---------------------------------------------------------------
    def shutdown(self):
        self.hb_stop.set()
        self.hb_wake.set()
        if self.case is not None:
            # Idle workers see their pool's shutdown only when their wait ends: at
            # the 1 s set in start, the four pools took 4 s to stop. By the time
            # the services below have stopped, every worker waits 10 ms again.
            import futurist._thread
            futurist._thread.ThreadWorker.MAX_IDLE_FOR = 0.01
        for srv in (self.api_server, self.control_server):
            if srv is not None:
                try:
                    srv.shutdown()
                    srv.server_close()
                except Exception:
                    pass
        if self.case is not None:
            done = threading.Event()

            def cleanup():
                try:
                    self.case.doCleanups()
                except Exception:
                    LOG.debug('cleanup: %s', traceback.format_exc())
                done.set()
            threading.Thread(target=cleanup, daemon=True,
                             name='lab-cleanup').start()
            if not done.wait(8):
                LOG.warning('cleanup did not finish in 8s; exiting anyway')
        if self.forwarder is not None:
            self.forwarder.stop()


def write_ready(path, data):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.ready-', dir=d)
    with os.fdopen(fd, 'w') as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(argv)
    t_start = time.monotonic()
    if args.log_file:
        # Everything (stray prints, handlers Nova's fixtures restore while
        # cleaning up, faulthandler dumps) lands in the log file.
        fd = os.open(args.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                     0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(
        '%(asctime)s %(levelname)s [%(name)s] %(message)s'))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())

    lab = Lab(args)
    if args.transport_url:
        lab.forwarder = NotificationForwarder(args.transport_url)
    try:
        lab.start()
    except Exception:
        LOG.exception('lab failed to start')
        lab.shutdown()
        logging.shutdown()
        os._exit(1)
    if stop.is_set():
        lab.shutdown()
        logging.shutdown()
        os._exit(0)
    info = lab.info()
    write_ready(args.ready_file, info)
    LOG.info('ready in %.2fs: api %s control %s', time.monotonic() - t_start,
             info['api_url'], info['control_url'])
    while not stop.wait(0.5):
        pass
    LOG.info('stopping')
    lab.shutdown()
    LOG.info('stopped')
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Fixture cleanups may leave non-daemon worker threads behind.
    os._exit(0)


if __name__ == '__main__':
    main()
