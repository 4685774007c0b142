"""Access on the store broker: per-device credentials, topic ACLs and TLS with a store CA.

``provision_store`` writes, for one store, everything its Mosquitto needs to admit only the
store's own devices and gateway:

* ``passwd``: one line per device and for the gateway, ``user:$7$<iterations>$<salt>$<hash>``
  (PBKDF2-HMAC-SHA512, Mosquitto 2's own format, which ``mosquitto_passwd`` writes and the broker
  checks). No clear password is kept in it.
* ``acl``: a device may only *write* under its own topic ``gondola/<store>/<kind>/<device>``
  (kind given, or any kind when unknown); the gateway alone *reads* the device topics and writes
  the store's alert topics; staff tablets read alerts. Anything else is refused by the broker
  (MQTT 5 clients see reason code 135 "not authorized"; 3.1.1 clients get no delivery).
* ``ca.crt`` / ``ca.key``: the store CA (EC P-256, 10 years); ``server.crt`` / ``server.key``:
  the broker's certificate for the names and addresses given (2 years).
* ``mosquitto.conf``: a TLS listener with the files above, ``allow_anonymous false``.
* ``secrets/<user>.password``: each device's and the gateway's password, mode 0600, for the
  provisioning channel (device enrolment) and the gateway's secret store
  (``GONDOLA_MQTT_PASSWORD_FILE`` or the secret ``mqtt-password``); never logged.

Re-running keeps existing passwords and certificates (devices stay enrolled) and adds new
devices; ``rotate=True`` issues new passwords for every user.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import os
import re
import secrets
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gondola.errors import ConfigError
from gondola.topics import DEVICE_KINDS, ROOT

__all__ = ["hash_password", "check_password", "provision_store", "StoreAccess", "acl_text", "main"]

#: PBKDF2 iterations Mosquitto 2 uses for ``$7$`` hashes (its default in mosquitto_passwd)
ITERATIONS = 101
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """Mosquitto 2's ``$7$`` password hash (PBKDF2-HMAC-SHA512, 12-byte salt, 64-byte hash)."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, dklen=64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_password(password: str, hashed: str) -> bool:
    try:
        _, tag, iterations, salt, digest = hashed.split("$")
    except ValueError:
        return False
    if tag != "7":
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations), dklen=64)
    return secrets.compare_digest(got, base64.b64decode(digest))


@dataclass
class StoreAccess:
    """What ``provision_store`` wrote (paths) and who may connect."""

    store_id: str
    folder: Path
    gateway_user: str
    devices: dict[str, str | None] = field(default_factory=dict)  # device id -> kind (None: any)

    @property
    def conf(self) -> Path:
        return self.folder / "mosquitto.conf"

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.crt"

    def password_file(self, user: str) -> Path:
        return self.folder / "secrets" / f"{user}.password"

    def password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()


def _check_user(name: str, what: str) -> None:
    if not _USER.match(name) or "/" in name or "+" in name or "#" in name:
        raise ConfigError(f"{what} {name!r}: letters, digits, '.', '_' and '-' only (no MQTT wildcards)")


def acl_text(store_id: str, gateway_user: str, devices: dict[str, str | None], *, staff_user: str | None = None) -> str:
    """The Mosquitto ACL file: each user's topics, nothing for anybody else."""
    base = f"{ROOT}/{store_id}"
    lines = ["# written by gondola edge provision; one block per user, nothing is allowed by default", ""]
    lines += [f"user {gateway_user}"]
    lines += [f"topic read {base}/{kind}/+" for kind in DEVICE_KINDS]
    lines += [f"topic write {base}/alerts/+", ""]
    if staff_user:
        lines += [f"user {staff_user}", f"topic read {base}/alerts/+", ""]
    for device, kind in sorted(devices.items()):
        lines += [f"user {device}", f"topic write {base}/{kind or '+'}/{device}", ""]
    return "\n".join(lines)


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _certificates(folder: Path, store_id: str, hosts: list[str]) -> None:
    """Store CA and broker certificate (kept when they exist)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if (folder / "ca.crt").exists() and (folder / "server.crt").exists():
        return
    now = datetime.now(timezone.utc) - timedelta(minutes=5)

    def pem_key(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gondola"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"Gondola store CA {store_id}")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + timedelta(days=730))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_secret(folder / "ca.key", pem_key(ca_key).decode())
    _write_secret(folder / "server.key", pem_key(key).decode())
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _share_with_broker(folder: Path, group: str | int | None) -> None:
    """Let the broker's group read what it needs (password hashes, ACL, server key): 0640."""
    import shutil

    os.chmod(folder, 0o750 if group is not None else 0o755)
    if group is not None:
        shutil.chown(folder, group=group)
    for name in ("passwd", "acl", "server.key", "server.crt", "ca.crt"):
        path = folder / name
        os.chmod(path, 0o640)
        if group is not None:
            shutil.chown(path, group=group)


