"""Model families: one backbone, one gated block, one file per mixer."""
