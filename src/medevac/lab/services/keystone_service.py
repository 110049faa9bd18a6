r"""A real Keystone 30 for the lab (``lab up --identity keystone``).

Run with the lab venv's interpreter (it must not import medevac)::

    .venv-lab/bin/python keystone_service.py --state-dir D --port P \
        --ready-file D/keystone.json [--log-file F]

Keystone's own WSGI application (``keystone.wsgi.api``) served by waitress on
127.0.0.1:P, on SQLite, with fernet tokens. A fresh database costs about 10 s
(db_sync, then bootstrap), so it is made once per lab venv, as a template beside
the venv's interpreter, and copied for each lab; each lab gets its own fernet and
credential keys. The template's bootstrap admin password is in the ready file: the
supervisor replaces it with the lab's own when it seeds the projects and users.

When serving, writes {"url": "http://127.0.0.1:P", "auth_url": ".../v3", "pid": N,
"admin_password": ...} to the ready file (mode 0600, atomically). Stops on
SIGTERM/SIGINT and exits 0.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore", message=r"(?s).*Eventlet is deprecated")

LOG = logging.getLogger("lab.keystone")

KEYSTONE_VERSION = "30.0.0"
# The URL bootstrap writes in the template's catalog; each lab's copy gets its own.
TEMPLATE_URL = "http://127.0.0.1:1/v3"
# Bump when the template's making changes, so old templates are not reused.
TEMPLATE_REVISION = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--ready-file", required=True, type=Path)
    p.add_argument("--log-file", type=Path, default=None)
    p.add_argument(
        "--template-root",
        type=Path,
        default=Path(sys.prefix) / "share" / "medevac-lab-keystone",
        help="where the database template is kept (default: in the lab venv)",
    )
    return p.parse_args(argv)


def keystone_conf(db: Path, keys: Path, log_file: Path | None) -> str:
    """The configuration of a lab Keystone (``keys``: its key repositories' parent)."""
    lines = [
        "[DEFAULT]",
        "use_stderr = false",
        *([f"log_file = {log_file}"] if log_file else []),
        "[database]",
        f"connection = sqlite:///{db}",
        "[token]",
        "provider = fernet",
        "[identity]",
        # bcrypt's floor (default 12): every user created or authenticated hashes.
        "password_hash_rounds = 4",
        # The default (4096) logs "Truncating password" on every bcrypt hash.
        "max_password_length = 72",
        # In-process: one request otherwise costs ~200 SQL queries (0.4 s against 20 ms),
        # and with one process every change invalidates what it cached.
        "[cache]",
        "enabled = true",
        "backend = dogpile.cache.memory",
        "[fernet_tokens]",
        f"key_repository = {keys / 'fernet'}",
        "[fernet_receipts]",
        f"key_repository = {keys / 'fernet'}",
        "[credential]",
        f"key_repository = {keys / 'credential'}",
    ]
    return "\n".join(lines) + "\n"


def _manage(conf: Path, *args: str, env: dict[str, str] | None = None) -> None:
    cmd = [
        sys.executable,
        "-c",
        "import sys; from keystone.cmd.manage import main; sys.exit(main())",
        "--config-file",
        str(conf),
        *args,
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300
    )
    if done.returncode != 0:
        raise RuntimeError(f"keystone-manage {args[0]} failed: {done.stderr[-2000:]}")


def ensure_template(root: Path) -> Path:
    """The database template (made now if this venv has none): a bootstrapped
    Keystone database and its admin password, in a directory of their own."""
    template = root / f"keystone-{KEYSTONE_VERSION}-r{TEMPLATE_REVISION}"
    if (template / "admin_password").exists():
        return template
    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".making-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    conf = work / "keystone.conf"
    conf.write_text(keystone_conf(work / "keystone.sqlite", work, None))
    _key_repository(work / "fernet")  # bootstrap insists on them; each lab has its own
    _key_repository(work / "credential")
    _manage(conf, "db_sync")
    password = secrets.token_urlsafe(18)
    # Through the environment, not the command line other users' `ps` shows.
    _manage(
        conf,
        "bootstrap",
        env={
            "OS_BOOTSTRAP_PASSWORD": password,
            "OS_BOOTSTRAP_USERNAME": "admin",
            "OS_BOOTSTRAP_PROJECT_NAME": "admin",
            "OS_BOOTSTRAP_ROLE_NAME": "admin",
            "OS_BOOTSTRAP_SERVICE_NAME": "keystone",
            "OS_BOOTSTRAP_REGION_ID": "RegionOne",
            "OS_BOOTSTRAP_PUBLIC_URL": TEMPLATE_URL,
            "OS_BOOTSTRAP_INTERNAL_URL": TEMPLATE_URL,
        },
    )
    for made in ("keystone.conf", "fernet", "credential"):
        shutil.rmtree(work / made) if (work / made).is_dir() else (work / made).unlink()
    (work / "admin_password").write_text(password)
    try:
        work.rename(template)
    except OSError:  # another lab made it meanwhile: theirs is as good
        shutil.rmtree(work, ignore_errors=True)
    LOG.info("keystone template made in %.1f s at %s", time.monotonic() - t0, template)
    return template


def _key_repository(path: Path) -> None:
    """Two fernet keys, as `keystone-manage fernet_setup` writes them (0 staged, 1 primary)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in ("0", "1"):
        key = path / name
        key.write_bytes(base64.urlsafe_b64encode(os.urandom(32)))
        key.chmod(0o600)


def prepare(state: Path, template: Path, url: str, log_file: Path | None) -> tuple[Path, str]:
    """This lab's Keystone files from the template; its configuration and admin password."""
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(mode=0o700, parents=True)
    db = state / "keystone.sqlite"
    shutil.copyfile(template / "keystone.sqlite", db)
    with sqlite3.connect(db) as c:
        c.execute("UPDATE endpoint SET url = ? WHERE url = ?", (url, TEMPLATE_URL))
    _key_repository(state / "fernet")
    _key_repository(state / "credential")
    conf = state / "keystone.conf"
    conf.write_text(keystone_conf(db, state, log_file))
    return conf, (template / "admin_password").read_text()


def write_ready(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.chmod(0o600)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        filename=args.log_file,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    t0 = time.monotonic()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    url = f"http://127.0.0.1:{args.port}"
    template = ensure_template(args.template_root)
    conf, admin_password = prepare(args.state_dir, template, url + "/v3", args.log_file)
    t_files = time.monotonic()

    # keystone.wsgi.api parses its configuration at import, and oslo.config falls back
    # to sys.argv[1:] for its command line: ours would be refused.
    os.environ["OS_KEYSTONE_CONFIG_FILES"] = str(conf)
    saved, sys.argv = sys.argv, sys.argv[:1]
    from keystone.wsgi.api import application

    sys.argv = saved
    import waitress.server

    server = waitress.server.create_server(application, host="127.0.0.1", port=args.port, threads=4)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    write_ready(
        args.ready_file,
        {"url": url, "auth_url": url + "/v3", "pid": os.getpid(), "admin_password": admin_password},
    )
    LOG.info(
        "keystone ready at %s in %.2f s (files %.2f s, application %.2f s)",
        url,
        time.monotonic() - t0,
        t_files - t0,
        time.monotonic() - t_files,
    )
    while not stop.wait(0.5):
        pass
    LOG.info("stopping")
    server.close()
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
