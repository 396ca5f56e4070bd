"""Signed model versions (contract.signing, docs/threat-model.md): with trusted keys, a version is
proved only when VERSION/model.sig is a trusted key's signature over exactly its files; refusals
are reported like a failed proof while the previous version keeps serving."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from contract.manifest import Manifest
from contract.signing import SIGNATURE_NAME, TrustedKeys, public_key_fingerprint, sign_version, verify_version
from monoserve.cli import main as monoserve_main
from service.repository.prover import STEPS, prove_version
from service_fixtures import fresh_repo
from test_service_e2e import running_server


def make_key(directory: Path, name: str) -> tuple[Path, Path]:
    """An elliptic-curve key pair as PEM files: (private, public)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keys")
    return {"ours": make_key(directory, "ours"), "theirs": make_key(directory, "theirs")}


def staged_copy(repo: Path, stage: Path, name: str, source: int, target: int) -> Path:
    """A copy of REPO/NAME/SOURCE as version TARGET, outside the repository (published by rename)."""
    version_dir = stage / str(target)
    shutil.copytree(repo / name / str(source), version_dir)
    (version_dir / SIGNATURE_NAME).unlink(missing_ok=True)
    manifest = Manifest.read(version_dir)
    manifest.version = target
    (version_dir / "manifest.json").write_text(manifest.to_json())
    return version_dir


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def prove(version_dir: Path, trusted: TrustedKeys | None):
    return prove_version(version_dir, trusted_keys=trusted, max_file_bytes=64 * 1024 * 1024)[0]


def test_signed_version_is_proved_and_reports_its_signer(tmp_path, keys):
    repo = fresh_repo(tmp_path, models=("smoother",))
    version_dir = repo / "smoother" / "1"
    assert (version_dir / "card.md").is_file()  # the card is among the covered files
    private, public = keys["ours"]
    sign_version(version_dir, private)
    report = prove(version_dir, TrustedKeys.from_paths([public]))
    assert report.ok, report.render()
    assert [s.step for s in report.steps] == ["signature", *STEPS]
    fingerprint = public_key_fingerprint(public.read_bytes())
    assert report.signature["status"] == "verified" and fingerprint[:16] in report.signature["signer"]
    covered = len([p for p in version_dir.rglob("*") if p.is_file()]) - 1
    assert report.signature["files"] == covered and covered >= 4  # manifest, artifacts, card files
    # without trusted keys nothing is checked, and the report says so
    unchecked = prove(version_dir, None)
    assert unchecked.ok and [s.step for s in unchecked.steps] == list(STEPS)
    assert unchecked.signature["status"].startswith("signed, not checked") and fingerprint[:16] in unchecked.signature["signer"]
    (version_dir / SIGNATURE_NAME).unlink()
    assert prove(version_dir, None).signature == {"status": "unsigned"}


@pytest.mark.parametrize("case", ["unsigned", "foreign", "tampered-card", "tampered-manifest", "tampered-onnx",
                                  "added", "added-git", "removed", "removed-card"])
def test_each_kind_of_bad_version_is_refused_before_the_proof(tmp_path, keys, case):
    repo = fresh_repo(tmp_path, models=("smoother",))
    version_dir = repo / "smoother" / "1"
    private, public = keys["ours"]
    sign_version(version_dir, keys["theirs"][0] if case == "foreign" else private)
    if case == "unsigned":
        (version_dir / SIGNATURE_NAME).unlink()
    elif case.startswith("tampered-"):
        flip_one_byte(version_dir / {"card": "card.md", "manifest": "manifest.json", "onnx": "model.onnx"}[case[9:]])
    elif case == "added":
        (version_dir / "notes.txt").write_text("added after signing")
    elif case == "added-git":  # model-signing skips git paths by default; here they are covered
        (version_dir / ".gitignore").write_text("*")
    elif case == "removed":
        (version_dir / "model.pt2").unlink()
    elif case == "removed-card":
        (version_dir / "card.md").unlink()
    report = prove(version_dir, TrustedKeys.from_paths([public]))
    assert not report.ok
    signature_step = report.steps[0]
    assert signature_step.step == "signature" and signature_step.status == "failed"
    assert all(s.status == "skipped" for s in report.steps[1:])  # nothing of the version was parsed
    expected = {"unsigned": ("unsigned", "no model.sig"), "foreign": ("untrusted", "signed by no trusted key"),
                "tampered-card": ("files-differ", "changed: card.md"),
                "tampered-manifest": ("files-differ", "changed: manifest.json"),
                "tampered-onnx": ("files-differ", "changed: model.onnx"),
                "added": ("files-differ", "added (not signed): notes.txt"),
                "added-git": ("files-differ", "added (not signed): .gitignore"),
                "removed": ("files-differ", "removed (signed, now missing): model.pt2"),
                "removed-card": ("files-differ", "removed (signed, now missing): card.md")}[case]
    assert report.signature["status"] == "refused" and report.signature["reason"] == expected[0]
    assert expected[1] in signature_step.message, signature_step.message
    assert report.reason.startswith("signature: ")


