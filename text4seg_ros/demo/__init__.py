"""``make demo``: the whole product on recorded data (see docs/demo.md).

* :mod:`.scenes`: held-out tabletop scenes (``training.data.tabletop``) written as images,
  ground-truth PNGs and a goals file for ``text4seg-bag record-images --goals-file``.
* :mod:`.summary`: the demo's ``report.md`` (per-kind metrics, the issue's bars, decoding).
* :mod:`.run`: the steps (record, evaluate through the node, the DAVIS real-camera run, report);
  ``python -m text4seg_ros.demo``.
"""
