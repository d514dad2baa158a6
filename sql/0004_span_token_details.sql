-- The parts of a span's token totals that providers bill at their own prices, so cost can be
-- recomputed and explained per version: cached_input_tokens of input_tokens (served from the
-- provider's prompt cache) and reasoning_tokens of output_tokens. Rows stored before this
-- migration read 0 for both: their events had no way to report them.
ALTER TABLE coalmine.spans
    ADD COLUMN IF NOT EXISTS cached_input_tokens UInt32 CODEC(T64, ZSTD(1)) AFTER output_tokens;
ALTER TABLE coalmine.spans
    ADD COLUMN IF NOT EXISTS reasoning_tokens UInt32 CODEC(T64, ZSTD(1)) AFTER cached_input_tokens;
