"""Models: backbone registry, loading, the Segmenter (heavy modules are not imported here).

* :mod:`.types`: ``Goal``, ``GoalResult``, ``Timings``, ``SegmenterLike`` (no torch; the ROS
  layer imports only this).
* :mod:`.registry`: ``BACKBONES`` (llava, qwen2_vl, qwen2_5_vl, internvl): prompts, prefix
  encoding, decoder step adapters.
* :mod:`.loading`: ``load_pretrained`` (HF directory, base + LoRA, original LLaVA layout via
  :mod:`.llava_original`); :mod:`.processors` (processors without torchvision).
* :mod:`.segmenter`: ``Segmenter`` (``set_image`` once, ``segment`` many goals in one batch);
  :mod:`.answers` (goal -> prompt and grammar, descriptor -> masks).
* :mod:`.tiny` / :mod:`.tokenizer`: tiny random backbones and offline tokenizers for tests.
"""
