"""The lab's Keystone (``lab up --identity keystone``): its users, and the seeding of
its projects, users, roles and catalog through openstacksdk.

Every password is made for the lab when it starts and is a lab-only secret: the
lab's own files and output (lab.json, clouds.yaml, `lab env`) show them; medevac's
logs never do.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from typing import Any

from medevac.lab.layout import PROJECTS

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
        return {name: str(p.id) for name, p in projects.items()}
    finally:
        conn.close()
