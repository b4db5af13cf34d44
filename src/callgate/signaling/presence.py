"""Who is online: connected devices and the user each belongs to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    handle: str
    display_name: str
    relay_only: bool


class Presence:
    """Connected devices by id and by user handle (a user may have several)."""

    __slots__ = ("_by_id", "_by_user")

    def __init__(self) -> None:
        self._by_id: dict[str, Device] = {}
        self._by_user: dict[str, dict[str, Device]] = {}

    def add(self, device: Device) -> None:
        if device.device_id in self._by_id:
            raise ValueError(f"device {device.device_id!r} is already connected")
        self._by_id[device.device_id] = device
        self._by_user.setdefault(device.handle, {})[device.device_id] = device

    def remove(self, device_id: str) -> Device | None:
        device = self._by_id.pop(device_id, None)
        if device is not None:
            devices = self._by_user[device.handle]
            del devices[device_id]
            if not devices:
                del self._by_user[device.handle]
        return device

    def get(self, device_id: str) -> Device:
        try:
            return self._by_id[device_id]
        except KeyError:
            raise LookupError(f"device {device_id!r} is not connected") from None

    def devices_of(self, handle: str) -> list[Device]:
        return list(self._by_user.get(handle, {}).values())

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._by_id

    def __len__(self) -> int:
        return len(self._by_id)
