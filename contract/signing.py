"""Signed model versions: an OpenSSF model-signing signature over every file of a version.

Where the signature lives: `REPO/NAME/VERSION/model.sig` (model-signing's own default name), a
Sigstore bundle whose signed payload lists the sha256 of every other file of the version
directory (manifest.json, the artifacts, card.md, anything else; subdirectories included).
`model.sig` is the one path left out of its own coverage, and that exclusion is itself part of the
signed payload (model-signing records `ignore_paths` in it). Git paths (.git/, .gitignore, ...),
which model-signing skips by default, are covered here: a file added under any name is a
difference. Symlinks are refused (signing and verifying).

Key-based and offline: an elliptic-curve private key signs (`monoserve export --sign-key`,
`monoserve sign`), the service verifies with the public keys (or a certificate chain) in
MONOSERVE_TRUSTED_KEYS; no transparency log, no network.

Bounded: before model-signing reads a byte, the version directory is walked without following
links and refused when it holds anything but regular files and directories, more than
MAX_FILES files, a file over `max_file_bytes` (MONOSERVE_MAX_ARTIFACT_BYTES) or a signature over
MAX_SIGNATURE_BYTES. model-signing then hashes each file in 1 MiB blocks (its SimpleFileHasher):
no file is read whole, except the signature bundle, whose size is capped first.

`model_signing` is imported on first use: importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

SIGNATURE_NAME = "model.sig"
MAX_SIGNATURE_BYTES = 1 << 20  # a bundle over a handful of file digests is a few KiB
MAX_FILES = 256  # as service.repository.registry.MAX_FINGERPRINT_FILES
HASH_ALGORITHM = "sha256"


class SignatureError(ValueError):
    """The version is unsigned, signed by no trusted key, or its files differ from what was signed."""

    def __init__(self, message: str, problems: list[str] | None = None, reason: str = "invalid"):
        super().__init__(message)
        self.problems = problems or [message]
        self.reason = reason  # "unsigned", "untrusted", "files-differ", "invalid"


def _hashing_config():
    from model_signing import hashing

    return (hashing.Config()
            .use_file_serialization(hashing_algorithm=HASH_ALGORITHM, allow_symlinks=False, ignore_paths=[SIGNATURE_NAME])
            .set_ignored_paths(paths=[SIGNATURE_NAME], ignore_git_paths=False))


def public_key_fingerprint(pem: bytes) -> str:
    """sha256 of the key's PEM SubjectPublicKeyInfo, as model-signing computes the bundle's key
    `hint`: the same fingerprint names the signer of a bundle and a trusted key."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(pem)
    normalized = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(normalized).hexdigest()


@dataclass(frozen=True)
class TrustedKeys:
    """What MONOSERVE_TRUSTED_KEYS names: PEM public keys, and/or PEM certificates (one chain)."""

    public_keys: tuple[Path, ...] = ()
    certificates: tuple[Path, ...] = ()

    @classmethod
    def from_paths(cls, paths: Iterable[str | Path]) -> "TrustedKeys":
        keys, certs = [], []
        for raw in paths:
            path = Path(raw)
            try:
                text = path.read_bytes()[:1 << 20]
            except OSError as exc:
                raise ValueError(f"trusted key {path}: cannot read it ({exc.strerror})") from exc
            if b"-----BEGIN CERTIFICATE-----" in text:
                certs.append(path)
            elif b"-----BEGIN PUBLIC KEY-----" in text:
                public_key_fingerprint(text)  # a clear error now rather than at the first version
                keys.append(path)
            else:
                raise ValueError(f"trusted key {path}: neither a PEM public key nor a PEM certificate "
                                 "(a private key is never needed to verify)")
        if not keys and not certs:
            raise ValueError("no trusted keys given")
        return cls(tuple(keys), tuple(certs))

    @classmethod
    def from_setting(cls, value: str | None) -> "TrustedKeys | None":
        """MONOSERVE_TRUSTED_KEYS: paths separated by commas (None or blank: no signature check)."""
        paths = [part.strip() for part in (value or "").split(",") if part.strip()]
        return cls.from_paths(paths) if paths else None

    def describe(self) -> list[str]:
        return [f"key {p}" for p in self.public_keys] + [f"certificate {p}" for p in self.certificates]


