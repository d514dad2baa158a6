-- A Kafka message may carry a batch of spans (schemas/framing.py): a span is identified by
-- (kafka_partition, kafka_offset, kafka_index), its index in the message. Rows stored before
-- this migration came from messages of one span and read 0, which is what they are.
ALTER TABLE coalmine.spans
    ADD COLUMN IF NOT EXISTS kafka_index UInt16 CODEC(T64, ZSTD(1)) AFTER kafka_offset;
