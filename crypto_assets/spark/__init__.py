"""The Spark engine: the batch transforms on Spark, and the session resource that runs them."""
