"""Kernel drop fields (live records only) in JSON Lines, EVE and Zeek output; offline
records have none."""

from __future__ import annotations

import io
import json

import numpy as np

from flowscope.output.common import drop_reason_names
from flowscope.output.eve import EveWriter
from flowscope.output.jsonl import JsonlWriter
from flowscope.output.zeek import ZeekJsonWriter, ZeekTsvWriter
from naive_jsonl import NaiveJsonlWriter
from test_dns import ended, eth, ipv4, query_response, udp


def _with_drops(drops=(2, 1), reason=3):
    recs, _t = ended([(1, eth(ipv4(udp(40000, 9091, b"x"), 17))),
                      (2, eth(ipv4(udp(40000, 9091, b"y"), 17)))])
    recs["drops"][0] = drops
    recs["drop_reason"][0] = reason
    return recs


def test_offline_records_have_no_drops():
    recs, _t = ended(query_response())
    assert not recs["drops"].any() and recs["drop_reason"][0] == 0
    out = io.StringIO()
    JsonlWriter(out).write_records(recs)
    assert "drops" not in out.getvalue() and "drop_reason" not in out.getvalue()


def test_jsonl_drop_fields_and_twin():
    recs = _with_drops()
    out = io.StringIO()
    w = JsonlWriter(out)
    w.write_records(recs)
    w.flush()
    obj = json.loads(out.getvalue())
    name = drop_reason_names().get(3, "3")
    assert (obj["init_drops"], obj["resp_drops"], obj["drop_reason"]) == (2, 1, name)
    naive = io.StringIO()
    NaiveJsonlWriter(naive).write_records(recs)
    assert out.getvalue() == naive.getvalue()


def test_jsonl_unknown_reason_prints_its_number():
    recs = _with_drops(reason=60000)
    out = io.StringIO()
    JsonlWriter(out).write_records(recs)
    assert json.loads(out.getvalue())["drop_reason"] == "60000"


def test_eve_and_zeek_drop_fields():
    recs = _with_drops((0, 4))
    name = drop_reason_names().get(3, "3")
    out = io.StringIO()
    EveWriter(out).write_records(recs)
    assert json.loads(out.getvalue())["flowscope"]["drops"] == {
        "toserver": 0, "toclient": 4, "reason": name}
    z = io.StringIO()
    ZeekJsonWriter(z).write_records(recs)
    obj = json.loads(z.getvalue())
    assert (obj["orig_drops"], obj["resp_drops"], obj["drop_reason"]) == (0, 4, name)
    tsv = io.StringIO()
    ZeekTsvWriter(tsv).write_records(recs)
    values = [x for x in tsv.getvalue().splitlines() if not x.startswith("#")][0].split("\t")
    assert values[-3:] == ["0", "4", name]
    assert np.all(recs["dns"] == 0)
