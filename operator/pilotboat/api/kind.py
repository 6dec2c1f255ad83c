"""What the API server needs to know about each kind besides its schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pilotboat import API_VERSION, GROUP, VERSION
from pilotboat.api.common import SpecModel, StatusBase

__all__ = ["KindDescriptor", "PrinterColumn", "PrinterColumnType", "ScaleSubresource", "AGE_COLUMN"]

PrinterColumnType = Literal["string", "integer", "number", "boolean", "date"]


@dataclass(frozen=True)
class PrinterColumn:
    """A column ``kubectl get`` prints for a kind."""

    name: str
    json_path: str
    type: PrinterColumnType = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class ScaleSubresource:
    """Where ``/scale`` reads and writes a kind's replicas (``kubectl scale``, an HPA)."""

    spec_replicas_path: str
    status_replicas_path: str
    label_selector_path: str | None = None


AGE_COLUMN = PrinterColumn(
    name="Age",
    json_path=".metadata.creationTimestamp",
    type="date",
    description="How long ago the object was created.",
)


@dataclass(frozen=True)
class KindDescriptor:
    """A custom resource kind: its names, its spec and status models, its printer columns.

    ``printer_columns`` lists the kind's own columns; :attr:`all_printer_columns` adds Age.
    """

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec_model: type[SpecModel]
    status_model: type[StatusBase]
    description: str
    printer_columns: tuple[PrinterColumn, ...] = ()
    categories: tuple[str, ...] = field(default=("pilotboat",))
    scale: ScaleSubresource | None = None
    """The scale subresource, for a kind that runs a number of pods."""
    namespaced: bool = True
    """False for a cluster-scoped kind (the CRD's ``scope: Cluster``)."""

    group = GROUP
    version = VERSION
    api_version = API_VERSION

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def crd_name(self) -> str:
        """The CustomResourceDefinition's metadata.name: ``<plural>.<group>``."""
        return f"{self.plural}.{self.group}"

    @property
    def spec_required(self) -> bool:
        """Whether ``spec`` must be present: true when some spec field has no default."""
        return any(f.is_required() for f in self.spec_model.model_fields.values())

    @property
    def all_printer_columns(self) -> tuple[PrinterColumn, ...]:
        return (*self.printer_columns, AGE_COLUMN)