def _default_broker_group() -> str | None:
    """``mosquitto`` when running as root on a host that has it (the broker drops to that user)."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import grp

    try:
        grp.getgrnam("mosquitto")
    except KeyError:
        return None
    return "mosquitto"


def _mosquitto_conf(folder: Path, port: int, bind: str) -> str:
    return (
        "# written by gondola edge provision: TLS only, no anonymous clients, per-user topics\n"
        f"listener {port} {bind}\n"
        f"cafile {folder / 'ca.crt'}\n"
        f"certfile {folder / 'server.crt'}\n"
        f"keyfile {folder / 'server.key'}\n"
        "tls_version tlsv1.2\n"
        "allow_anonymous false\n"
        f"password_file {folder / 'passwd'}\n"
        f"acl_file {folder / 'acl'}\n"
    )


def provision_store(store_id: str, devices: dict[str, str | None], folder: str | Path, *,
                    gateway_user: str | None = None, staff_user: str | None = "staff",
                    hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), port: int = 8883,
                    bind: str = "0.0.0.0", rotate: bool = False,
                    broker_group: str | int | None = "auto") -> StoreAccess:
    """Write the store broker's password file, ACL, certificates and config (see module doc).

    ``devices`` maps device id -> kind (``pos``, ``shelf``, ``handheld``; None allows any kind).
    ``broker_group`` gets read access to the broker's files (``"auto"``: ``mosquitto`` when run as
    root where that group exists; the eclipse-mosquitto image runs as gid 1883).

    Raises:
        ConfigError: a bad store id, device id or kind.
    """
    _check_user(store_id, "store id")
    gateway_user = gateway_user or f"gw-{store_id}"
    users = [gateway_user] + ([staff_user] if staff_user else []) + sorted(devices)
    for u in users:
        _check_user(u, "user")
    for d, kind in devices.items():
        if kind is not None and kind not in DEVICE_KINDS:
            raise ConfigError(f"device {d}: kind {kind!r} is not one of {', '.join(DEVICE_KINDS)}")
    if len(set(users)) != len(users):
        raise ConfigError("device ids must be unique and differ from the gateway and staff users")
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    access = StoreAccess(store_id, folder, gateway_user, dict(devices))
    lines = []
    for user in users:
        pw_file = access.password_file(user)
        if rotate or not pw_file.exists():
            _write_secret(pw_file, secrets.token_urlsafe(24) + "\n")
        lines.append(f"{user}:{hash_password(access.password(user))}")
    os.chmod(folder / "secrets", 0o700)
    _write_secret(folder / "passwd", "\n".join(lines) + "\n")
    (folder / "acl").write_text(acl_text(store_id, gateway_user, devices, staff_user=staff_user))
    _certificates(folder, store_id, list(hosts))
    _share_with_broker(folder, _default_broker_group() if broker_group == "auto" else broker_group)
    access.conf.write_text(_mosquitto_conf(folder, port, bind))
    return access


def _devices_arg(values: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for v in values:
        dev, _, kind = v.partition(":")
        out[dev] = kind or None
    return out


def main(argv: list[str]) -> int:
    """``gondola edge provision``: credentials, ACLs and TLS for one store's broker."""
    p = argparse.ArgumentParser(prog="gondola edge provision",
                                description="write a store broker's password file, topic ACLs, CA and TLS config")
    p.add_argument("--store-id", required=True)
    p.add_argument("--device", action="append", default=[], metavar="ID[:KIND]",
                   help="a device allowed to publish (repeatable); KIND pos|shelf|handheld pins its topic")
    p.add_argument("--devices", type=Path, default=None, metavar="FILE",
                   help="a file with one ID[:KIND] per line (the store's device register)")
    p.add_argument("--out", type=Path, required=True, help="folder for the broker's files (mount into Mosquitto)")
    p.add_argument("--host", action="append", default=None,
                   help="name or address clients use for the broker (repeatable; default localhost, 127.0.0.1)")
    p.add_argument("--port", type=int, default=8883)
    p.add_argument("--rotate", action="store_true", help="issue new passwords for every user")
    p.add_argument("--broker-group", default="auto",
                   help="group that may read the broker's files (default: mosquitto when run as root; 1883 for "
                        "the eclipse-mosquitto image)")
    args = p.parse_args(argv)
    entries = list(args.device)
    if args.devices is not None:
        if not args.devices.is_file():
            raise ConfigError(f"no device register at {args.devices}")
        entries += [ln.strip() for ln in args.devices.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not entries:
        raise ConfigError("no devices: give --device or --devices")
    access = provision_store(args.store_id, _devices_arg(entries), args.out, hosts=tuple(args.host or ("localhost", "127.0.0.1")),
                             port=args.port, rotate=args.rotate,
                             broker_group=int(args.broker_group) if args.broker_group.isdigit() else args.broker_group)
    print(f"store {args.store_id}: {len(access.devices)} devices, gateway user {access.gateway_user}; "
          f"broker config {access.conf}; passwords in {access.folder / 'secrets'} (mode 0600)", file=sys.stderr)
    return 0
