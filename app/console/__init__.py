"""The web console (`kseg console`): server-rendered pages over the warehouse, the dead-letter topic and the
mapping profiles, behind viewer/operator tokens."""
