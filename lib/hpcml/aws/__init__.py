"""AWS: request bodies and their offline validation (:mod:`.requests`), the placeholder account (:mod:`.account`), sending them
(:mod:`.send`), and a local S3-compatible endpoint (:mod:`.local_s3`)."""
