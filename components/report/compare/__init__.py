"""Two runs compared on relative depth: ``report.build_compare_report``, its sections and plots."""
