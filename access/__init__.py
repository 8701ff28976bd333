"""Credentials (Wiegand card formats) and the door's links to access-control hardware:
an OSDP Peripheral Device for an existing panel, a plain Wiegand D0/D1 output, and the badge
readers used by the card + face modes."""
