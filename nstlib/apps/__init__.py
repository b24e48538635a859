"""Programs built on the library: the command line (`cli`), the fast stylizer (`fast_style`), `compare`."""
