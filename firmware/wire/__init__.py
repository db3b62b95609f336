"""The contract between the device and the agent: topics, messages, manifest, age envelope.

Standard library and ``cryptography`` only; this is the one part of ``firmware``
that ``agent`` imports.
"""
