import pytest

from discorecs.spark import build_spark_session, check_spark


@pytest.mark.spark
def test_spark_local_mode_runs_a_job(test_settings):
    assert check_spark(test_settings) == "4.3.0"


@pytest.mark.spark
def test_session_takes_settings(test_settings):
    spark = build_spark_session(test_settings, "settings-test", {"spark.ui.enabled": "false"})
    try:
        assert spark.conf.get("spark.sql.shuffle.partitions") == "1"
        assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
        assert spark.sparkContext.master == "local[2]"
    finally:
        spark.stop()
