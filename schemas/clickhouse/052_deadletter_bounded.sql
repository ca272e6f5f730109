-- Dead letters keep a bounded prefix of the original bytes (kafka.deadletter_raw_bytes, default
-- 4 KiB) in `raw`; the whole message is identified by its length and its SHA-256.
-- Rows written before this migration (and rows with no original bytes) have 0 and ''.
ALTER TABLE deadletter ADD COLUMN IF NOT EXISTS length UInt64 DEFAULT 0 COMMENT 'length of the original message in bytes' AFTER raw;
ALTER TABLE deadletter ADD COLUMN IF NOT EXISTS sha256 String DEFAULT '' COMMENT 'SHA-256 (hex) of the whole original message' AFTER length;
