"""Masakari's API v1 (instance HA), served under its own root, ``/instance-ha``: what
python-masakariclient, openstacksdk's ``instance_ha`` and masakari-monitors call."""

from medevac.api.masakari.app import masakari_app

__all__ = ["masakari_app"]
