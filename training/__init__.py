"""Training package: data builders, LoRA + DeepSpeed ZeRO-2 fine-tuning, merge.

* :mod:`training.data`: annotations -> JSONL chat samples whose answers are semantic descriptors,
  written with the project's one codec (:mod:`text4seg_ros.descriptors`) and prompts
  (:mod:`text4seg_ros.prompts`), so training and serving cannot drift apart.
* :mod:`training.train`: the fine-tuning entry point (``torchrun`` / ``deepspeed`` launchable).
* :mod:`training.merge`: LoRA adapter -> merged checkpoint that ``Segmenter.from_pretrained`` loads.
"""
