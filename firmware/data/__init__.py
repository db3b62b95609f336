"""Data files shipped with the firmware: cadences, pin map."""
