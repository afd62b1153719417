"""Per-edge candidate-op sets of the RobustDARTS reduced DARTS search spaces S1-S4.

Source: Zela et al., "Understanding and Robustifying Differentiable Architecture
Search" (ICLR 2020), repository ``automl/RobustDARTS``, file ``src/spaces.py``
(``primitives_1`` .. ``primitives_4``, exposed through ``spaces_dict``).  Two
stored versions of that file were read: commit
3a87007c29464fb5f8bffbdd8952c99889c742d1 (keys ``'s1'`` .. ``'s5'``, ``s5`` being
the full DARTS space) and commit 07f54ba413936b84d9ff3e014c9c1a219da72585 (keys
``'S1'`` .. ``'S4'``).  The S1-S4 op lists are identical in both.  They are also
identical, edge for edge and in op order, to ``sota/cnn/spaces.py`` of
``ruocwang/darts-pt`` (commit c31e3766611ace330416b5dbbc89cbdc53f01972), which
carries the same S1-S4 (plus an ``s5`` full DARTS space without ``none``).

Edge order.  Each list has 14 entries, one per cell edge in DARTS order:
intermediate node i (0..3) takes inputs 0..i+1 (0 and 1 are the two cell inputs,
2.. the earlier intermediate nodes); edges are enumerated node by node, input by
input, so edge index -> (node, input) is 0:(0,0) 1:(0,1) 2:(1,0) 3:(1,1) 4:(1,2)
5:(2,0) 6:(2,1) 7:(2,2) 8:(2,3) 9:(3,0) 10:(3,1) 11:(3,2) 12:(3,3) 13:(3,4).
This is the order the source uses: in ``src/search/model_search.py`` (commits
07f54ba4 and 12dd5865) and in darts-pt ``sota/cnn/model_search.py`` the cell
builds its ``_ops`` with a running ``edge_index`` over ``for i in range(steps):
for j in range(2 + i)`` and takes ``primitives[edge_index]`` for that edge; the
forward pass and the alpha rows (k = 14 rows) use the same offsets.  Within an
edge, the op order of the list is the order of the ``MixedOp`` candidates and
hence of the alpha columns; the "normal" lists belong to normal cells and the
"reduce" lists (source key ``primitives_reduct``) to reduction cells.  All edges
of a space have the same number of candidates (2 for S1, S2, S4; 3 for S3),
since the source sizes the alpha tensors from the first normal edge.

The ``noise`` op (S4).  In ``src/operations.py`` (RobustDARTS commit 07f54ba4;
darts-pt ``sota/cnn/operations.py`` is the same) ``noise`` is built with mean
0.0 and standard deviation 1.0 regardless of channel count or ``affine``.  Its
forward pass ignores the input's values: it returns a freshly sampled tensor of
i.i.d. Gaussian samples N(0, 1) whose shape, dtype and device are those of the
input (not the input plus noise).  For stride 2 (reduction-cell edges from the
two cell inputs) the shape is taken from the input subsampled by keeping every
second row and column (``x[:, :, ::2, ::2]``, i.e. spatial size ceil(H/2) x
ceil(W/2)); no convolution, pooling or BatchNorm is involved, and ``MixedOp``
adds no BatchNorm to it (only ``*pool*`` ops get one).  The sample is drawn
fresh on every call, in training and in eval mode alike (there is no
``self.training`` check), and is created outside the autograd graph, so no
gradient flows back to the input through it; its architecture weight still
receives a gradient through the weighted sum of the mixed op.
"""

ROBUST_DARTS_OP_SETS: dict[str, dict[str, list[list[str]]]] = {
    "s1": {
        "normal": [
            ["skip_connect", "dil_conv_3x3"],  # 0: node 0 <- input 0
            ["skip_connect", "dil_conv_5x5"],  # 1: node 0 <- input 1
            ["skip_connect", "dil_conv_5x5"],  # 2: node 1 <- input 0
            ["skip_connect", "sep_conv_3x3"],  # 3: node 1 <- input 1
            ["skip_connect", "dil_conv_3x3"],  # 4: node 1 <- node 0
            ["max_pool_3x3", "skip_connect"],  # 5: node 2 <- input 0
            ["skip_connect", "sep_conv_3x3"],  # 6: node 2 <- input 1
            ["skip_connect", "sep_conv_3x3"],  # 7: node 2 <- node 0
            ["skip_connect", "dil_conv_3x3"],  # 8: node 2 <- node 1
            ["skip_connect", "sep_conv_3x3"],  # 9: node 3 <- input 0
            ["max_pool_3x3", "skip_connect"],  # 10: node 3 <- input 1
            ["skip_connect", "dil_conv_3x3"],  # 11: node 3 <- node 0
            ["dil_conv_3x3", "dil_conv_5x5"],  # 12: node 3 <- node 1
            ["dil_conv_3x3", "dil_conv_5x5"],  # 13: node 3 <- node 2
        ],
        "reduce": [
            ["max_pool_3x3", "avg_pool_3x3"],  # 0: node 0 <- input 0
            ["max_pool_3x3", "dil_conv_3x3"],  # 1: node 0 <- input 1
            ["max_pool_3x3", "avg_pool_3x3"],  # 2: node 1 <- input 0
            ["max_pool_3x3", "avg_pool_3x3"],  # 3: node 1 <- input 1
            ["skip_connect", "dil_conv_5x5"],  # 4: node 1 <- node 0
            ["max_pool_3x3", "avg_pool_3x3"],  # 5: node 2 <- input 0
            ["max_pool_3x3", "sep_conv_3x3"],  # 6: node 2 <- input 1
            ["skip_connect", "dil_conv_3x3"],  # 7: node 2 <- node 0
            ["skip_connect", "dil_conv_5x5"],  # 8: node 2 <- node 1
            ["max_pool_3x3", "avg_pool_3x3"],  # 9: node 3 <- input 0
            ["max_pool_3x3", "avg_pool_3x3"],  # 10: node 3 <- input 1
            ["skip_connect", "dil_conv_5x5"],  # 11: node 3 <- node 0
            ["skip_connect", "dil_conv_5x5"],  # 12: node 3 <- node 1
            ["skip_connect", "dil_conv_5x5"],  # 13: node 3 <- node 2
        ],
    },
    # S2-S4: the same candidates, in the same order, on all 14 edges of both
    # cell types (separate inner lists, so mutating one edge touches no other).
    "s2": {
        "normal": [["skip_connect", "sep_conv_3x3"] for _ in range(14)],
        "reduce": [["skip_connect", "sep_conv_3x3"] for _ in range(14)],
    },
    "s3": {
        "normal": [["none", "skip_connect", "sep_conv_3x3"] for _ in range(14)],
        "reduce": [["none", "skip_connect", "sep_conv_3x3"] for _ in range(14)],
    },
    "s4": {
        "normal": [["noise", "sep_conv_3x3"] for _ in range(14)],
        "reduce": [["noise", "sep_conv_3x3"] for _ in range(14)],
    },
}
