"""The Spark batch engine: reads the lake's partition files into Spark, runs the Spark transforms, and hands the
result back as a Polars frame for the shared writer (``lake.datasets.write_months``).

A lake on object storage is read by the executors themselves, each its share of the files with the project's
own Parquet reader (``mapInArrow``), so no Hadoop S3 connector has to be on the cluster's class path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from functools import partial
from pathlib import Path

import polars as pl
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from crypto_assets.lake.location import is_remote, read_parquet
from crypto_assets.schema import DAILY_SCHEMA, FILLED_SCHEMA, MINUTE_SCHEMA, PROPHET_SCHEMA
from crypto_assets.spark import transforms

# Spark reads Parquet's unsigned 32-bit integers (minute_count) as longs.
SPARK_TYPES: dict[type[pl.DataType], T.DataType] = {
    pl.String: T.StringType(),
    pl.Datetime: T.TimestampType(),
    pl.Date: T.DateType(),
    pl.Float64: T.DoubleType(),
    pl.UInt32: T.LongType(),
    pl.Boolean: T.BooleanType(),
}


def spark_schema(schema: pl.Schema) -> T.StructType:
    return T.StructType([T.StructField(name, SPARK_TYPES[dtype.base_type()]) for name, dtype in schema.items()])


def to_polars(frame: DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Collect through Arrow into one contiguous Polars frame with the dataset's exact column types."""
    return pl.from_arrow(frame.toArrow()).select(schema.names()).cast(dict(schema)).rechunk()


def read_files(batches, schema: pl.Schema):  # noqa: ANN001, ANN201 - mapInArrow's iterator form
    """``mapInArrow``: each path of the batches read whole, in the dataset's columns and the types Spark reads."""
    types = {name: pl.Int64 if dtype == pl.UInt32 else dtype for name, dtype in schema.items()}
    for batch in batches:
        for path in batch.column("path").to_pylist():
            frame = read_parquet(path).select(schema.names()).cast(types)
            yield from frame.to_arrow(compat_level=pl.CompatLevel.oldest()).to_batches()


class SparkEngine:
    """The batch steps on a Spark session (the ``pyspark`` resource's, or one built from the settings)."""

    name = "spark"

    def __init__(self, session: SparkSession) -> None:
        self.session = session

    def read(self, files: Sequence[Path], schema: pl.Schema) -> DataFrame:
        if any(is_remote(path) for path in files):
            paths = self.session.createDataFrame([(str(p),) for p in files], "path string")
            return paths.repartition(len(files)).mapInArrow(partial(read_files, schema=schema), spark_schema(schema))
        # Explicit files: Spark infers no partition columns from the Hive directory names.
        return self.session.read.schema(spark_schema(schema)).parquet(*(str(path) for path in files))

    def daily_raw(self, minute_files: Sequence[Path]) -> pl.DataFrame:
        return to_polars(transforms.aggregate_daily(self.read(minute_files, MINUTE_SCHEMA)), DAILY_SCHEMA)

    def daily_filled(self, daily_files: Sequence[Path], through: Mapping[str, date]) -> pl.DataFrame:
        daily = self.read(daily_files, DAILY_SCHEMA)
        return to_polars(transforms.daily_filled(daily, through), FILLED_SCHEMA)

    def prophet_input(self, filled_files: Sequence[Path]) -> pl.DataFrame:
        return to_polars(transforms.prophet_input(self.read(filled_files, FILLED_SCHEMA)), PROPHET_SCHEMA)
