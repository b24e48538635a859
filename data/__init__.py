"""The bundled sample images, installed as the package `nstlib.samples` (see SOURCES.md)."""
