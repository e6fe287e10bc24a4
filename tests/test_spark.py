import subprocess
import sys

import pytest

from discorecs import stack


@pytest.mark.spark
def test_spark_local_mode_runs_a_job(tmp_path):
    """`discorecs up`'s check starts and stops a session of its own: run it in its own process
    so it cannot stop the test session's Spark."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from discorecs.settings import load_settings; "
            "from discorecs.spark import check_spark; print(check_spark(load_settings()))",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "DISCORECS_HOME": str(tmp_path),
            "DISCORECS_SPARK_MASTER": "local[1]",
        },
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == stack.SPARK


@pytest.mark.spark
def test_session_takes_settings(spark):
    assert spark.conf.get("spark.sql.shuffle.partitions") == "1"
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert spark.sparkContext.master == "local[2]"
