"""One run as a report shows it: its tables read and checked, its caption grid, per-layer numbers,
labels, category shares, caption precision and layer naming, and the warnings its tables raise.
The single run's page and each run of a comparison are built from this one view."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..inputs.caption_precision import CaptionPrecision, caption_precision
from ..inputs.layer_naming import LayerNaming, layer_naming
from ..inputs.run_tables import find_run_tables
from ..inputs.tables import ReportInputs, load_inputs
from . import category_shares as cat
from .data_warnings import grid_warnings, share_warnings
from .labels import LabelView, label_view
from .layer_stats import CaptionGrid, LayerStats, compute_layer_stats


@dataclass
class RunView:
    role: str                      # "RUN_A", "RUN_B", "this run" (or the parameter's name): named in errors and the page
    name: str                      # display name (default: the model's name)
    source: str                    # the run's storage prefix, or "this run"
    inputs: ReportInputs
    grid: CaptionGrid
    stats: LayerStats
    labels: LabelView              # empty without labels
    shares: cat.ShareMatrix | None  # None: no labels given (a report of the captions alone)
    precision: CaptionPrecision
    naming: LayerNaming
    warnings: list[str] = field(default_factory=list)  # on the tables themselves (shares, repeated rows, keys)

    @property
    def depths(self) -> list[float]:
        return [self.naming.depth(layer) for layer in self.grid.layers]

    def header_facts(self) -> list[tuple[str, str]]:
        """What the page's header says of this run."""
        naming = self.naming
        return [
            ("run", self.source),
            ("model", naming.model or "not recorded"),
            ("family", naming.family),
            ("pretrained", naming.pretrained or "not recorded"),
            ("precision", self.precision.text),
            ("images", f"{len(self.grid.image_keys):,}"),
            ("layers captioned", f"{len(self.grid.layers)} of {naming.n_layers} blocks "
                                 f"({naming.label(self.grid.layers[0])} .. {naming.label(self.grid.layers[-1])})"),
            ("layer naming", naming.source_text()),
        ]


def run_view_of(inputs: ReportInputs, role: str, source: str, name: str | None = None, *,
                stats: LayerStats | None = None, grid: CaptionGrid | None = None,
                errors_name: str | None = None) -> RunView:
    """A run's view from tables already read (``load_inputs``); ``stats``/``grid`` reused when given.
    ``errors_name``: how errors name the captions (default: the role and the source)."""
    grid = grid or CaptionGrid.from_table(inputs.captions)
    stats = stats or compute_layer_stats(grid)
    captions_meta = inputs.provenance.get("captions") or []
    naming = layer_naming(captions_meta, grid.layers, errors_name or f"{role} {source} captions")
    shares = cat.share_matrix(inputs.categorized.aggregate, grid.layers) if inputs.categorized else None
    return RunView(role=role, name=name or naming.model or role, source=source, inputs=inputs, grid=grid, stats=stats,
                   labels=label_view(inputs.categorized), shares=shares, precision=caption_precision(captions_meta),
                   naming=naming, warnings=share_warnings(shares) + grid_warnings(grid))


def load_run(run: str, role: str, name: str | None = None) -> RunView:
    """Read a finished run from its storage prefix (folder or s3://); errors name ``role`` and the run."""
    tables = find_run_tables(run, role)
    try:
        inputs = load_inputs(tables.captions, tables.labels, tables.aggregate)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"{role} {tables.prefix}: {e}") from e
    view = run_view_of(inputs, role, tables.prefix, name)
    if tables.unfinished_shards:
        view.warnings.append(f"{len(tables.unfinished_shards)} shards have captions but no manifest "
                             "(their caption step had not finished) and are left out")
    return view
