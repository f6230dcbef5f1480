"""AWS: request bodies and their offline validation (:mod:`.requests`), the placeholder account (:mod:`.account`), sending them
(:mod:`.send`), and the local object store, SeaweedFS with per-role identities (:mod:`.local_s3`, :mod:`.identities`)."""
