"""A versioned model repository on disk: ``<root>/<name>/<version>/model.onnx`` plus metadata.

Layout of one version::

    model.onnx          the model
    metadata.json       signature (inputs/outputs in OIP terms), feature names, provenance
    reference.parquet   a sample of the training data: the reference for drift detection
    holdout.parquet     held-out rows with labels, for accuracy checks of variants (optional)

The newest version is the highest by semantic-version order, so ``1.10.0`` beats ``1.9.0``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import msgspec
from pydantic import SecretStr

from streaminfer.schemas.signature import Signature
from streaminfer.workers.errors import HashKeyMissing, ModelFileMissing, UnknownModel
from streaminfer.workers.models.caching import CachePolicy, check_cache
from streaminfer.workers.models.privacy import Masking, PrivacyPolicy, check_policy

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
REFERENCE_FILE = "reference.parquet"
HOLDOUT_FILE = "holdout.parquet"

_SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$")


class Enrichment(msgspec.Struct, frozen=True):
    """Features the pipeline adds to each request from the online feature store before inference.

    The request sends the input ``input`` without the last ``len(features)`` columns and names
    its entity in ``parameters.<entity_parameter>``; the pipeline appends the entity's values of
    ``features`` (Feast references, ``view:feature``), in order.
    """

    input: str
    features: list[str]
    required: bool = True
    """Required: a request whose entity or features are missing becomes a dead letter
    (``feature_missing``). Not required: missing values are filled with ``default``."""

    default: float = 0.0


class ModelMetadata(msgspec.Struct, omit_defaults=True):
    name: str
    version: str
    signature: Signature
    feature_names: list[str] = []
    class_names: list[str] = []
    framework: str = ""
    description: str = ""
    metrics: dict[str, float] = {}
    enrichment: Enrichment | None = None
    privacy: PrivacyPolicy | None = None
    """Personal input features and request parameters, and whether to drop or hash them before
    anything is stored (``workers.models.privacy``)."""

    deterministic: bool = False
    """The same input tensors always give the same outputs (required for ``cache``)."""

    cache: CachePolicy | None = None
    """Cache this version's answers in the consumers (``workers.models.caching``); opt-in."""


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One version on disk; cheap to pass to Ray actors (paths and metadata only)."""

    metadata: ModelMetadata
    directory: Path
    hash_key: SecretStr | None = None
    """The key of the privacy policy's hashes (``privacy.hash_key``); travels pickled with the entry."""

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def version(self) -> str:
        return self.metadata.version

    @property
    def request_signature(self) -> Signature:
        """What a request must send: the model's signature less the enriched columns."""
        signature = self.metadata.signature
        enrichment = self.metadata.enrichment
        if enrichment is None:
            return signature
        inputs = tuple(
            msgspec.structs.replace(spec, shape=(*spec.shape[:-1], spec.shape[-1] - len(enrichment.features)))
            if spec.name == enrichment.input else spec
            for spec in signature.inputs
        )
        return msgspec.structs.replace(signature, inputs=inputs)

    @property
    def masking(self) -> Masking:
        """The privacy policy, ready to apply; raises ``HashKeyMissing`` for a policy that hashes
        while no key is set."""
        policy = self.metadata.privacy or PrivacyPolicy()
        if policy.hashes_anything and self.hash_key is None:
            raise HashKeyMissing(self.name, self.version)
        inputs = self.metadata.signature.inputs
        matrix = inputs[0].name if len(inputs) == 1 and len(inputs[0].shape) == 2 else None
        return Masking(policy, tuple(self.metadata.feature_names), matrix, self.hash_key)

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILE

    @property
    def reference_path(self) -> Path:
        return self.directory / REFERENCE_FILE

    @property
    def holdout_path(self) -> Path:
        return self.directory / HOLDOUT_FILE


def version_key(version: str) -> tuple[int, int, int, int, str]:
    """Sort key that orders semantic versions numerically. As in semver, a pre-release such as
    ``1.0.0-fp16`` sorts before ``1.0.0``, so variants never become the newest by accident;
    non-semver names sort first."""
    match = _SEMVER.match(version)
    if not match:
        return (-1, -1, -1, -1, version)
    major, minor, patch = (int(g) for g in match.groups())
    is_release = 0 if "-" in version else 1
    return (major, minor, patch, is_release, version)


class ModelRepository:
    def __init__(self, root: Path, hash_key: SecretStr | None = None) -> None:
        """``hash_key``: the key of privacy policies that hash (``privacy.hash_key``)."""
        self.root = Path(root)
        self.hash_key = hash_key

    def model_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[str]:
        """Versions of ``name`` that have metadata, oldest first."""
        model_dir = self.root / name
        if not model_dir.is_dir():
            return []
        found = [p.name for p in model_dir.iterdir() if (p / METADATA_FILE).is_file()]
        return sorted(found, key=version_key)

    def resolve(self, name: str, version: str | None = None) -> ModelVersion:
        """The named version, or the newest one; raises ``UnknownModel`` with what is there."""
        versions = self.versions(name)
        if not versions:
            raise UnknownModel(name, version, self.model_names())
        chosen = version or versions[-1]
        if chosen not in versions:
            raise UnknownModel(name, version, [f"{name}/{v}" for v in versions])
        return self.load(name, chosen)

    def load(self, name: str, version: str) -> ModelVersion:
        directory = self.root / name / version
        metadata_path = directory / METADATA_FILE
        if not metadata_path.is_file():
            raise ModelFileMissing(metadata_path, "write the model with `streaminfer models build-demo` or add its metadata.json")
        metadata = msgspec.json.decode(metadata_path.read_bytes(), type=ModelMetadata)
        if metadata.privacy is not None:
            check_policy(metadata.privacy, metadata.feature_names, name, version)
        if metadata.cache is not None:
            check_cache(metadata.cache, metadata.deterministic, name, version)
        entry = ModelVersion(metadata=metadata, directory=directory, hash_key=self.hash_key)
        if not entry.model_path.is_file():
            raise ModelFileMissing(entry.model_path, "rebuild it with `streaminfer models build-demo --force`")
        return entry

    def save_metadata(self, metadata: ModelMetadata) -> Path:
        directory = self.root / metadata.name / metadata.version
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / METADATA_FILE
        path.write_bytes(msgspec.json.format(msgspec.json.encode(metadata)))
        return path
