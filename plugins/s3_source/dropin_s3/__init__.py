"""S3 model repository source for dropin: `s3://bucket/prefix` base paths, downloaded into a
local cache version by version (see source.py)."""
