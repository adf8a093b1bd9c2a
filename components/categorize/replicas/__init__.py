"""Model replicas at work: one replica's labelling loop (``replica``), one process per replica (``processes``,
``worker``) and their supervision (``supervisor``)."""
