"""Backbone-agnostic, batched, grammar-constrained decoding (jump-forward + verified drafts).

* :class:`DecodeStep`: the one call an engine implements (see :mod:`.step`).
* :class:`HFCausalLMStep`: that call for a ``transformers`` causal LM; :func:`prefill`;
  :func:`select_cache` (cuts finished goals' rows and dead slots from a transformers cache).
* :func:`constrained_generate`: one descriptor per goal under its grammar
  (:mod:`text4seg_ros.descriptors.grammar`), greedy, batched.
* :func:`greedy_generate`: the unconstrained greedy reference through the same step.
* :class:`DecodeCancelled`: raised when a decode's ``should_stop`` callable says stop.
* :class:`OracleStep`: a teacher-forced stand-in that counts forward calls for a known answer.
"""

from __future__ import annotations

from .cancel import DecodeCancelled, StopCheck
from .loop import GenerationResult, constrained_generate, greedy_generate
from .oracle import OracleStep
from .step import DecodeStep, HFCausalLMStep, prefill, select_cache

__all__ = [
    "DecodeCancelled",
    "DecodeStep",
    "GenerationResult",
    "HFCausalLMStep",
    "OracleStep",
    "StopCheck",
    "constrained_generate",
    "greedy_generate",
    "prefill",
    "select_cache",
]
