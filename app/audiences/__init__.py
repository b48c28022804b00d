"""Audiences: Segment Engage and kseg's own audiences, resolved to every device and sent to Kochava."""
