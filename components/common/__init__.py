"""Code every component shares: storage, data contracts, model loading, progress."""
