-- A 64-bit hash of the message each span was stored from (blake2b of its bytes). A later
-- message with the same event_id is a re-delivery when its hash matches, and a conflict —
-- dead-lettered, never stored or counted — when it does not. Rows stored before this
-- migration read 0: unknown, so a later copy of them is treated as a re-delivery.
ALTER TABLE coalmine.spans
    ADD COLUMN IF NOT EXISTS content_hash UInt64 CODEC(ZSTD(1)) AFTER attributes;
