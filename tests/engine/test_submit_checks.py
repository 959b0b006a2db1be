"""Local refusals before any upload: the workflow's error codes, and all files checked first."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.broker import OneManageBroker
from engine.services.samples import make_demo_psd
from engine.streams import INPUTS
from engine.submit import SubmitError, check_psd_bytes
from tests.support.harness import onemanage, stored_events

LIMIT = 1024**2


@pytest.mark.parametrize(
    ("data", "code", "says"),
    [
        (b"", "not_psd", "is empty"),
        (b"\x89PNG\r\n\x1a\n", "not_psd", "does not start with 8BPS"),
        (b"8BPS", "truncated", "ends inside its header"),
        (b"8BPS garbage after the signature", "corrupt", "version is 8295"),
        (b"8BPS" + b"\x00\x01" * (LIMIT // 2), "too_large", "the upload limit is 1,048,576"),
    ],
)
def test_a_refusal_names_the_workflows_code_and_what_is_wrong(
    data: bytes, code: str, says: str
) -> None:
    with pytest.raises(SubmitError) as refused:
        check_psd_bytes(data, "f.psd", LIMIT)
    assert refused.value.code == code and says in str(refused.value)
    assert str(refused.value).startswith(f"{code}: ")


def test_a_good_header_passes() -> None:
    check_psd_bytes(make_demo_psd(), "demo.psd", 64 * LIMIT)


@pytest.mark.slow
async def test_one_bad_file_of_several_submits_none(
    client: OneManageBroker, tmp_path: Path
) -> None:
    good, bad = tmp_path / "good.psd", tmp_path / "bad.psd"
    good.write_bytes(make_demo_psd(seed=7))
    bad.write_bytes(b"8BPS garbage")
    before = (await client.js.stream_info(INPUTS)).state.last_seq
    done = await asyncio.to_thread(onemanage, "submit", str(good), str(bad), str(tmp_path))
    assert done.returncode == 1, done.stdout
    assert "corrupt: bad.psd starts with 8BPS but its version is" in done.stderr, done.stderr
    assert f"not_a_file: {tmp_path}: a directory" in done.stderr
    assert "nothing submitted (2 of 3 file(s) refused)" in done.stderr
    assert done.stdout == ""  # no workflow id: nothing started
    assert (await client.js.stream_info(INPUTS)).state.last_seq == before  # nothing uploaded
    submitted = await stored_events(client, "events.psd.workflow.submitted")
    assert not [e for e in submitted if getattr(e, "filename", None) == "good.psd"]
