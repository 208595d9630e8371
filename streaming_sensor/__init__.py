"""Speed layer: exchange WebSocket -> Kafka -> Spark Structured Streaming, and the sensor that
refreshes the serving layer when a micro-batch lands. Built in the speed-layer issue."""
