"""Pure numpy signal processing for the telephone line."""
