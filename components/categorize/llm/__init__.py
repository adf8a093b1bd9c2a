"""The labelling LLM: loading it (``loading``), planning its GPUs (``layout``) and batched generation (``generate``)."""
