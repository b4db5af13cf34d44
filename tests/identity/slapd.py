"""A throwaway OpenLDAP server (Debian's slapd) for the identity tests.

`Slapd.start()` writes a slapd.conf, loads the directory with `slapadd` and runs slapd on two
free loopback ports: LDAPS and plain LDAP (for StartTLS), with a server certificate from a
`trustme` test CA. The directory (dc=example,dc=com) holds:

- ou=people: alice (IT staff), bob (sales), dave (disabled: employeeType=disabled), erin (no
  group), "weird" (a uid that is not a valid callgate handle);
- ou=services: the service account callgate searches with;
- ou=groups: groupOfNames, nested: voice-admins ⊃ it-staff ⊃ alice; everyone ⊃ {it-staff, sales};
  sales ⊃ bob; a loop (loop-a ⊃ loop-b ⊃ loop-a) that must not hang the resolver.

Changes while it runs go through `ldapmodify` (ldap-utils), as an administrator would make them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from tests.ports import free_port as _free_port

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
LDAPMODIFY = "/usr/bin/ldapmodify"
BASE = "dc=example,dc=com"
ROOT_DN = f"cn=root,{BASE}"
ROOT_PW = "root-secret-test"
SERVICE_DN = f"cn=callgate-svc,ou=services,{BASE}"
SERVICE_PW = "svc-secret-test"
PASSWORDS = {
    "alice": "alice-dir-pw",
    "bob": "bob-dir-pw",
    "dave": "dave-dir-pw",
    "erin": "erin-dir-pw",
    "Weird Name": "weird-dir-pw",
    "frank": "frank-dir-pw",  # only for the password-guessing test
}


def missing() -> str | None:
    """Why the tests cannot run here (None when slapd and ldap-utils are installed)."""
    for path in (SLAPD, SLAPADD, LDAPMODIFY):
        if not os.access(path, os.X_OK):
            return f"{path} missing: apt-get install slapd ldap-utils (scripts/test does)"
    return None


def ssha(password: str) -> str:
    """userPassword in OpenLDAP's {SSHA} form: SHA-1 of password+salt, then the salt."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def user_dn(uid: str) -> str:
    return f"uid={uid},ou=people,{BASE}"


def group_dn(cn: str) -> str:
    return f"cn={cn},ou=groups,{BASE}"


def _person(uid: str, name: str, mail: str, extra: str = "") -> str:
    return (
        f"dn: {user_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {name}\n"
        f"sn: {name.split()[-1]}\ndisplayName: {name}\nmail: {mail}\n"
        f"userPassword: {ssha(PASSWORDS[uid])}\n{extra}\n"
    )


def _group(cn: str, *members: str) -> str:
    lines = "".join(f"member: {m}\n" for m in members)
    return f"dn: {group_dn(cn)}\nobjectClass: groupOfNames\ncn: {cn}\n{lines}\n"


def directory_ldif() -> str:
    return "".join(
        [
            f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n",
            f"dn: ou=people,{BASE}\nobjectClass: organizationalUnit\nou: people\n\n",
            f"dn: ou=groups,{BASE}\nobjectClass: organizationalUnit\nou: groups\n\n",
            f"dn: ou=services,{BASE}\nobjectClass: organizationalUnit\nou: services\n\n",
            f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
            f"cn: callgate-svc\nuserPassword: {ssha(SERVICE_PW)}\n\n",
            _person("alice", "Alice Martin", "alice@example.com"),
            _person("bob", "Bob Stone", "bob@example.com"),
            _person("dave", "Dave Left", "dave@example.com", "employeeType: disabled\n"),
            _person("erin", "Erin Solo", "erin@example.com"),
            _person("Weird Name", "Weird Name", "weird@example.com"),
            _person("frank", "Frank Guess", "frank@example.com"),
            _group("it-staff", user_dn("alice")),
            _group("voice-admins", group_dn("it-staff")),
            _group("sales", user_dn("bob"), user_dn("dave")),
            _group("everyone", group_dn("it-staff"), group_dn("sales")),
            _group("loop-a", group_dn("loop-b"), user_dn("bob")),
            _group("loop-b", group_dn("loop-a")),
        ]
    )


def slapd_conf(root: Path, ca: Path, cert: Path, key: Path) -> str:
    return f"""
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile {root}/slapd.pid
argsfile {root}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
database mdb
maxsize 10485760
suffix "{BASE}"
rootdn "{ROOT_DN}"
rootpw {ssha(ROOT_PW)}
directory {root}/db
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
"""


@dataclass
class Slapd:
    root: Path
    ca: trustme.CA = field(default_factory=trustme.CA)
    ldaps_port: int = 0
    ldap_port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.ldaps_port}"

    @property
    def ldap_url(self) -> str:
        return f"ldap://127.0.0.1:{self.ldap_port}"

    def start(self) -> Slapd:
        (self.root / "db").mkdir(parents=True)
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        cert, key = self.root / "server.pem", self.root / "server.key"
        server.cert_chain_pems[0].write_to_path(str(cert))
        server.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        conf = self.root / "slapd.conf"
        conf.write_text(slapd_conf(self.root, self.ca_file, cert, key))
        ldif = self.root / "data.ldif"
        ldif.write_text(directory_ldif())
        subprocess.run([SLAPADD, "-f", str(conf), "-l", str(ldif)], check=True, capture_output=True)
        self.ldaps_port, self.ldap_port = _free_port(), _free_port()
        self._launch()
        return self

    def _launch(self) -> None:
        """slapd on our ports with our slapd.conf, until it listens on both."""
        urls = f"{self.ldaps_url}/ {self.ldap_url}/"
        # -d 0: stay in the foreground (our child), log nothing.
        self.process = subprocess.Popen(
            [SLAPD, "-f", str(self.root / "slapd.conf"), "-h", urls, "-d", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._wait_listening()

    def _wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"slapd exited {self.process.returncode}: {err}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.ldaps_port), timeout=1),
                socket.create_connection(("127.0.0.1", self.ldap_port), timeout=1),
            ):
                return
            time.sleep(0.1)
        raise RuntimeError("slapd did not start listening")

    def modify(self, ldif: str) -> None:
        """Apply an LDIF change as the directory's administrator, with ldapmodify over LDAPS."""
        env = {**os.environ, "LDAPTLS_CACERT": str(self.ca_file)}
        subprocess.run(
            [LDAPMODIFY, "-x", "-H", self.ldaps_url, "-D", ROOT_DN, "-w", ROOT_PW],
            input=ldif.encode(),
            env=env,
            check=True,
            capture_output=True,
            timeout=30,
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()

    def restart(self) -> None:
        """Start again on the same ports and data (after `stop`)."""
        self._launch()


def cleanup(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