def test_bounds_come_before_any_hashing(tmp_path, keys):
    repo = fresh_repo(tmp_path, models=("smoother",))
    version_dir = repo / "smoother" / "1"
    private, public = keys["ours"]
    sign_version(version_dir, private)
    trusted = TrustedKeys.from_paths([public])
    onnx_size = (version_dir / "model.onnx").stat().st_size
    with pytest.raises(ValueError, match=f"model.onnx: {onnx_size} bytes, over the limit of 1000 bytes"):
        verify_version(version_dir, trusted, max_file_bytes=1000)
    os.mkfifo(version_dir / "pipe")  # model-signing would block reading it: refused before that
    with pytest.raises(ValueError, match="pipe: not a regular file"):
        verify_version(version_dir, trusted, max_file_bytes=1 << 30)
    (version_dir / "pipe").unlink()
    (version_dir / SIGNATURE_NAME).write_bytes(b"{" + b" " * (2 << 20) + b"}")
    with pytest.raises(ValueError, match="model.sig: .* over the limit"):
        verify_version(version_dir, trusted, max_file_bytes=1 << 30)
    (version_dir / SIGNATURE_NAME).write_bytes(b"not a bundle")
    report = prove(version_dir, trusted)
    assert report.signature["status"] == "refused" and not report.ok  # a malformed bundle: refused, no crash


def test_trusted_keys_setting_is_checked(tmp_path, keys):
    private, public = keys["ours"]
    assert TrustedKeys.from_setting(None) is None and TrustedKeys.from_setting(" , ") is None
    assert TrustedKeys.from_setting(f"{public}, {keys['theirs'][1]}").public_keys == (public, keys["theirs"][1])
    with pytest.raises(ValueError, match="neither a PEM public key nor a PEM certificate"):
        TrustedKeys.from_paths([private])  # a private key is refused: it never belongs on the server
    with pytest.raises(ValueError, match="cannot read it"):
        TrustedKeys.from_paths([tmp_path / "missing.pub"])


def test_sign_and_verify_commands(tmp_path, keys, capsys):
    repo = fresh_repo(tmp_path, models=("smoother",))
    version_dir = repo / "smoother" / "1"
    private, public = keys["ours"]
    assert monoserve_main(["sign", str(version_dir), "--key", str(private)]) == 0
    assert capsys.readouterr().out.strip() == str(version_dir / SIGNATURE_NAME)
    assert monoserve_main(["verify", str(version_dir), "--trusted-key", str(public)]) == 0
    out = capsys.readouterr().out
    assert "ok      signature" in out and "PASSED" in out
    (version_dir / "card.md").write_text((version_dir / "card.md").read_text() + "\nedited\n")
    assert monoserve_main(["verify", str(version_dir), "--trusted-key", str(public)]) == 1
    out = capsys.readouterr().out
    assert "changed: card.md" in out and "FAILED at signature" in out
    assert monoserve_main(["verify", str(version_dir)]) == 0  # no keys given: the card is not covered by anything
    assert "signed, not checked" in capsys.readouterr().out
    assert monoserve_main(["sign", str(tmp_path), "--key", str(private)]) == 2  # not a version directory


