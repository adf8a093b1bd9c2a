"""What a report reads: the captions, labels and aggregate tables (and a finished run's, found under
its storage prefix), the input shards' thumbnails and reference captions, and what the captions'
metadata says of the layers, the precision and the weights."""
