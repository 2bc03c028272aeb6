from ._start import entry

entry()
