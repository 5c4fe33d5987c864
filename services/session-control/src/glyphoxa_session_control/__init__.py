"""Session lifecycle and stage claims."""
