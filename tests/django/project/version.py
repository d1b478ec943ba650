"""Changed by the autoreload test while runserver runs."""

VERSION = 1
