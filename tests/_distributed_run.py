"""One process of the two-process CPU runs in tests/test_distributed.py.

Started by ``torch.distributed.run --nproc_per_node 2`` with
``ACCELERATE_USE_CPU=1``; writes what the test checks to ``sys.argv[1]``.
"""

import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from sklearn_ben import BENClassifier
from sklearn_ben.datasets import make_plates
from sklearn_ben.distributed import DistributedGroupBatchSampler
from sklearn_ben.samplers import GroupBatchSampler

torch.set_num_threads(1)
out = Path(sys.argv[1])
accelerator = Accelerator(cpu=True)
rank = accelerator.process_index
data = make_plates(
    n_plates=4, n_samples_per_plate=14, image_size=8, n_channels=2, random_state=0
)
train = np.isin(data.groups, np.unique(data.groups)[:3])
result = {"rank": rank, "world": accelerator.num_processes, "train": train}

# The sampler in real processes: two epochs of this process's batches.
sampler = DistributedGroupBatchSampler(
    GroupBatchSampler(data.groups, 5, random_state=0),
    accelerator.num_processes,
    rank,
)
result["batches"] = [list(sampler) for _ in range(2)]

for norm in ("group", "controls"):
    clf = BENClassifier(
        module="cnn",
        norm=norm,
        batch_size=8,
        max_epochs=2,
        random_state=0,
        accelerator=accelerator,
    ).fit(
        data.X[train],
        data.y[train],
        groups=data.groups[train],
        controls=data.controls[train],
    )
    result[norm] = {
        "proba": clf.predict_proba(data.X, groups=data.groups, controls=data.controls),
        "state": {
            k: v.numpy().copy() for k, v in clf.net_.module_.state_dict().items()
        },
        "steps": len(clf.net_.history[-1, "batches"]),
    }
    if rank == 0:
        (out / f"clf_{norm}.pkl").write_bytes(pickle.dumps(clf))
(out / f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
accelerator.wait_for_everyone()
