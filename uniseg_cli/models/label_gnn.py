r"""The label GNN (METHOD §4, §12.3): text features of dataset labels → unified prototypes.

Graph. Nodes are the L dataset labels (all datasets, in pipeline order, labels by id) followed by
N unified nodes. Edges join label nodes and unified nodes only. With the learnable adjacency
logits :math:`A \in \mathbb{R}^{L\times N}` split into dataset blocks :math:`A_d` (n_d × N):

.. math::
    S_d = \mathrm{softmax}_{\text{over } c}(A_d / T), \qquad S = [S_1; \dots; S_K] \in [0,1]^{L\times N}

so inside each dataset every unified node's column sums to 1 (T = 0.07). The full adjacency is
:math:`\mathcal{A} = \begin{pmatrix} 0 & S \\ S^\top & 0 \end{pmatrix}` and messages use the row
normalised :math:`\hat{\mathcal{A}} = D^{-1}\mathcal{A}` (a unified node's row sums to K, the number
of datasets; a label node's to :math:`\sum_u S_{cu}`).

Layers (GraphSAGE with a concatenated self term, paper Eq. 3):

.. math::
    x &= [\,f_t(l_c) + e_{d(c)}\,;\; U\,] \qquad (e: \text{optional dataset embedding; } U: \text{learnable}) \\
    h^{(0)} &= \mathrm{dropout}(\mathrm{ReLU}(W_0 x + b_0)) \\
    h^{(k)} &= \tanh\big(W^{(k)}_{self}\, \tilde h^{(k-1)}
               + W^{(k)}_{nb}\, \hat{\mathcal{A}}\, \tilde h^{(k-1)} + b^{(k)}\big),
        \quad \tilde h^{(k-1)} = \mathrm{dropout}(h^{(k-1)}) \text{ for } k \ge 2 \\
    \text{out} &= W_{out} h^{(K_l)} + b_{out}, \qquad P = \text{out}[L:] \in \mathbb{R}^{N\times D}

The GraphSAGE layers are torch-geometric's ``DenseSAGEConv``: given :math:`\hat{\mathcal{A}}`, whose
non-zero rows already sum to 1, its internal mean (division by ``clamp(rowsum, 1)``) is the identity,
so it computes exactly :math:`W_{nb}\hat{\mathcal{A}}h + W_{self}h + b`. The graph is dense and tiny
(L + N ≈ 700 nodes), so full-batch dense message passing is the right tool (a NeighborLoader would
sample away the learnable soft edges).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import DenseSAGEConv

from uniseg_cli.errors import UsageError


@dataclass(frozen=True)
class GNNConfig:
    """Sizes and options of the :class:`LabelGNN` (the input width comes from the text features).

    Args:
        hidden: width of ``linear_before`` and the GraphSAGE layers (2048).
        out_dim: D, the prototype width; must equal the segmenter's ``embed_dim`` (512).
        layers: number of GraphSAGE layers (3).
        dropout: dropout rate after ``linear_before`` and before layers ≥ 2 (0.5).
        temperature: T of the adjacency column softmax (0.07).
        dataset_embedding: add a learnable per-dataset vector to the label features (paper Eq. 1;
            off in the reference's 7-dataset configs).
    """

    hidden: int = 2048
    out_dim: int = 512
    layers: int = 3
    dropout: float = 0.5
    temperature: float = 0.07
    dataset_embedding: bool = False

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.out_dim < 1 or self.layers < 1:
            raise UsageError(f"GNN config: hidden, out_dim and layers must be >= 1, got {self.hidden}, "
                             f"{self.out_dim}, {self.layers}", hint="fix the gnn section of the params")
        if not 0.0 <= self.dropout < 1.0 or not self.temperature > 0:
            raise UsageError(f"GNN config: need 0 <= dropout < 1 and temperature > 0, got {self.dropout}, "
                             f"{self.temperature}", hint="fix the gnn section of the params")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


GNN_PRESETS: dict[str, GNNConfig] = {
    "paper": GNNConfig(),
    "tiny": GNNConfig(hidden=32, out_dim=16, dropout=0.1),
}


class GNNOutput(NamedTuple):
    """What one forward pass gives.

    Attributes:
        prototypes: unified prototypes P (N, D), unnormalised.
        soft: soft adjacency S_d (n_d, N) per dataset (differentiable w.r.t. the adjacency).
        label_embeddings: output rows of the label nodes (L, D).
    """

    prototypes: torch.Tensor
    soft: list[torch.Tensor]
    label_embeddings: torch.Tensor


def _mapping_matrix(init_mapping, sizes: Sequence[int], num_nodes: int) -> torch.Tensor:
    if isinstance(init_mapping, (list, tuple)):
        if len(init_mapping) != len(sizes):
            raise UsageError(f"LabelGNN: got {len(init_mapping)} initial mappings for {len(sizes)} datasets",
                             hint="pass one (n_d, N) mapping per dataset, in order")
        parts = [torch.as_tensor(np.asarray(m) if not torch.is_tensor(m) else m.detach()).float()
                 for m in init_mapping]
        for d, (p, n) in enumerate(zip(parts, sizes)):
            if tuple(p.shape) != (n, num_nodes):
                raise UsageError(f"LabelGNN: initial mapping of dataset #{d} has shape {tuple(p.shape)}, "
                                 f"expected ({n}, {num_nodes})", hint="the mapping must match labels and nodes")
        return torch.cat(parts, dim=0)
    m = torch.as_tensor(np.asarray(init_mapping) if not torch.is_tensor(init_mapping) else init_mapping.detach())
    m = m.float()
    if tuple(m.shape) != (sum(sizes), num_nodes):
        raise UsageError(f"LabelGNN: initial mapping has shape {tuple(m.shape)}, expected ({sum(sizes)}, {num_nodes})",
                         hint="the mapping must match labels and nodes")
    return m


class LabelGNN(nn.Module):
    """Learnable-topology bipartite GraphSAGE over dataset labels and unified nodes (module doc).

    Args:
        config: :class:`GNNConfig`.
        label_features: text features of all dataset labels (L, F), datasets in order.
        dataset_sizes: n_d per dataset (sums to L).
        num_nodes: N.
        init_mapping: boolean mapping (L, N) or list of (n_d, N) to initialise the adjacency logits
            from (the logits are the 0/1 matrix, so with T = 0.07 a mapped node's column puts
            ≥ 1 − (n_d − 1)e^{−1/T} on its label and an unmapped column is uniform); None = U(0, 1).

    Shapes:
        - label_features buffer: (L, F); unified_features parameter U: (N, F), trunc_normal(0.02).
        - adjacency parameter: (L, N) logits.
        - forward() → :class:`GNNOutput` with prototypes (N, out_dim), soft [(n_d, N)], label
          embeddings (L, out_dim).
    """

    def __init__(self, config: GNNConfig, label_features: torch.Tensor, dataset_sizes: Sequence[int],
                 num_nodes: int, init_mapping=None):
        super().__init__()
        feats = torch.as_tensor(label_features).float()
        sizes = [int(n) for n in dataset_sizes]
        if feats.ndim != 2 or feats.shape[0] != sum(sizes) or any(n < 1 for n in sizes):
            raise UsageError(f"LabelGNN: label features of shape {tuple(feats.shape)} do not match dataset sizes "
                             f"{sizes} (sum {sum(sizes)})", hint="features must hold one row per dataset label")
        self.config = config
        self.dataset_sizes = sizes
        self.num_nodes = int(num_nodes)
        in_dim = feats.shape[1]
        self.register_buffer("label_features", feats)
        self.register_buffer("label_dataset", torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)),
                             persistent=False)
        self.unified_features = nn.Parameter(nn.init.trunc_normal_(torch.empty(num_nodes, in_dim), std=0.02))
        self.dataset_embedding = (nn.Parameter(nn.init.trunc_normal_(torch.empty(len(sizes), in_dim), std=0.02))
                                  if config.dataset_embedding else None)
        self.adjacency = nn.Parameter(torch.rand(sum(sizes), num_nodes))
        if init_mapping is not None:
            self.set_adjacency(init_mapping)
        self.linear_before = nn.Linear(in_dim, config.hidden)
        self.convs = nn.ModuleList([DenseSAGEConv(config.hidden, config.hidden) for _ in range(config.layers)])
        bound = 1.0 / math.sqrt(config.hidden)  # the reference's GraphSAGE init
        for conv in self.convs:
            for p in conv.parameters():
                nn.init.uniform_(p, -bound, bound)
        self.linear_out = nn.Linear(config.hidden, config.out_dim)

    @torch.no_grad()
    def set_adjacency(self, mapping) -> None:
        """Reset the adjacency logits to a 0/1 mapping ((L, N) or a list of (n_d, N))."""
        self.adjacency.copy_(_mapping_matrix(mapping, self.dataset_sizes, self.num_nodes))

    def freeze_adjacency(self, frozen: bool = True) -> None:
        """Stop (or resume) training the adjacency (GNN sub-stage 2 of METHOD §1)."""
        self.adjacency.requires_grad_(not frozen)

    def soft_adjacency(self) -> list[torch.Tensor]:
        """S_d = softmax(A_d / T, dim=0) per dataset, each (n_d, N); columns sum to 1."""
        blocks = torch.split(self.adjacency, self.dataset_sizes, dim=0)
        # float32 at least (also under autocast): 1/T = 14 makes half-precision softmax coarse
        return [torch.softmax((b if b.dtype == torch.float64 else b.float()) / self.config.temperature, dim=0)
                for b in blocks]

    @staticmethod
    def normalised_graph(soft: torch.Tensor) -> torch.Tensor:
        """Â = D⁻¹[[0, S], [Sᵀ, 0]] for S (L, N); returns (L + N, L + N); zero rows stay zero."""
        L, N = soft.shape
        row = soft.sum(dim=1, keepdim=True)
        col = soft.sum(dim=0, keepdim=True).t()
        top = torch.cat([soft.new_zeros(L, L), soft / torch.where(row > 0, row, torch.ones_like(row))], dim=1)
        bottom = torch.cat([soft.t() / torch.where(col > 0, col, torch.ones_like(col)), soft.new_zeros(N, N)], dim=1)
        return torch.cat([top, bottom], dim=0)

    def node_inputs(self) -> torch.Tensor:
        """x = [label features (+ dataset embedding); U], (L + N, F)."""
        labels = self.label_features
        if self.dataset_embedding is not None:
            labels = labels + self.dataset_embedding[self.label_dataset]
        return torch.cat([labels, self.unified_features], dim=0)

    def forward(self) -> GNNOutput:
        soft = self.soft_adjacency()
        adj = self.normalised_graph(torch.cat(soft, dim=0))
        p = self.config.dropout
        h = F.dropout(F.relu(self.linear_before(self.node_inputs())), p, self.training)
        for k, conv in enumerate(self.convs):
            if k > 0:
                h = F.dropout(h, p, self.training)
            h = torch.tanh(conv(h.unsqueeze(0), adj.to(h.dtype)).squeeze(0))
        out = self.linear_out(h)
        L = self.label_features.shape[0]
        return GNNOutput(out[L:], soft, out[:L])
