"""Ways onto the phone line: one ``LineBackend`` interface, one module per hardware path."""
