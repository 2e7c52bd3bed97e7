"""The daemon: building the layers, the mount lifecycle, and the status snapshot."""
