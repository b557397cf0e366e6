"""Recording datasets: a hive-partitioned directory of Parquet recordings read as one.

``partition`` (which directory a row goes to), ``layout`` (paths, ``dataset.json``,
staging locks), ``seal`` (moving staged files into partitions, recovery), ``reader``
(all files merged by receive time) and ``writer`` (one recorder's files).
"""
