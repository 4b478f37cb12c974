"""Side-by-side benchmark of s3encfs against s3fs-fuse, rclone mount and rclone crypt.

Run with ``make bench`` or ``python -m bench.run --help``.
"""
