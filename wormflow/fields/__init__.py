"""Fields: an imager's per-channel files → RGB fields → tiles → scores → per-field maps.

Pure numpy/scipy (scikit-learn for the metrics).  See the sub-modules:

* :mod:`.grouping`: channel files → fields (:func:`group_fields`, :class:`FieldPattern`);
* :mod:`.compose`: derive.py's well region, stretch and RGB composite, the specimen area;
* :mod:`.tiles`: tile grid, in-area test, patch-rule labels, stitching;
* :mod:`.floors`: hand-made per-pixel maps (dark pixels, local contrast);
* :mod:`.metrics`: dev-chosen thresholds and pixel/tile/well metrics.
"""

from .compose import (
    DEFAULT_BRIGHTFIELD,
    DEFAULT_CHANNEL_MAP,
    DEFAULT_PERCENTILES,
    FieldError,
    check_channels,
    compose_rgb,
    specimen_area,
    stretch,
    well_region,
)
from .floors import dark_pixels, dark_share_tiles, local_contrast
from .grouping import DEFAULT_FIELD_REGEX, Field, FieldPattern, Grouping, group_fields
from .metrics import Threshold, agreement, choose_threshold, counts, overlap, ranking_metrics, subsample
from .tiles import crop_tiles, stitch, tile_grid, tile_in_area, tile_labels, tile_means, tile_share_score

__all__ = [
    "DEFAULT_BRIGHTFIELD",
    "DEFAULT_CHANNEL_MAP",
    "DEFAULT_FIELD_REGEX",
    "DEFAULT_PERCENTILES",
    "Field",
    "FieldError",
    "FieldPattern",
    "Grouping",
    "Threshold",
    "agreement",
    "check_channels",
    "choose_threshold",
    "compose_rgb",
    "counts",
    "crop_tiles",
    "dark_pixels",
    "dark_share_tiles",
    "group_fields",
    "local_contrast",
    "overlap",
    "ranking_metrics",
    "specimen_area",
    "stitch",
    "stretch",
    "subsample",
    "tile_grid",
    "tile_in_area",
    "tile_labels",
    "tile_means",
    "tile_share_score",
    "well_region",
]