def check_bounds(version_dir: Path, max_file_bytes: int) -> int:
    """Walk the version directory without following links; the number of files covered. Refuses
    what model-signing must not be asked to read (a FIFO would block it, a huge file take long)."""
    from contract.walk import WalkLimits, WalkRefused, bounded_walk

    problems: list[str] = []
    count = 0
    try:
        for relative, st in bounded_walk(version_dir, WalkLimits(max_files=MAX_FILES)):
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append(f"{relative}: not a regular file (symlink, FIFO or device)")
                continue
            count += 1
            limit = MAX_SIGNATURE_BYTES if relative == SIGNATURE_NAME else max_file_bytes
            if st.st_size > limit:
                problems.append(f"{relative}: {st.st_size} bytes, over the limit of {limit} bytes")
    except WalkRefused as exc:  # the folder is past the walk's limits (depth, folders, files, entries)
        raise SignatureError(str(exc), reason="invalid") from None
    if problems:
        raise SignatureError("; ".join(problems), problems)
    return count


def sign_version(version_dir: str | Path, private_key: str | Path, password: str | None = None,
                 certificate: str | Path | None = None, chain: Iterable[str | Path] = ()) -> Path:
    """Write VERSION/model.sig over every other file of the version; returns its path.

    With `certificate` (the signing certificate of `private_key`, PEM) and `chain` (intermediate
    certificates), the bundle carries the certificate chain, verified against a trusted CA
    (MONOSERVE_TRUSTED_KEYS naming certificates); else it names the public key only.
    The bundle is written beside the model directory first and renamed into place, so a reader
    never sees half a signature."""
    from model_signing import signing

    version_dir = Path(version_dir)
    if not version_dir.is_dir():
        raise ValueError(f"{version_dir} is not a directory")
    check_bounds(version_dir, max_file_bytes=1 << 62)
    target = version_dir / SIGNATURE_NAME
    handle, temporary = tempfile.mkstemp(prefix=".sig-", dir=version_dir.parent)
    os.close(handle)
    try:
        config = signing.Config().set_hashing_config(_hashing_config())
        if certificate is not None:
            if password is not None:
                raise ValueError("an encrypted private key cannot sign with a certificate here: decrypt it first")
            # model-signing 1.1.1 cannot load an empty chain: the leaf stands in (a repeated
            # certificate adds nothing to the path the verifier builds)
            intermediates = [Path(c) for c in chain] or [Path(certificate)]
            config.use_certificate_signer(private_key=Path(private_key), signing_certificate=Path(certificate),
                                          certificate_chain=intermediates)
        else:
            config.use_elliptic_key_signer(private_key=Path(private_key), password=password)
        config.sign(version_dir, temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return target


def _bundle(signature_path: Path) -> dict[str, Any]:
    """model.sig parsed once per check ({} when it is not a JSON object): only for the messages and the
    list of differences; model-signing judges the bundle itself."""
    import json

    try:
        bundle = json.loads(signature_path.read_bytes())
    except Exception:  # noqa: BLE001 - a malformed bundle is the verifier's refusal, never ours
        return {}
    return bundle if isinstance(bundle, dict) else {}


def _differences(version_dir: Path, bundle: dict[str, Any]) -> list[str]:
    """What differs between the files now and the signed list (called once the signature itself
    was verified, so the payload read here is the signer's): added, changed, removed files."""
    import base64
    import json

    from contract.files import sha256_file

    try:
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        signed = {item["name"]: item["digest"] for item in statement["predicate"]["resources"]}
    except Exception:  # noqa: BLE001 - the verifier accepted it; only the details are unavailable
        return ["the files differ from the signed list"]
    present = {}
    for path in sorted(version_dir.rglob("*")):
        relative = path.relative_to(version_dir).as_posix()
        if path.is_file() and not path.is_symlink() and relative != SIGNATURE_NAME:
            present[relative] = path
    found = [f"added (not signed): {name}" for name in sorted(set(present) - set(signed))]
    found += [f"removed (signed, now missing): {name}" for name in sorted(set(signed) - set(present))]
    found += [f"changed: {name}" for name in sorted(set(signed) & set(present))
              if sha256_file(present[name]) != signed[name]]
    return found or ["the files changed while they were checked"]


def _key_hint(bundle: dict[str, Any]) -> str | None:
    """The public-key hint the bundle carries (the signer's key fingerprint), for the message."""
    try:
        return bundle["verificationMaterial"]["publicKey"]["hint"]
    except Exception:  # noqa: BLE001 - only for a message; the verifier judges the bundle
        return None


def _certificate_subject(bundle: dict[str, Any]) -> str | None:
    """The signing certificate's subject, when the bundle carries a certificate chain."""
    import base64

    from cryptography import x509

    try:
        raw = bundle["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"]
        return x509.load_der_x509_certificate(base64.b64decode(raw)).subject.rfc4514_string()
    except Exception:  # noqa: BLE001 - only for the report
        return None


def verify_version(version_dir: str | Path, trusted: TrustedKeys, max_file_bytes: int) -> dict[str, Any]:
    """Check VERSION/model.sig against the trusted keys and every file of the version.

    Returns {"signer", "files"} for the accepted signer; raises SignatureError (reason
    "unsigned", "untrusted", "files-differ" or "invalid") naming what is wrong."""
    from model_signing import verifying

    version_dir = Path(version_dir)
    signature = version_dir / SIGNATURE_NAME
    try:
        st = os.lstat(signature)
    except FileNotFoundError:
        raise SignatureError(f"unsigned: no {SIGNATURE_NAME} in the version directory, and trusted keys are configured",
                             reason="unsigned") from None
    if not stat.S_ISREG(st.st_mode):
        raise SignatureError(f"{SIGNATURE_NAME} is not a regular file", reason="invalid")
    files = check_bounds(version_dir, max_file_bytes) - 1
    attempts: list[tuple[str, Any]] = []
    for key in trusted.public_keys:
        fingerprint = public_key_fingerprint(key.read_bytes())
        attempts.append((f"key {key} (sha256:{fingerprint[:16]})",
                         verifying.Config().use_elliptic_key_verifier(public_key=key)))
    if trusted.certificates:
        attempts.append((f"certificate chain {', '.join(str(c) for c in trusted.certificates)}",
                         verifying.Config().use_certificate_verifier(certificate_chain=trusted.certificates)))
    rejections = []
    bundle = _bundle(signature)
    for signer, config in attempts:
        config.set_hashing_config(_hashing_config())
        try:
            config.verify(version_dir, signature)
        except ValueError as exc:
            message = str(exc)
            if message.startswith("Signature mismatch"):  # the signer is trusted; the files are not what it signed
                problems = _differences(version_dir, bundle)
                raise SignatureError(f"files differ from what {signer} signed: " + "; ".join(problems), problems,
                                     reason="files-differ") from None
            rejections.append(f"{signer}: {message.strip()}")
        except Exception as exc:  # noqa: BLE001 - a malformed bundle is a refusal, never a crash
            rejections.append(f"{signer}: {type(exc).__name__}: {str(exc).strip()[:200]}")
        else:
            if signer.startswith("certificate chain"):
                subject = _certificate_subject(bundle)
                signer = f"certificate {subject!r} (chain {', '.join(str(c) for c in trusted.certificates)})"
            return {"signer": signer, "files": files}
    hint, subject = _key_hint(bundle), _certificate_subject(bundle)
    by = f" (signed by key sha256:{hint[:16]})" if hint else (f" (signed by certificate {subject!r})" if subject else "")
    raise SignatureError(f"signed by no trusted key{by}", rejections, reason="untrusted")


def signature_hint(version_dir: str | Path) -> str | None:
    """'signed (key sha256:...)' or None: what /models shows when no trusted keys are configured."""
    path = Path(version_dir) / SIGNATURE_NAME
    if not path.is_file() or path.stat().st_size > MAX_SIGNATURE_BYTES:
        return None
    bundle = _bundle(path)
    hint = _key_hint(bundle)
    if hint:
        return f"key sha256:{hint[:16]}"
    subject = _certificate_subject(bundle)
    return f"certificate {subject!r}" if subject else "unknown signer"


__all__ = ["SIGNATURE_NAME", "SignatureError", "TrustedKeys", "sign_version", "verify_version", "check_bounds",
           "public_key_fingerprint", "signature_hint"]
