"""The write path: spool files, uploads at flush, the pending-upload queue, renames."""
