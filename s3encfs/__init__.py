"""s3encfs: mount an S3 bucket (or prefix) as an encrypted FUSE filesystem."""

__version__ = "0.1.0"
