"""Importance reordering (ddsm.models.reorder): free at width 1.0, the strongest channels first, training state kept
in step."""

import copy

import pytest
import torch

from ddsm.models.reorder import channel_orders, reorder_


def _forward(model, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 1, 16, 16, generator=g)
    t = torch.tensor([10, 400, 900])
    labels = torch.tensor([1, 5, 10])
    with torch.no_grad():
        return model(x, t, class_labels=labels, width=width).sample


def test_reorder_keeps_the_full_width_function_and_changes_the_narrow_ones(tiny_unet):
    before = {w: _forward(tiny_unet, w) for w in tiny_unet.width_choices}
    plan = reorder_(tiny_unet)
    assert any(not torch.equal(index, torch.arange(len(index))) for orders in plan.values() for _, index in orders)
    torch.testing.assert_close(_forward(tiny_unet, 1.0), before[1.0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(_forward(tiny_unet, 0.5), before[0.5], atol=1e-3)


def test_reorder_puts_whole_groups_and_heads_by_importance_first(tiny_unet):
    reorder_(tiny_unet)
    block = tiny_unet.down_blocks[1].resnets[0]
    cpg = block.norm2.channels_per_group
    groups = block.conv2.weight.abs().sum(dim=(0, 2, 3)).reshape(-1, cpg).sum(1)
    assert torch.all(groups[:-1] >= groups[1:])          # sorted, largest first
    attention = tiny_unet.down_blocks[1].attentions[0]
    heads = attention.to_out[0].weight.abs().sum(0).reshape(-1, attention.head_dim).sum(1)
    assert torch.all(heads[:-1] >= heads[1:])
    # a second pass finds nothing to move
    again = channel_orders(tiny_unet)
    assert all(torch.equal(index, torch.arange(len(index))) for orders in again.values() for _, index in orders)


def test_single_head_attention_is_sorted_channel_by_channel():
    from conftest import tiny_unet_kwargs
    from ddsm.models import SlimmableUNet

    torch.manual_seed(0)
    model = SlimmableUNet(**tiny_unet_kwargs(attention_head_dim=None)).eval()
    attention = model.down_blocks[1].attentions[0]
    assert not attention.head_dim
    q, k, v, out = (w.detach().clone() for w in (attention.to_q.weight, attention.to_k.weight,
                                                 attention.to_v.weight, attention.to_out[0].weight))
    reorder_(model, streams=False)
    new_q, new_k = attention.to_q.weight.detach(), attention.to_k.weight.detach()
    new_v, new_out = attention.to_v.weight.detach(), attention.to_out[0].weight.detach()
    qk = new_q.abs().sum(1) * new_k.abs().sum(1)
    assert torch.all(qk[:-1] >= qk[1:]) and torch.all(new_out.abs().sum(0)[:-1] >= new_out.abs().sum(0)[1:])
    moved = [int((q == row).all(1).nonzero()) for row in new_q]       # q and k rows move together,
    assert moved != list(range(len(moved))) and torch.equal(new_k, k[moved])
    moved = [int((v == row).all(1).nonzero()) for row in new_v]       # v rows with to_out's columns
    assert moved != list(range(len(moved))) and torch.equal(new_out, out[:, moved])


def test_reorder_moves_groups_whole(tiny_unet):
    block = tiny_unet.up_blocks[0].resnets[0]
    members = block.conv2.weight.detach().clone()
    reorder_(tiny_unet)
    cpg = block.norm2.channels_per_group
    old = members.reshape(members.shape[0], -1, cpg, *members.shape[2:])
    new = block.conv2.weight.detach().reshape(old.shape)
    # every new group is one of the old groups, channels in their old order
    for g in range(new.shape[1]):
        assert any(torch.equal(new[:, g], old[:, h]) for h in range(old.shape[1]))


def test_reorder_permutes_the_moving_average_and_adam_moments_alike(tiny_unet):
    model = tiny_unet.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _forward_train(model).backward()
    optimizer.step()
    moments = {name: {k: v.clone() for k, v in optimizer.state[p].items()} for name, p in model.named_parameters()}
    shadow = [p.detach().clone() * 2 for p in model.parameters()]   # a stand-in EMA: twice the weights

    plan = reorder_(model, mirrors=[shadow], optimizer=optimizer)
    moved = 0
    for (name, p), s in zip(model.named_parameters(), shadow):
        torch.testing.assert_close(s, p.detach() * 2, msg=name)       # the mirror moved with its parameter
        for key in ("exp_avg", "exp_avg_sq"):                         # so did Adam's moments, index for index
            expected = moments[name][key]
            for dim, index in plan.get(name, []):
                expected = expected.index_select(dim, index)
            assert torch.equal(optimizer.state[p][key], expected), (name, key)
            moved += not torch.equal(expected, moments[name][key])
        assert torch.equal(optimizer.state[p]["step"], moments[name]["step"])
    assert moved > 0


def test_reorder_rejects_a_mirror_of_another_model(tiny_unet):
    with pytest.raises(ValueError, match="a mirror holds 1 tensors"):
        reorder_(tiny_unet, mirrors=[[torch.zeros(1)]])


def _forward_train(model):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 16, 16, generator=g)
    out = model(x, torch.tensor([1, 200, 500, 999]), class_labels=torch.tensor([0, 1, 2, 3]), width=1.0).sample
    return out.square().mean()


@pytest.mark.parametrize("overrides", [
    dict(),                                                  # GroupNorm groups straddle some skip concatenations
    dict(norm_channels_per_group=4, norm_num_groups=None),   # fixed channels per group: every stream aligned
    dict(num_classes=None, attention_head_dim=None),          # unconditional, one attention head
    dict(layers_per_block=2, block_out_channels=(16, 32, 64), width_choices=(0.5, 1.0)),
])
def test_streams_are_permuted_without_changing_the_full_width(overrides):
    from conftest import tiny_unet_kwargs
    from ddsm.models import SlimmableUNet
    from ddsm.models.reorder import unet_streams

    torch.manual_seed(0)
    model = SlimmableUNet(**tiny_unet_kwargs(**overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    streams = unet_streams(model)
    params = dict(model.named_parameters())
    for stream in streams:  # every slot is the stream's size (or holds it at its offset, for a concatenation)
        for name, dim, offset, _ in stream.slots:
            assert params[name].shape[dim] >= offset + stream.size, name
    labels = None if model.config.num_classes is None else torch.tensor([1, 2, 3])

    def run(m, width):
        x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            return m(x, torch.tensor([3, 500, 990]), class_labels=labels, width=width).sample

    before = run(model, 1.0)
    plan = reorder_(model, streams=False)
    hidden_only = {n: len(o) for n, o in plan.items()}
    moved = reorder_(model)   # the hidden parts are sorted already: what moves now are the streams
    assert any(not torch.equal(i, torch.arange(len(i))) for n, o in moved.items() for _, i in o
               if n not in hidden_only or len(o) > hidden_only[n])
    torch.testing.assert_close(run(model, 1.0), before, atol=1e-5, rtol=1e-4)


def test_a_stream_whose_groups_straddle_a_concatenation_stays_in_place(tiny_unet):
    from ddsm.models.reorder import unet_streams

    # tiny: up block 0's first ResNet reads cat(32 hidden, 32 skip) but later cat(32, 16): 12 channels per group
    stuck = [s for s in unet_streams(tiny_unet) if s.unit() is None]
    assert stuck and all(any(offset % c for c, offset in s.groups) or s.size % max(c for c, _ in s.groups)
                         for s in stuck)
