"""Tools for development and tests: a private Redis server, ``conveyor dev``, the demo app and
crash points for reliability tests."""
