"""Following one postback through kseg: the timeline `kseg trace` and the console show."""
