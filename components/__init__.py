"""The pipeline's components: each folder is one step, meeting the others only through
`components.common` (storage, data contracts, model loading, progress)."""
