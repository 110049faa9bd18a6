"""The lab's Keystone (``lab up --identity keystone``): its users, and the seeding of
its projects, users, roles and catalog through openstacksdk.

Every password is made for the lab when it starts and is a lab-only secret: the
lab's own files and output (lab.json, clouds.yaml, `lab env`) show them; medevac's
logs never do.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

from medevac.lab.layout import PROJECTS, LabError

IDENTITIES = ("static", "keystone")
SERVICE_PROJECT = "service"
SERVICE_USER = "medevac"


@dataclass(frozen=True)
class LabUser:
    """A Keystone user of the lab and the one role it holds in its project."""

    name: str
    password: str
    project: str
    role: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class KeystoneSetup:
    """A seeded lab Keystone: its v3 URL, its users, its projects' ids by name."""

    auth_url: str
    users: list[LabUser]
    projects: dict[str, str]

    def user(self, name: str) -> LabUser:
        return next(u for u in self.users if u.name == name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "auth_url": self.auth_url,
            "users": [u.as_dict() for u in self.users],
            "projects": self.projects,
        }


class SignIn:
    """Tokens from the lab's Keystone for the supervisor's own calls to Nova and
    Neutron: the admin's, or a member's of a tenant (by project id). keystoneauth
    keeps each and signs in again before it expires."""

    def __init__(self, setup: KeystoneSetup) -> None:
        self.setup = setup
        self._sessions: dict[str | None, Any] = {}

    def token(self, project_id: str | None = None) -> str:
        from keystoneauth1 import session
        from keystoneauth1.identity import v3

        sess = self._sessions.get(project_id)
        if sess is None:
            names = {v: k for k, v in self.setup.projects.items()}
            if project_id is None:
                user = self.setup.user("admin")
            elif project_id in names:
                user = self.setup.user(f"member-{names[project_id]}")
            else:
                raise LabError(f"no lab user is a member of project {project_id}")
            auth = v3.Password(
                auth_url=self.setup.auth_url,
                username=user.name,
                password=user.password,
                project_name=user.project,
                user_domain_name="Default",
                project_domain_name="Default",
            )
            sess = self._sessions[project_id] = session.Session(auth=auth)
        return str(sess.get_token())


def lab_users() -> list[LabUser]:
    """The lab's users, with fresh passwords: an admin (the bootstrap admin), a
    reader, a member of each tenant project, and medevac's service user."""

    def pw() -> str:
        return secrets.token_urlsafe(18)

    return [
        LabUser("admin", pw(), "admin", "admin"),
        LabUser("reader", pw(), "admin", "reader"),
        *(LabUser(f"member-{p}", pw(), p, "member") for p in PROJECTS),
        LabUser(SERVICE_USER, pw(), SERVICE_PROJECT, "service"),
    ]


def seed(
    auth_url: str,
    bootstrap_password: str,
    users: list[LabUser],
    catalog: dict[str, tuple[str, str]],
) -> dict[str, str]:
    """Create the projects, users, role assignments and catalog entries (``catalog``:
    service type -> (service name, public URL)) in a Keystone fresh from bootstrap,
    whose admin still has ``bootstrap_password``; the admin gets its lab password.
    Returns the projects' ids by name."""
    import openstack

    conn = openstack.connect(
        auth_type="password",
        auth={
            "auth_url": auth_url,
            "username": "admin",
            "password": bootstrap_password,
            "project_name": "admin",
            "user_domain_id": "default",
            "project_domain_id": "default",
        },
        interface="public",
        region_name="RegionOne",
        # The catalog is what we are writing: go to Keystone for identity calls.
        identity_endpoint_override=auth_url,
    )
    try:
        ident: Any = conn.identity
        projects = {p.name: p for p in ident.projects()}
        for name in sorted({u.project for u in users} - set(projects)):
            projects[name] = ident.create_project(name=name, domain_id="default")
        roles = {r.name: r for r in ident.roles()}
        for u in users:
            if u.name == "admin":
                continue
            project = projects[u.project]
            user = ident.create_user(
                name=u.name, password=u.password, domain_id="default", default_project_id=project.id
            )
            ident.assign_project_role_to_user(project, user, roles[u.role])
        for service_type, (name, url) in catalog.items():
            service = ident.create_service(name=name, type=service_type)
            ident.create_endpoint(
                service_id=service.id, interface="public", region_id="RegionOne", url=url
            )
        # Last: a new password ends the admin's tokens, this connection's too.
        admin = next(u for u in users if u.name == "admin")
        ident.update_user(ident.find_user("admin"), password=admin.password)
        _await_fresh_admin_token(auth_url, admin)
        return {name: str(p.id) for name, p in projects.items()}
    finally:
        conn.close()


def _await_fresh_admin_token(auth_url: str, admin: LabUser, within: float = 10.0) -> None:
    """Return once a token the admin gets now is valid: the revocation a password
    change makes counts in whole seconds, so a token issued in the same second as
    the change is refused too."""
    import httpx
    from keystoneauth1 import session
    from keystoneauth1.identity import v3

    deadline = time.monotonic() + within
    while True:
        auth = v3.Password(
            auth_url=auth_url,
            username=admin.name,
            password=admin.password,
            project_name=admin.project,
            user_domain_id="default",
            project_domain_id="default",
        )
        token = str(session.Session(auth=auth).get_token())
        r = httpx.get(
            auth_url + "/auth/tokens",
            headers={"X-Auth-Token": token, "X-Subject-Token": token},
            timeout=10,
        )
        if r.status_code == 200:
            return
        if time.monotonic() > deadline:
            raise LabError(f"a new admin token is still refused by Keystone ({r.status_code})")
        time.sleep(0.2)
