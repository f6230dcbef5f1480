"""AWS: request bodies and their offline validation (:mod:`.requests`), sending them
(:mod:`.send`), and a local S3-compatible endpoint (:mod:`.local_s3`)."""
