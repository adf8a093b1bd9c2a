"""One run's report: ``report.build_report``, its page sections, image browser data, plots and summary."""
