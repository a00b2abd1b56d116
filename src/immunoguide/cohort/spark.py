"""A local Spark session set up for the Ibis pyspark backend (``../shared/docs/stack.md`` §1–§2 traps).

``SPARK_LOCAL_IP=127.0.0.1`` (Spark otherwise binds another interface where the hostname resolves to loopback),
the UI off, the session time zone UTC, and a fresh warehouse directory per session (a second run would otherwise
fail with ``LOCATION_ALREADY_EXISTS``). Tables are always read from Parquet so NULL stays NULL (not NaN).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

__all__ = ["local_spark_session"]


def local_spark_session(cores: int = 2, memory: str = "4g") -> Any:
    """Start (or reuse) a ``local[cores]`` SparkSession configured for immunoguide."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    warehouse = tempfile.mkdtemp(prefix="immunoguide-spark-warehouse-")
    return (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("immunoguide")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", warehouse)
        .config("spark.driver.memory", memory)
        .config("spark.sql.shuffle.partitions", str(max(cores * 2, 2)))
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
