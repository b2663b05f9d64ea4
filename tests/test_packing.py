"""Packing the real steps of padded batches (cormult_lib.nn.packing): the rows it keeps and
the round trip. That the models compute the same function packed is in test_equivalence."""

import torch

from cormult_lib.nn.packing import PackedRows, pack, padded_layout, unpack
from cormult_lib.tutorial.timing import packed_and_padded


def test_rows_are_the_steps_real_in_any_member_and_unpack_restores_them():
    mask = torch.tensor(
        [[[True, True, False], [False, True, False]], [[True, False, False], [False, True, True]]]
    )  # (count 2, batch 2, time 3)
    rows = PackedRows.of(mask)
    assert rows.index.tolist() == [0, 1, 4, 5] and rows.n_rows == 4
    x = torch.arange(2 * 2 * 3 * 2, dtype=torch.float32).view(2, 2, 3, 2)
    packed = rows.pack(x)
    assert packed.shape == (2, 4, 2)
    torch.testing.assert_close(packed[1, 2], x[1, 1, 1])
    restored = rows.unpack(packed)
    kept = mask.any(dim=0)
    torch.testing.assert_close(restored[:, kept], x[:, kept])
    assert (restored[:, ~kept] == 0).all(), "steps not kept come back as zeros"


def test_no_packing_when_every_step_is_real_or_the_padded_layout_is_asked_for():
    x = torch.randn(2, 3, 4)
    assert PackedRows.of(torch.ones(2, 3, dtype=torch.bool)) is None
    assert pack(x, None) is x and unpack(x, None) is x
    mask = torch.tensor([[True, False, False], [True, True, True]])
    with padded_layout():
        assert PackedRows.of(mask) is None
    assert PackedRows.of(mask) is not None, "the switch is restored after the block"


def test_gradients_flow_to_the_kept_rows_only():
    mask = torch.tensor([[True, True, False]])
    rows = PackedRows.of(mask)
    x = torch.randn(1, 3, 2, requires_grad=True)
    rows.unpack(rows.pack(x) * 2).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([[[2.0, 2.0], [2.0, 2.0], [0.0, 0.0]]]))


def test_packed_and_padded_runs_take_turns_with_packing_on_then_off():
    mask = torch.tensor([[True, False]])
    runs = packed_and_padded(lambda: PackedRows.of(mask) is not None, rounds=2)
    assert runs == {"packed": [True, True], "padded": [False, False]}
