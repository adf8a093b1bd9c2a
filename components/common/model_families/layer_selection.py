"""Which blocks of a vision tower to caption: the ``--layers`` spelling, for every family."""

from __future__ import annotations


def parse_layers(spec: str | list[int] | None, n_layers: int) -> list[int]:
    """``all``, ``"0,5,23"``, ``"-1"`` or a list -> sorted distinct 0-based block indices."""
    if spec is None or spec == "all" or spec == "":
        return list(range(n_layers))
    items = spec if isinstance(spec, (list, tuple)) else [s for s in str(spec).split(",") if s.strip()]
    out = set()
    for item in items:
        try:
            i = int(float(item))  # KFP hands list-of-int parameters over as floats
        except ValueError as e:
            raise ValueError(f"layer {item!r} is not an integer; give e.g. --layers all or --layers 0,5,23") from e
        if not -n_layers <= i < n_layers:
            raise ValueError(f"layer {i} is out of range: the model has {n_layers} blocks (0..{n_layers - 1})")
        out.add(i % n_layers)
    return sorted(out)
