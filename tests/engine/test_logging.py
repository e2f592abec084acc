"""hrpose.engine.logging: log file naming, handler hygiene, the results table."""

from __future__ import annotations


def test_logger_setup_and_close_restore_the_hrpose_logger(tmp_path):
    import logging

    from hrpose.engine.logging import close_logger, name_value_table, setup_logger

    hr = logging.getLogger("hrpose")
    before = (hr.level, hr.propagate, list(hr.handlers))
    logger, log_file = setup_logger(tmp_path, "exp", "train", time_str="2020-01-01-00-00")
    assert log_file == tmp_path / "exp_2020-01-01-00-00_train.log"
    logging.getLogger("hrpose.data.dataset").info("from a child logger")
    logger.info(name_value_table({"AP": 0.5, "Ap .5": 0.25}, "pose_hrnet_w32_long_name"))
    close_logger()
    assert (hr.level, hr.propagate, list(hr.handlers)) == before  # other tests' caplog keeps working
    text = log_file.read_text()
    assert "from a child logger" in text
    assert "| Arch | AP | Ap .5 |\n|---|---|---|\n| pose_hrn... | 0.500 | 0.250 |" in text
    _, none = setup_logger(tmp_path / "rank1", "exp", "train", rank=1)
    close_logger()
    assert none is None and not (tmp_path / "rank1").exists()  # only rank 0 writes a log file
