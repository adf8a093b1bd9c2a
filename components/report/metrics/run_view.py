"""One run as the comparison sees it: its tables read and checked (as the single report reads
them), its caption grid, per-layer numbers, labels, category shares, precision and layer naming."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..inputs.caption_precision import CaptionPrecision, caption_precision
from ..inputs.layer_naming import LayerNaming, layer_naming
from ..inputs.run_tables import find_run_tables
from ..inputs.tables import ReportInputs, load_inputs
from ..page.outputs import input_warnings, share_warnings
from ..single.browser_data import LabelView, label_view
from . import category_shares as cat
from .layer_stats import CaptionGrid, LayerStats, compute_layer_stats


@dataclass
class RunView:
    role: str                      # "RUN_A", "RUN_B" (or the parameter's name): named in errors and the page
    name: str                      # display name (default: the model's name)
    source: str                    # the run's storage prefix, or "this run"
    inputs: ReportInputs
    grid: CaptionGrid
    stats: LayerStats
    labels: LabelView
    shares: cat.ShareMatrix
    precision: CaptionPrecision
    naming: LayerNaming
    warnings: list[str] = field(default_factory=list)

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


def run_view_of(inputs: ReportInputs, role: str, source: str, name: str | None = None,
                stats: LayerStats | None = None, grid: CaptionGrid | None = None) -> RunView:
    """A run's view from tables already read (``load_inputs``), with labels; ``stats``/``grid`` reused when given."""
    if inputs.categorized is None:
        raise ValueError(f"{role} {source}: no labels; a comparison needs both runs' categorize output")
    grid = grid or CaptionGrid.from_table(inputs.captions)
    stats = stats or compute_layer_stats(grid)
    naming = layer_naming(inputs.provenance.get("captions") or [], grid.layers, f"{role} {source} captions")
    shares = cat.share_matrix(inputs.categorized.aggregate, grid.layers)
    view = RunView(role=role, name=name or naming.model or role, source=source, inputs=inputs, grid=grid, stats=stats,
                   labels=label_view(inputs.categorized), shares=shares,
                   precision=caption_precision(inputs.provenance["captions"]), naming=naming)
    view.warnings = [f"{view.name}: {w}" for w in share_warnings(shares) + input_warnings(grid, None, None, None)]
    return view


def load_run(run: str, role: str, name: str | None = None) -> RunView:
    """Read a finished run from its storage prefix (folder or s3://); errors name ``role`` and the run."""
    tables = find_run_tables(run, role)
    try:
        inputs = load_inputs(tables.captions, tables.labels, tables.aggregate)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"{role} {tables.prefix}: {e}") from e
    view = run_view_of(inputs, role, tables.prefix, name)
    if tables.unfinished_shards:
        view.warnings.append(f"{view.name}: {len(tables.unfinished_shards)} shards have captions but no manifest "
                             "(their caption step had not finished) and are left out")
    return view
