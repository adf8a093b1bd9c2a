"""The numbers a report shows: per-layer statistics, text metrics, category shares (per layer and
on relative depth), and one run's view of them all."""
