"""The read path: streaming downloads into the disk cache, served to read handles."""
