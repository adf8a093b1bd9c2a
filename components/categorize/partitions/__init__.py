"""The labelling split over several nodes: which partition a caption belongs to (``split``), and
the last step that merges the partitions' labels into one labels table and aggregate (``merge``,
streamed with ``labels_merge``)."""
