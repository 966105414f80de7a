"""Synthetic Amazon-Bin-Image-Dataset bins, written in the real ABID layout.

Why: the real dataset is 31 GB behind S3, has noisy labels and cannot be shipped with tests. A
renderer that writes ``<out>/bin-images/<id>.jpg`` and ``<out>/metadata/<id>.json`` exactly like the
bucket (same ids, same metadata schema) lets one reader, the training loop and the smoke tests run
offline and in minutes on a CPU, with labels that are known to be right.

What a bin looks like, after the real photos: a pod seen from the front (back wall, side walls and
ceiling in rough perspective, yellow fabric / cardboard / grey tint with fibre noise); N items grouped
into SKUs (units of one SKU look alike, as in real bins) of varied shape (boxes showing two faces,
rounded packs, ellipses, polygons), colour, texture (flat, stripes, gradients, mottled, printed labels)
and size, with outlines and drop shadows; in front of them 1-3 translucent bands of thin elastic lines,
some with a solid cord, the bin's lip with its white label, sometimes a frame edge or shelf; then a
brightness gradient, vignette, colour cast, exposure, sometimes blur, sensor noise, JPEG quality 90.
Placement rejects spots where any item, the new one included, would keep less than MIN_VISIBLE of its
pixels (cords, lip and frame count as covering; the see-through bands do not), so every item stays
countable while overlap and occlusion still happen.

Determinism: bin ``index`` of dataset ``seed`` depends only on ``SeedSequence([seed, index])`` (and
RENDERER_VERSION, given the same numpy and Pillow), so partial, resumed and parallel renders write
byte-identical files. The count is drawn first and the items use their own sub-stream, so an index's
bin, bands, lighting and noise are the same whatever its count: the background cannot leak the label,
and ``bin_count`` reads a label without rendering.

Speed: 190-210 images/s in one process at size 128 (best of 12 batches of 40 ``render_bin`` calls,
~5 ms/image) on this project's 2-core x86-64 VM (Intel Xeon @ 2.50GHz, shared, no GPU), measured
while the machine was otherwise idle; under load from other processes expect 120-160. End to end,
``bincount render`` writing files did 140 images/s with 1 worker and 200 with 2 (800 images). Python
call overhead dominates at this size, hence drawing with Pillow's C operations rather than per-pixel
numpy, one sprite per SKU rotated per unit, and lighting maps, fibre noise, elastic bands and sensor
noise looked up from small cached banks of deterministic VARIANTS rather than computed per image.

No torch here: this module only needs numpy, Pillow and rich, so rendering workers start fast.
"""

from bincount.data.synthetic.bins import bin_count, image_id, render_bin
from bincount.data.synthetic.cli import ERRORS, add_arguments, parse_counts, run
from bincount.data.synthetic.spec import CAPSTONE_COUNT_DISTRIBUTION, JPEG_QUALITY, RENDERER_VERSION
from bincount.data.synthetic.writer import render_dataset

__all__ = [
    "ERRORS",
    "CAPSTONE_COUNT_DISTRIBUTION",
    "JPEG_QUALITY",
    "RENDERER_VERSION",
    "add_arguments",
    "bin_count",
    "image_id",
    "parse_counts",
    "render_bin",
    "render_dataset",
    "run",
]
