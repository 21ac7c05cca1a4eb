"""Data builders: annotations to JSONL chat samples (see :mod:`training.data.sample`).

One module per source: :mod:`.coco` (COCO instances, mask rasterisation), :mod:`.refer`
(RefCOCO / RefCOCO+ / RefCOCOg / RefCLEF and gRefCOCO), :mod:`.semantic` (COCO-Stuff / ADE
label maps, open vocabulary), :mod:`.instances` (B-SD), :mod:`.synthetic` (coloured shapes);
:mod:`.build` is the command line.
"""
