"""The one tail of every export path: prove, describe, sign and publish a staged version.

`export_checkpoint` (export.core) and the bring-your-own paths (export.byom: `export_module`,
`import_onnx`) each write their artifacts into a staging directory and build the manifest's facts;
from there they all end here, so the card, the manifest, the service's proof and the signature
cannot differ between them (a copied tail once lost the signature on one path):

    publish.publish(staging, REPO/NAME, finalize) -> for the version number it takes:
        kind check again (a concurrent export may have published) -> manifest -> model card ->
        the service's proof on the staged directory -> signature over every file (last) -> rename
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from contract.manifest import MANIFEST_NAME, Manifest
from export import card, publish
from export.errors import ProofRefusedError

logger = logging.getLogger(__name__)


def package_version(name: str) -> str:
    """An installed distribution's version for the manifest's provenance ("unknown" when absent)."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def prove_staged(staging: Path, repo: Path, formats: Sequence[str], allow_unconstrained: bool) -> None:
    """The service's proof on the staged version, with each engine whose artifact was written."""
    from contract.policy import Policy
    from service.repository.prover import prove_version

    policy = Policy(allow_unconstrained=allow_unconstrained)
    for engine in [engine for engine in ("onnx", "torchscript") if engine in formats]:
        report, _ = prove_version(staging, engine=engine, policy=policy, repo=repo)
        if not report.ok:
            raise ProofRefusedError(f"engine {engine}: {report.reason}", report.render())
        logger.info("the service's proof passes on the staged version (engine %s)", engine)


@dataclass
class Signing:
    """`--sign-key`: an elliptic-curve private key (PEM) and its password; None: publish unsigned."""

    key: str | Path
    password: str | None = None


def finalize_staged(staging: Path, repo: Path, name: str, manifest_fields: dict[str, Any], *, card_caption: str,
                    formats: Sequence[str], allow_unconstrained: bool, replace_kind: bool,
                    signing: Signing | None, curve: bool = False) -> tuple[int, Path, Manifest]:
    """Publish the staged directory as REPO/NAME's next version; (version, its directory, manifest).

    `manifest_fields`: every Manifest field but `version`. Raises KindConflictError, ProofRefusedError
    or the signer's error with nothing published (the staging directory is removed by its owner)."""
    kind = manifest_fields["kind"]
    manifests: dict[int, Manifest] = {}

    def finalize(version: int) -> None:
        publish.check_kind(repo / name, kind, replace_kind)  # a concurrent export may have published
        manifest = Manifest(version=version, **manifest_fields)
        (staging / card.CARD_MD).write_text(card.render_card(manifest, card_caption, curve=curve), encoding="utf-8")
        (staging / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
        prove_staged(staging, repo, formats, allow_unconstrained)
        if signing is not None:  # last: it covers the card and the manifest just written
            from contract.signing import sign_version

            sign_version(staging, signing.key, signing.password)
        manifests[version] = manifest

    version, version_dir = publish.publish(staging, repo / name, finalize)
    logger.info("published %s version %d at %s", name, version, version_dir)
    return version, version_dir, manifests[version]
