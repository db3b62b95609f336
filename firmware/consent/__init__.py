"""Whether and how a call may be recorded where its two ends are.

``rules`` loads the jurisdictions' rules (``firmware/data/consent.toml`` plus the
owner's overrides), ``regions`` tells where a caller is from the number that
caller ID gave, and ``decision`` combines the two ends into one ``Decision``.
All three are pure: no clock, no thread, no I/O beyond reading their data files.
"""
