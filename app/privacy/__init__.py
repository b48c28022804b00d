"""Privacy requests: deleting or suppressing one person across kseg, the warehouse, Segment and Kochava."""
