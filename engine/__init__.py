"""LOEV Explorer engine: headless audio, model, library and command line. Never imports Qt or trainer."""