def test_server_serves_signed_versions_and_refuses_every_bad_one(tmp_path, keys):
    """A real server with MONOSERVE_TRUSTED_KEYS: each bad version published is refused like a failed
    proof (log, /models/{name}, metrics) while the signed version keeps serving; a newly signed one serves."""
    repo = fresh_repo(tmp_path, models=("smoother",))
    stage = tmp_path / "stage"
    stage.mkdir()
    private, public = keys["ours"]
    sign_version(repo / "smoother" / "1", private)
    cases = {2: "unsigned", 3: "foreign", 4: "tampered card", 5: "added", 6: "removed"}
    env = {"MONOSERVE_TRUSTED_KEYS": str(public), "MONOSERVE_POLL_INTERVAL_S": "0.2"}
    signal = {"signal": [1.0, 2.0, 3.0, 4.0, 5.0] * 4}
    with running_server(repo, "--workers", "1", env=env) as server:
        def detail() -> dict:
            return httpx.get(f"{server.base}/models/smoother").json()

        first = detail()
        assert first["serving_version"] == 1 and first["signatures"] == {"1": "verified"}
        assert "sha256:" in first["versions"][0]["report"]["signature"]["signer"]
        for number, case in cases.items():
            version_dir = staged_copy(repo, stage, "smoother", 1, number)
            if case != "unsigned":
                sign_version(version_dir, keys["theirs"][0] if case == "foreign" else private)
            if case == "tampered card":
                flip_one_byte(version_dir / "card.md")
            elif case == "added":
                (version_dir / "extra.bin").write_bytes(b"\0")
            elif case == "removed":
                (version_dir / "model.pt2").unlink()
            os.rename(version_dir, repo / "smoother" / str(number))
            deadline = time.monotonic() + 60
            while str(number) not in detail()["signatures"]:
                assert time.monotonic() < deadline, f"version {number} was never proved"
                time.sleep(0.1)
            state = detail()
            assert state["signatures"][str(number)] == "refused", (case, state)
            assert state["serving_version"] == 1, case  # the previous version keeps serving
            answer = httpx.post(f"{server.base}/smooth", json=signal)
            assert answer.status_code == 200 and answer.json()["version"] == 1
        refused = {v["version"]: v["report"] for v in detail()["versions"] if v["state"] == "refused"}
        assert sorted(refused) == sorted(cases)
        assert {n: refused[n]["signature"]["reason"] for n in cases} == {
            2: "unsigned", 3: "untrusted", 4: "files-differ", 5: "files-differ", 6: "files-differ"}
        metrics = httpx.get(f"{server.base}/metrics").text
        line = next(l for l in metrics.splitlines()
                    if l.startswith("monoserve_load_refusals_total") and 'step="signature"' in l)
        assert float(line.rsplit(" ", 1)[1]) == len(cases)
        good = staged_copy(repo, stage, "smoother", 1, 7)
        sign_version(good, private)
        os.rename(good, repo / "smoother" / "7")
        deadline = time.monotonic() + 60
        while detail()["serving_version"] != 7:
            assert time.monotonic() < deadline, "the signed version 7 did not serve"
            time.sleep(0.1)
        assert httpx.post(f"{server.base}/smooth", json=signal).json()["version"] == 7
    for number in cases:
        assert f"refused smoother/{number}: signature:" in server.output


def test_export_with_sign_key_publishes_a_signed_version(tmp_path, keys, capsys):
    import torch

    from models.checkpoint import save_checkpoint
    from models.smoother import MonotoneSmoother, SmootherConfig

    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "smoother.ckpt", MonotoneSmoother(SmootherConfig(kernel_size=5)), metrics={})
    repo = tmp_path / "repo"
    private, public = keys["ours"]
    argv = ["export", str(checkpoint), "--repo", str(repo), "--name", "smoother", "--formats", "onnx"]
    assert monoserve_main([*argv, "--sign-key", str(tmp_path / "missing.key")]) == 2  # checked before any work
    assert not (repo / "smoother").exists() or not any((repo / "smoother").iterdir())
    assert monoserve_main([*argv, "--sign-key", str(private)]) == 0
    version_dir = repo / "smoother" / "1"
    assert (version_dir / SIGNATURE_NAME).is_file()
    report = prove(version_dir, TrustedKeys.from_paths([public]))
    assert report.ok and report.signature["status"] == "verified", report.render()
    assert report.signature["files"] == len([p for p in version_dir.iterdir() if p.name != SIGNATURE_NAME])
    assert not [p for p in (repo / "smoother").iterdir() if p.name != "1"]  # no temporary left behind
    capsys.readouterr()


