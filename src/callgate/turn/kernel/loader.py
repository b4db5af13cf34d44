"""Build relay_tc.bpf.c with clang, load it with libbpf (ctypes) and attach it with tcx links.

Why this way (docs/relay-fast-path.md): libbpf is the kernel's own loader and ships as a shared
library in Debian (libbpf1, a dependency of iproute2), so Python needs no binding package; a tcx
link (Linux 6.6+) belongs to the file descriptor that made it, so the program leaves every device
when the relay exits, even when it is killed: no stale program keeps forwarding after the relay is
gone. The object is compiled from the source in the package by clang at the first start of each
version of it (cached in ~/.cache/callgate), so it always matches the code that writes its maps,
and a machine without clang just runs without the fast path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("relay_tc.bpf.c")
PROGRAM = "relay_channel_data"
_BPF_TCX_INGRESS = 46  # enum bpf_attach_type, Linux 6.6 (newer than Debian 12's headers)
_ARPHRD_ETHER, _ARPHRD_LOOPBACK = 1, 772
_SIOCGIFHWADDR = 0x8927  # linux/sockios.h
_LO_FORWARDING = "/proc/sys/net/ipv4/conf/lo/forwarding"
_BUILD_TIMEOUT_S = 60.0


class Unavailable(OSError):
    """The fast path cannot run here; the message says why (it goes in the start-up log, or
    stops the start with `fast_path = required`)."""


def build(out: Path) -> Path:
    """Compile the program into `out` (a private directory); Unavailable without clang."""
    clang = shutil.which("clang")
    if clang is None:
        raise Unavailable("clang is not installed (apt-get install clang libbpf-dev)")
    if not Path("/usr/include/bpf/bpf_helpers.h").exists():
        raise Unavailable("libbpf headers are missing (apt-get install libbpf-dev)")
    multiarch = subprocess.run(
        [clang, "-print-multiarch"], capture_output=True, text=True, check=False
    ).stdout.strip()
    target = out / "relay_tc.o"
    command = [clang, "-O2", "-g", "-target", "bpf", "-c", str(SOURCE), "-o", str(target)]
    if multiarch:
        command[1:1] = [f"-I/usr/include/{multiarch}"]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=_BUILD_TIMEOUT_S
    )
    if done.returncode != 0:
        raise Unavailable(f"clang could not build the program: {done.stderr.strip()[-400:]}")
    return target


def _libbpf() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise Unavailable(f"libbpf is not installed ({exc}; apt-get install libbpf1)") from exc
    vp, i, u32, u64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_uint64
    signatures: dict[str, tuple[type, list[type]]] = {
        "libbpf_set_print": (vp, [vp]),
        "bpf_object__open_file": (vp, [ctypes.c_char_p, vp]),
        "bpf_object__load": (i, [vp]),
        "bpf_object__close": (None, [vp]),  # type: ignore[dict-item]
        "bpf_object__find_program_by_name": (vp, [vp, ctypes.c_char_p]),
        "bpf_object__find_map_fd_by_name": (i, [vp, ctypes.c_char_p]),
        "bpf_program__fd": (i, [vp]),
        "bpf_link_create": (i, [i, i, u32, vp]),
        "bpf_map_update_elem": (i, [i, vp, vp, u64]),
        "bpf_map_lookup_elem": (i, [i, vp, vp]),
        "bpf_map_delete_elem": (i, [i, vp]),
    }
    for fn, (restype, argtypes) in signatures.items():
        function = getattr(lib, fn)
        function.restype = restype
        function.argtypes = argtypes
    lib.libbpf_set_print(None)  # its warnings would go to stderr; failures raise here instead
    return lib


def _error(what: str) -> Unavailable:
    code = ctypes.get_errno()
    return Unavailable(f"{what}: {os.strerror(code) if code else 'failed'}")


def devices() -> list[tuple[int, str]]:
    """The Ethernet-like devices of this network namespace, loopback included (the program parses
    an Ethernet header; tun or WireGuard devices carry bare IP and are left alone). The type comes
    from SIOCGIFHWADDR on a socket of this namespace (sysfs may show another namespace's)."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for index, name in socket.if_nameindex():
            request = struct.pack("16s16x", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFHWADDR, request)
            except OSError:
                continue
            kind = struct.unpack_from("H", answer, 16)[0]
            if kind in (_ARPHRD_ETHER, _ARPHRD_LOOPBACK):
                found.append((index, name))
    return found


class Map:
    """One BPF map, by fd: fixed-size keys and values as bytes."""

    def __init__(self, lib: ctypes.CDLL, fd: int, value_size: int) -> None:
        self._lib = lib
        self.fd = fd
        self.value_size = value_size

    def put(self, key: bytes, value: bytes) -> None:
        if self._lib.bpf_map_update_elem(self.fd, key, value, 0) != 0:
            raise OSError(ctypes.get_errno(), "bpf map update failed")

    def get(self, key: bytes) -> bytes | None:
        out = ctypes.create_string_buffer(self.value_size)
        if self._lib.bpf_map_lookup_elem(self.fd, key, out) != 0:
            return None
        return out.raw

    def delete(self, key: bytes) -> None:
        if self._lib.bpf_map_delete_elem(self.fd, key) != 0 and ctypes.get_errno() != errno.ENOENT:
            raise OSError(ctypes.get_errno(), "bpf map delete failed")


class Loaded:
    """The program loaded and attached at ingress of `devices`; `close` detaches it."""

    def __init__(self, lib: ctypes.CDLL, obj: int, links: list[int], names: list[str]) -> None:
        self._lib = lib
        self._obj: int | None = obj
        self._links = links
        self.devices = names
        self.to_peer = Map(lib, self._map_fd("to_peer"), 40)
        self.to_client = Map(lib, self._map_fd("to_client"), 40)
        self.stats = Map(lib, self._map_fd("stats"), 8 * _possible_cpus())

    def _map_fd(self, name: str) -> int:
        fd = int(self._lib.bpf_object__find_map_fd_by_name(self._obj, name.encode()))
        if fd < 0:
            raise Unavailable(f"the program has no map {name}")
        return fd

    def forwarded(self) -> tuple[int, int]:
        """Packets the program forwarded, and those it looked at and left to the stack."""
        totals = []
        for index in (0, 1):
            raw = self.stats.get(index.to_bytes(4, "little")) or b""
            totals.append(
                sum(int.from_bytes(raw[i : i + 8], "little") for i in range(0, len(raw), 8))
            )
        return totals[0], totals[1]

    def close(self) -> None:
        for link in self._links:
            os.close(link)
        self._links = []
        if self._obj is not None:
            self._lib.bpf_object__close(self._obj)
            self._obj = None


def _possible_cpus() -> int:
    """Per-CPU map values have one slot per possible CPU (/sys/devices/system/cpu/possible)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


def check_forwarding() -> None:
    """The program's route lookups (bpf_fib_lookup) name the loopback device, and the kernel
    answers them only when forwarding is on for the device named. lo's own switch is enough and
    harmless: lo never receives another host's datagram, so nothing else gets forwarded."""
    try:
        value = Path(_LO_FORWARDING).read_text().strip()
    except OSError as exc:
        raise Unavailable(f"cannot read {_LO_FORWARDING}: {exc}") from exc
    if value != "1":
        raise Unavailable(
            "net.ipv4.conf.lo.forwarding is 0 and the program's route lookups need it "
            "(sysctl -w net.ipv4.conf.lo.forwarding=1: lo never receives other hosts' datagrams, "
            "so this forwards nothing else)"
        )


def load(obj_path: Path, on: list[tuple[int, str]]) -> Loaded:
    """Load the object and attach it at ingress of each device; Unavailable says why not."""
    check_forwarding()
    lib = _libbpf()
    obj = lib.bpf_object__open_file(str(obj_path).encode(), None)
    if not obj:
        raise _error("libbpf could not open the program")
    links: list[int] = []
    try:
        if lib.bpf_object__load(obj) != 0:
            raise _error("the kernel refused the program (needs root: CAP_BPF and CAP_NET_ADMIN)")
        program = lib.bpf_object__find_program_by_name(obj, PROGRAM.encode())
        fd = lib.bpf_program__fd(program) if program else -1
        if fd < 0:
            raise Unavailable(f"the object has no program {PROGRAM}")
        for index, name in on:
            link = lib.bpf_link_create(fd, index, _BPF_TCX_INGRESS, None)
            if link < 0:
                raise _error(f"cannot attach to {name} at tc ingress (tcx needs Linux 6.6+)")
            links.append(link)
        return Loaded(lib, obj, links, [name for _, name in on])
    except BaseException:
        for link in links:
            os.close(link)
        lib.bpf_object__close(obj)
        raise


def compiled() -> Path:
    """The compiled object, built once per version of the source into a private cache
    (~/.cache/callgate, mode 0700) so restarts and worker processes do not each run clang."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "callgate"
    target = cache / f"relay_tc-{digest}.o"
    if target.exists():
        return target
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bpf-", dir=cache) as folder:
        os.replace(build(Path(folder)), target)  # atomic: a racing worker finds it whole
    return target
