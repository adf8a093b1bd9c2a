"""What both pages are made of: the one-file HTML (escaping, tables, JSON in <script>), the
provenance section, Markdown-safe text, and the files a report writes."""
