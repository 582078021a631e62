"""The record's rows are typed: a misspelt field fails where it is written, a row read back with
a key this version does not know is refused, and the record's JSON keeps the keys it had."""
import pytest

from fdapt_core.fl.rows import ClientRow, RoundRow, RowError
from fdapt_core.runner import run


def a_row(**kw) -> ClientRow:
    return ClientRow(client=0, steps=2, samples=4, tokens=64, loss=1.5, wall_s=0.1, phases={},
                     tokens_per_s=640.0, samples_per_s=40.0, train_flops=None, step_flops=None,
                     analytic_flops=10, trainable_params=5, frozen_params=0, frozen_blocks=[],
                     frozen_embeddings=False, bytes_down=8, bytes_up=8, **kw)


def test_a_misspelt_field_is_an_error_where_it_is_written():
    row = a_row()
    with pytest.raises(AttributeError):
        row.update_nrom = 1.0  # with a dict this was a silent new key, and a zero where read
    with pytest.raises(AttributeError):
        RoundRow(0, [row], 1.0, 0.0).evall_loss = 2.0


def test_a_row_read_back_with_an_unknown_or_missing_key_is_refused():
    d = a_row().to_dict()
    assert ClientRow.from_dict(d) == a_row()
    with pytest.raises(RowError, match=r"unknown field\(s\) \['updat_norm'\]"):
        ClientRow.from_dict({**d, "updat_norm": 1.0})
    del d["tokens"]
    with pytest.raises(RowError, match="incomplete"):
        ClientRow.from_dict(d)


def test_optional_fields_are_left_out_of_the_record_unless_set():
    d = a_row().to_dict()
    assert not {"rank", "group", "error", "flower_bytes_up"} & set(d)
    assert a_row(rank=1, group=0).to_dict()["rank"] == 1
    central = RoundRow(0, [a_row()], 1.0, 0.0).to_dict()
    assert "accepted" not in central and "aggregated" not in central  # a central round


def test_the_records_rows_keep_their_keys(tiny):
    rec = run(tiny("fl.rounds=1", "fl.clients=2", "faults.dropout=0.5", "seed=3"), "fdapt")
    rnd = rec["rounds"][0]
    assert {"round", "clients", "train_wall_s", "aggregate_wall_s", "accepted", "aggregated",
            "dropped", "rejected", "eval_loss", "eval_ppl", "wall_s", "checkpoint_wall_s",
            "local_train_s", "torch_threads", "mem_mb"} <= set(rnd)
    for c in rnd["clients"]:
        assert set(c) <= {f for f in ClientRow.__dataclass_fields__}
        assert {"client", "steps", "tokens", "weight", "dropped", "rejected", "fault",
                "bytes_up", "bytes_down", "train_flops"} <= set(c)
