"""The review web app: sign-in, roles, calls, audio and the audit log."""
