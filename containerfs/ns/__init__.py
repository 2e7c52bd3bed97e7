"""The namespace layer: inodes, listings and the names under which files are shown."""
