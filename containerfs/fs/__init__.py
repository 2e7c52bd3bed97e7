"""The FUSE layer: the ``pyfuse3.Operations`` adapter, its handles and attributes."""