def make_ca(directory: Path, name: str):
    """A self-signed CA: (its key, its certificate path)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    path = directory / f"{name}-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_signing_cert(directory: Path, name: str, ca_key, ca_cert) -> tuple[Path, Path]:
    """A signing key and its certificate issued by the CA: (private key path, certificate path)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    private, _ = make_key(directory, name)
    key = serialization.load_pem_private_key(private.read_bytes(), None)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} publisher")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    path = directory / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return private, path


def test_certificate_chain_as_trust_root(tmp_path, capsys):
    """MONOSERVE_TRUSTED_KEYS naming a CA certificate: versions signed with a certificate it issued
    serve; a certificate from another CA, or a changed file, is refused."""
    repo = fresh_repo(tmp_path, models=("smoother",))
    version_dir = repo / "smoother" / "1"
    ca_key, ca_cert, ca_path = make_ca(tmp_path, "ours")
    other_key, other_cert, _ = make_ca(tmp_path, "other")
    private, certificate = make_signing_cert(tmp_path, "alice", ca_key, ca_cert)
    trusted = TrustedKeys.from_paths([ca_path])
    assert trusted.certificates == (ca_path,) and trusted.public_keys == ()
    assert monoserve_main(["sign", str(version_dir), "--key", str(private), "--certificate", str(certificate)]) == 0
    capsys.readouterr()
    report = prove(version_dir, trusted)
    assert report.ok, report.render()
    assert "alice publisher" in report.signature["signer"]
    (version_dir / "card.md").write_text("rewritten")
    assert "changed: card.md" in prove(version_dir, trusted).steps[0].message
    rogue_key, rogue_cert = make_signing_cert(tmp_path, "mallory", other_key, other_cert)
    sign_version(version_dir, rogue_key, certificate=rogue_cert)
    refused = prove(version_dir, trusted)
    assert refused.signature["reason"] == "untrusted" and "mallory publisher" in refused.steps[0].message


def test_bring_your_own_model_exports_and_imports_are_signed_with_sign_key(tmp_path, keys, capsys):
    """`monoserve export --module ... --sign-key` and `monoserve import ... --sign-key` publish signed
    versions like a checkpoint's export (the key is never silently ignored)."""
    from pathlib import Path as _Path

    user_models = _Path(__file__).parent / "byom" / "user_models.py"
    private, public = keys["ours"]
    repo = tmp_path / "repo"
    spec = tmp_path / "fir.toml"
    spec.write_text('kind = "smoother"\nmode = "same"\nnormalized = true\n')
    argv = ["export", "--module", f"{user_models}:Fir1dCumsum", "--spec", str(spec), "--repo", str(repo),
            "--name", "fir"]
    assert monoserve_main([*argv, "--sign-key", str(tmp_path / "missing.key")]) == 2  # checked before any work
    assert monoserve_main([*argv, "--sign-key", str(private)]) == 0
    exported = repo / "fir" / "1"
    import onnx
    from test_byom import helper_classifier

    onnx.save(helper_classifier(), tmp_path / "helper.onnx")
    classifier_spec = tmp_path / "helper.toml"
    classifier_spec.write_text('kind = "classifier"\nfeatures = ["income", "debt", "age"]\nlabels = ["default"]\n'
                               'output = "logits"\nmonotone = "final"\n')
    assert monoserve_main(["import", str(tmp_path / "helper.onnx"), "--spec", str(classifier_spec), "--repo",
                           str(repo), "--name", "imported", "--sign-key", str(private)]) == 0
    for version_dir in (exported, repo / "imported" / "1"):
        assert (version_dir / SIGNATURE_NAME).is_file(), version_dir
        report = prove(version_dir, TrustedKeys.from_paths([public]))
        assert report.ok and report.signature["status"] == "verified", report.render()
    capsys.readouterr()
