"""The battery digital twin: a pure, seeded, deterministic numpy model of a site's UPS batteries."""

from simulators.twin.faults import DeviceCondition, Fault, FaultKind
from simulators.twin.params import TwinParams
from simulators.twin.site import SiteTwin
from simulators.twin.snapshot import (
    BlockInventory,
    SiteLayout,
    SiteSnapshot,
    StringStatus,
)

__all__ = [
    "BlockInventory",
    "DeviceCondition",
    "Fault",
    "FaultKind",
    "SiteLayout",
    "SiteSnapshot",
    "SiteTwin",
    "StringStatus",
    "TwinParams",
]
